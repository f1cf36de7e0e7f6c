"""A non-stationary linear contextual bandit whose arm parameters rotate smoothly or switch abruptly."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from banditkit.envs.base import Seed
from banditkit.envs.linear import LinearContextualEnv, random_unit_vectors
from banditkit.validation import FloatArray, check_positive_int

__all__ = ["DriftingEnv"]

_DRIFTS = ("rotate", "switch")
_DEFAULT_PERIODS = {"rotate": 5000, "switch": 2000}


class DriftingEnv(LinearContextualEnv):
    """``LinearContextualEnv`` whose ``thetas`` move with time, on a schedule fixed by ``seed``.

    - ``drift="rotate"``: each arm's parameter turns at constant speed in its own random plane,
      ``cos(2 pi t / period) u_k + sin(2 pi t / period) v_k``, one full turn every ``period`` steps
      (default 5,000).
    - ``drift="switch"``: every ``period`` steps (default 2,000) the arms' parameters shift by one
      arm (arm ``k`` takes arm ``k + 1``'s), so the best arm for a context changes abruptly.

    Policies that forget old data (a discount factor) track it; stationary ones average the past.

    >>> env = DriftingEnv(n_arms=3, dim=4, drift="switch", period=10, seed=0)
    >>> before = env.thetas
    >>> for _ in range(10):
    ...     env.step()
    >>> bool(np.allclose(env.thetas, np.roll(before, -1, axis=0)))
    True
    >>> env = DriftingEnv(n_arms=3, dim=4, drift="rotate", period=100, seed=0)
    >>> start = env.thetas
    >>> for _ in range(50):  # half a turn: every parameter points the other way
    ...     env.step()
    >>> bool(np.allclose(env.thetas, -start))
    True
    """

    def __init__(self, n_arms: int, dim: int, noise: float = 0.1, seed: Seed = None, *,
                 drift: str = "rotate", period: int | None = None, thetas: ArrayLike | None = None) -> None:
        if drift not in _DRIFTS:
            raise ValueError(f"drift must be one of {', '.join(_DRIFTS)}, got {drift!r}")
        if drift == "rotate" and check_positive_int("dim", dim) < 2:
            raise ValueError(f"drift='rotate' needs dim >= 2 (a plane to turn in), got dim={dim}")
        self.drift = drift
        if period is None:
            period = _DEFAULT_PERIODS[drift]
        self.period = check_positive_int("period", period)
        self._planes: FloatArray | None = None
        super().__init__(n_arms, dim, noise, seed, thetas=thetas)

    def _update_thetas(self) -> None:
        if self.drift == "switch":
            shift = (self._t // self.period) % self._n_arms
            self._thetas = np.roll(self._base_thetas, -shift, axis=0)
            return
        if self._planes is None:
            self._planes = self._rotation_planes()
        angle = 2.0 * math.pi * (self._t % self.period) / self.period
        u, v = self._planes[:, 0], self._planes[:, 1]
        self._thetas = math.cos(angle) * u + math.sin(angle) * v

    def _rotation_planes(self) -> FloatArray:
        """Per arm, an orthonormal pair (u, v) with u along the arm's initial parameter (norm kept)."""
        base = self._base_thetas
        planes = np.empty((self._n_arms, 2, base.shape[1]))
        for k, theta in enumerate(base):
            norm = float(np.linalg.norm(theta))
            u = theta / norm if norm > 0 else random_unit_vectors(self._problem_rng, 1, base.shape[1])[0]
            w = random_unit_vectors(self._problem_rng, 1, base.shape[1])[0]
            w = w - (w @ u) * u
            v = w / np.linalg.norm(w)
            planes[k, 0], planes[k, 1] = norm * u, norm * v
        return planes

    def __repr__(self) -> str:
        return (f"DriftingEnv(n_arms={self._n_arms}, dim={self._context_dim}, noise={self.noise}, "
                f"drift={self.drift!r}, period={self.period})")
