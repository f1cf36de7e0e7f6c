"""The ``Environment`` protocol and a base class that handles seeds, time and arm checks.

An environment fixes its problem (arm means, parameter vectors, drift schedule) from the seed given
at construction. ``reset(seed)`` restarts time at step 0 and reseeds only the streams of contexts and
reward noise, so one problem can be replayed exactly (``reset()`` again) or rerun with fresh noise
(``reset(other_seed)``). Contexts and reward noise come from separate streams, so the contexts an
environment shows do not depend on which arms a policy pulls.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from banditkit.validation import FloatArray, check_arm, check_n_arms

Seed = int | np.random.Generator | None

__all__ = ["BaseEnvironment", "Environment", "Seed"]


@runtime_checkable
class Environment(Protocol):
    """What every banditkit environment offers.

    One round: read ``context()`` (``None`` for context-free environments), ``pull(arm)`` for a
    reward, ``expected_rewards()`` for each arm's mean reward in this round (for regret), then
    ``step()`` to move to the next round.

    >>> from banditkit.envs.stochastic import BernoulliEnv
    >>> isinstance(BernoulliEnv([0.5, 0.7], seed=0), Environment)
    True
    """

    @property
    def n_arms(self) -> int: ...

    @property
    def dim(self) -> int | None: ...

    def reset(self, seed: Seed = None) -> None: ...

    def context(self) -> FloatArray | None: ...

    def pull(self, arm: int) -> float: ...

    def expected_rewards(self) -> FloatArray: ...

    def step(self) -> None: ...


def seed_entropy(seed: Seed) -> int:
    """Turn ``seed`` into a non-negative int that seeds every stream (fresh entropy for ``None``)."""
    if seed is None:
        return int(np.random.default_rng().integers(2**63))
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, a numpy Generator or None, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


class BaseEnvironment(ABC):
    """Seeds, the step counter and arm checks; subclasses implement ``_reset``, ``_advance``,
    ``_pull``, ``expected_rewards`` and, when contextual, ``context``.

    The problem's own parameters should come from ``self._problem_rng`` (seeded once, at
    construction); per-round randomness from ``self._context_rng`` and ``self._reward_rng``.
    Subclasses call ``self._reset()`` at the end of their ``__init__``.

    >>> class Coin(BaseEnvironment):  # arm 0 pays a fair coin, arm 1 pays 0.3
    ...     def expected_rewards(self): return np.array([0.5, 0.3])
    ...     def _reset(self): pass
    ...     def _advance(self): pass
    ...     def _pull(self, arm): return float(self._reward_rng.random() < 0.5) if arm == 0 else 0.3
    >>> env = Coin(2, seed=0)
    >>> env.pull(1), env.optimal_arm(), env.t
    (0.3, 0, 0)
    """

    def __init__(self, n_arms: int, *, dim: int | None = None, seed: Seed = None) -> None:
        self._n_arms = check_n_arms(n_arms)
        self._dim = dim
        self._entropy = seed_entropy(seed)
        self._problem_rng = np.random.default_rng([self._entropy, 0])
        self._context_rng = np.random.default_rng([self._entropy, 1])
        self._reward_rng = np.random.default_rng([self._entropy, 2])
        self._t = 0

    @property
    def n_arms(self) -> int:
        """The number of arms."""
        return self._n_arms

    @property
    def dim(self) -> int | None:
        """The context dimension, ``None`` for context-free environments."""
        return self._dim

    @property
    def t(self) -> int:
        """The number of ``step()`` calls since the last reset."""
        return self._t

    def reset(self, seed: Seed = None) -> None:
        """Restart at step 0; with ``seed``, reseed the context and noise streams (the problem stays)."""
        if seed is not None:
            self._entropy = seed_entropy(seed)
        self._context_rng = np.random.default_rng([self._entropy, 1])
        self._reward_rng = np.random.default_rng([self._entropy, 2])
        self._t = 0
        self._reset()

    def context(self) -> FloatArray | None:
        """The current context (``None`` here: context-free)."""
        return None

    def pull(self, arm: int) -> float:
        """A reward for ``arm`` in the current round."""
        return float(self._pull(check_arm(arm, self._n_arms)))

    def step(self) -> None:
        """Move to the next round."""
        self._t += 1
        self._advance()

    def optimal_arm(self) -> int:
        """The arm with the highest expected reward in the current round."""
        return int(np.argmax(self.expected_rewards()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_arms={self._n_arms}, dim={self._dim})"

    @abstractmethod
    def expected_rewards(self) -> FloatArray:
        """Each arm's expected reward in the current round."""

    @abstractmethod
    def _reset(self) -> None:
        """Prepare round 0 (draw the first context, ...)."""

    @abstractmethod
    def _advance(self) -> None:
        """Prepare the round ``self._t`` after a ``step()``."""

    @abstractmethod
    def _pull(self, arm: int) -> float: ...


def check_array(name: str, values: ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    """Return ``values`` as a finite float64 array of ``shape``."""
    x = np.asarray(values, dtype=np.float64)
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_means(means: ArrayLike, *, unit_interval: bool) -> FloatArray:
    """Return per-arm means as a 1-D finite float64 array (in [0, 1] with ``unit_interval``)."""
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 1 or m.shape[0] < 1:
        raise ValueError(f"means must be a non-empty 1-D array (one mean per arm), got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"means must be finite, got {m.tolist()}")
    if unit_interval and np.any((m < 0) | (m > 1)):
        raise ValueError(f"means must lie in [0, 1] (Bernoulli probabilities), got {m.tolist()}")
    return m
