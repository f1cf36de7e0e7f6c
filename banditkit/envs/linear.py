"""A linear contextual bandit: unit-norm contexts, one parameter vector per arm, Gaussian noise."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from banditkit.envs.base import BaseEnvironment, Seed, check_array
from banditkit.validation import FloatArray, check_positive_int, check_real

__all__ = ["LinearContextualEnv", "random_unit_vectors"]


def random_unit_vectors(rng: np.random.Generator, n: int, dim: int) -> FloatArray:
    """``n`` directions drawn uniformly on the unit sphere in ``dim`` dimensions, as rows."""
    x = rng.standard_normal((n, dim))
    norms: FloatArray = np.linalg.norm(x, axis=1, keepdims=True)
    out: FloatArray = x / norms
    return out


class LinearContextualEnv(BaseEnvironment):
    """Contexts ``x`` uniform on the unit sphere; arm ``k`` pays ``x @ thetas[k]`` plus N(0, noise^2).

    The ``thetas`` (unit-norm rows, drawn from ``seed`` unless given) fix the problem; expected
    rewards lie in [-1, 1].

    >>> env = LinearContextualEnv(n_arms=3, dim=4, noise=0.1, seed=0)
    >>> x = env.context()
    >>> x.shape, round(float(np.linalg.norm(x)), 6)
    ((4,), 1.0)
    >>> bool(np.allclose(env.expected_rewards(), env.thetas @ x))
    True
    >>> env.step()
    >>> bool(np.array_equal(env.context(), x))  # a new context each round
    False
    """

    def __init__(self, n_arms: int, dim: int, noise: float = 0.1, seed: Seed = None, *,
                 thetas: ArrayLike | None = None) -> None:
        dim = check_positive_int("dim", dim)
        super().__init__(n_arms, dim=dim, seed=seed)
        self._context_dim = dim
        self.noise = check_real("noise", noise, low=0.0)
        if thetas is None:
            self._base_thetas = random_unit_vectors(self._problem_rng, self._n_arms, dim)
        else:
            self._base_thetas = check_array("thetas", thetas, (self._n_arms, dim))
        self._thetas = self._base_thetas.copy()
        self._x: FloatArray = np.zeros(dim)
        self._reset()

    @property
    def thetas(self) -> FloatArray:
        """The arms' parameter vectors in the current round, shape ``(n_arms, dim)``."""
        return self._thetas.copy()

    def context(self) -> FloatArray:
        """The current context, a unit vector of length ``dim``."""
        return self._x.copy()

    def expected_rewards(self) -> FloatArray:
        out: FloatArray = self._thetas @ self._x
        return out

    def _reset(self) -> None:
        self._update_thetas()
        self._x = random_unit_vectors(self._context_rng, 1, self._context_dim)[0]

    def _advance(self) -> None:
        self._update_thetas()
        self._x = random_unit_vectors(self._context_rng, 1, self._context_dim)[0]

    def _update_thetas(self) -> None:
        """Set ``self._thetas`` for round ``self._t`` (fixed here; drifting subclasses move them)."""

    def _pull(self, arm: int) -> float:
        mean = float(self._thetas[arm] @ self._x)
        return mean + self.noise * float(self._reward_rng.standard_normal())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_arms={self._n_arms}, dim={self._context_dim}, noise={self.noise})"
