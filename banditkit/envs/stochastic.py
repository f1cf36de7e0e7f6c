"""Context-free stochastic arms: Bernoulli and Gaussian rewards with fixed means."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from banditkit.envs.base import BaseEnvironment, Seed, check_means
from banditkit.validation import FloatArray

__all__ = ["BernoulliEnv", "GaussianEnv"]


class BernoulliEnv(BaseEnvironment):
    """Arm ``k`` pays 1 with probability ``means[k]`` and 0 otherwise.

    >>> env = BernoulliEnv([0.2, 0.5, 0.8], seed=0)
    >>> env.n_arms, env.dim, env.context()
    (3, None, None)
    >>> env.expected_rewards()
    array([0.2, 0.5, 0.8])
    >>> rewards = [env.pull(2) for _ in range(1000)]
    >>> set(rewards), round(sum(rewards) / 1000, 1)
    ({0.0, 1.0}, 0.8)
    """

    def __init__(self, means: ArrayLike, *, seed: Seed = None) -> None:
        m = check_means(means, unit_interval=True)
        super().__init__(m.shape[0], seed=seed)
        self._means = m
        self._reset()

    @property
    def means(self) -> FloatArray:
        """Each arm's success probability."""
        return self._means.copy()

    def expected_rewards(self) -> FloatArray:
        return self._means.copy()

    def _reset(self) -> None:
        pass

    def _advance(self) -> None:
        pass

    def _pull(self, arm: int) -> float:
        return 1.0 if self._reward_rng.random() < self._means[arm] else 0.0

    def __repr__(self) -> str:
        return f"BernoulliEnv(means={self._means.tolist()})"


class GaussianEnv(BaseEnvironment):
    """Arm ``k`` pays ``means[k]`` plus Gaussian noise of standard deviation ``std`` (a scalar or per arm).

    >>> env = GaussianEnv([0.0, 1.0], std=0.5, seed=0)
    >>> env.expected_rewards()
    array([0., 1.])
    >>> round(float(np.mean([env.pull(1) for _ in range(2000)])), 1)
    1.0
    """

    def __init__(self, means: ArrayLike, std: float | ArrayLike = 1.0, *, seed: Seed = None) -> None:
        m = check_means(means, unit_interval=False)
        s = np.broadcast_to(np.asarray(std, dtype=np.float64), m.shape) if np.ndim(std) == 0 else \
            np.asarray(std, dtype=np.float64)
        if s.shape != m.shape:
            raise ValueError(f"std must be a scalar or one value per arm ({m.shape[0]}), got shape {s.shape}")
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError(f"std must be finite and >= 0, got {s.tolist()}")
        super().__init__(m.shape[0], seed=seed)
        self._means = m
        self._std = s.copy()
        self._reset()

    @property
    def means(self) -> FloatArray:
        """Each arm's mean reward."""
        return self._means.copy()

    @property
    def std(self) -> FloatArray:
        """Each arm's noise standard deviation."""
        return self._std.copy()

    def expected_rewards(self) -> FloatArray:
        return self._means.copy()

    def _reset(self) -> None:
        pass

    def _advance(self) -> None:
        pass

    def _pull(self, arm: int) -> float:
        return float(self._means[arm] + self._std[arm] * self._reward_rng.standard_normal())

    def __repr__(self) -> str:
        return f"GaussianEnv(means={self._means.tolist()}, std={self._std.tolist()})"
