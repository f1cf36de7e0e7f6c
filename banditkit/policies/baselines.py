"""Baselines that ignore rewards: uniform random, one fixed arm, and round robin."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from banditkit.base import BasePolicy, Seed
from banditkit.validation import FloatArray, IntArray, check_arm, check_k, check_positive_int


class RandomPolicy(BasePolicy, register=True):
    """Choose uniformly at random; rewards are validated and ignored. ``arm_scores()`` is the uniform
    ``probabilities()``.

    >>> from banditkit.policies.baselines import RandomPolicy
    >>> policy = RandomPolicy(4, seed=0)
    >>> print(policy.select_batch(n=6), policy.probabilities())
    [3 2 2 1 1 0] [0.25 0.25 0.25 0.25]
    """

    def __init__(self, n_arms: int, *, seed: Seed = None) -> None:
        super().__init__(n_arms, seed=seed)

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray:
        """A uniformly random slate of ``k`` distinct arms."""
        k = check_k(k, self._n_arms)
        return self._rng.permutation(self._n_arms)[:k].astype(np.int64)

    def _select(self, context: FloatArray | None) -> int:
        return int(self._rng.integers(self._n_arms))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        return np.full(self._n_arms, 1.0 / self._n_arms)

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        pass

    def _hyperparams(self) -> dict[str, Any]:
        return {}

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def _add_arm(self) -> None:
        pass

    def _remove_arm(self, arm: int) -> None:
        pass


class FixedArm(BasePolicy, register=True):
    """Always choose ``arm``; rewards are validated and ignored.

    Removing an arm below ``arm`` shifts it down with the others; removing ``arm`` itself raises.
    ``select_topk`` returns ``arm`` first, then the other arms by index. ``arm_scores()`` is one-hot on
    ``arm``, as ``probabilities()``.

    >>> from banditkit.policies.baselines import FixedArm
    >>> policy = FixedArm(3, arm=2)
    >>> print(policy.select(), policy.select_topk(k=3), policy.probabilities())
    2 [2 0 1] [0. 0. 1.]
    """

    def __init__(self, n_arms: int, *, arm: int = 0) -> None:
        super().__init__(n_arms)
        self.arm = check_arm(arm, self._n_arms)

    def _ranking_scores(self, context: FloatArray | None) -> FloatArray:
        scores = -np.arange(self._n_arms, dtype=np.float64)
        scores[self.arm] = 1.0
        return scores

    def _select(self, context: FloatArray | None) -> int:
        return int(self.arm)

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        p = np.zeros(self._n_arms)
        p[self.arm] = 1.0
        return p

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        pass

    def _hyperparams(self) -> dict[str, Any]:
        return {"arm": self.arm}

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def _add_arm(self) -> None:
        pass

    def _remove_arm(self, arm: int) -> None:
        if arm == self.arm:
            raise ValueError(f"cannot remove arm {arm}: FixedArm plays it; build a FixedArm for another arm")
        if arm < self.arm:
            self.arm -= 1


class RoundRobin(BasePolicy, register=True):
    """Cycle through the arms in index order, ``period`` selections per arm; rewards are ignored.

    ``period=1`` moves to the next arm at every ``select``; ``period=None`` moves only when
    ``advance()`` is called (for example once per training iteration, as LASeR's "sequential"
    baseline does). ``select_batch`` equals repeated ``select``; ``select_topk`` counts as one
    selection and returns the arm ``select`` would, then the following arms in cycle order.
    ``probabilities`` and ``arm_scores`` are one-hot on the arm the next ``select`` returns. A new arm
    joins the end of the cycle; removing the current arm moves on to the arm after it.

    >>> from banditkit.policies.baselines import RoundRobin
    >>> policy = RoundRobin(3, period=2)
    >>> print(policy.select_batch(n=7))
    [0 0 1 1 2 2 0]
    >>> manual = RoundRobin(3, period=None)
    >>> first = manual.select_batch(n=2)
    >>> manual.advance()
    >>> print(first, manual.select_batch(n=2))
    [0 0] [1 1]
    """

    def __init__(self, n_arms: int, *, period: int | None = 1) -> None:
        super().__init__(n_arms)
        self.period = None if period is None else check_positive_int("period", period)
        self._position = 0  # the current arm
        self._served = 0  # selections made on the current arm

    def advance(self) -> None:
        """Move to the next arm now."""
        self._position = (self._position + 1) % self._n_arms
        self._served = 0

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray:
        """The arm ``select`` would return, then the next ``k - 1`` arms in cycle order."""
        k = check_k(k, self._n_arms)
        first = self._select(None)
        return ((first + np.arange(k)) % self._n_arms).astype(np.int64)

    def _next(self) -> int:
        if self.period is not None and self._served >= self.period:
            return (self._position + 1) % self._n_arms
        return self._position

    def _select(self, context: FloatArray | None) -> int:
        if self.period is not None and self._served >= self.period:
            self.advance()
        self._served += 1
        return self._position

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        p = np.zeros(self._n_arms)
        p[self._next()] = 1.0
        return p

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        pass

    def _hyperparams(self) -> dict[str, Any]:
        return {"period": self.period}

    def _get_state(self) -> dict[str, Any]:
        return {"position": self._position, "served": self._served}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._position = check_arm(int(state["position"]), self._n_arms)
        self._served = int(state["served"])

    def _add_arm(self) -> None:
        pass

    def _remove_arm(self, arm: int) -> None:
        if arm < self._position:
            self._position -= 1
        elif arm == self._position:
            self._served = 0
            if self._position == self._n_arms - 1:
                self._position = 0
