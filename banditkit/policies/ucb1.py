"""UCB1: optimism in the face of uncertainty with a Hoeffding confidence bonus."""

from __future__ import annotations

from typing import Any

import numpy as np

from banditkit.base import Seed
from banditkit.policies._arm_stats import ArmStatistics
from banditkit.validation import FloatArray, check_real


class UCB1(ArmStatistics, register=True):
    """UCB1 (Auer, Cesa-Bianchi and Fischer, 2002).

    Plays each arm once (lowest index first), then the arm maximizing
    ``mean + sqrt(c * ln(t) / n)``, where ``t`` is the number of rewards observed so far and ``n``
    the arm's own count. ``c=2`` is the paper's UCB1, whose finite-time regret bound assumes rewards
    in [0, 1]; other rewards are accepted, with ``c`` scaled to their range squared. Ties go to the
    lowest index, so the policy is deterministic: ``probabilities`` is one-hot, ``select_batch``
    equals repeated ``select`` (the counts only move on ``update``), and ``seed`` is accepted for a
    uniform signature but never used. ``arm_scores()`` is ``indices()``.

    >>> import numpy as np
    >>> from banditkit.policies.ucb1 import UCB1
    >>> rng = np.random.default_rng(0)
    >>> means = [0.2, 0.5, 0.8]
    >>> policy = UCB1(3)
    >>> for _ in range(500):
    ...     arm = policy.select()
    ...     policy.update(arm, float(rng.random() < means[arm]))
    >>> print(policy.counts.argmax(), policy.probabilities())
    2 [0. 0. 1.]
    """

    def __init__(self, n_arms: int, *, c: float = 2.0, seed: Seed = None) -> None:
        super().__init__(n_arms, seed=seed)
        self.c = check_real("c", c, low=0.0)
        self._init_stats()

    @property
    def counts(self) -> FloatArray:
        """How many rewards each arm has received."""
        return self._counts.copy()

    @property
    def means(self) -> FloatArray:
        """Each arm's mean reward (0 for arms never played)."""
        return np.divide(self._sums, self._counts, out=np.zeros(self._n_arms), where=self._counts > 0)

    def indices(self) -> FloatArray:
        """Each arm's upper confidence bound; ``inf`` for arms never played."""
        t = self._counts.sum()
        played = self._counts > 0
        out = np.full(self._n_arms, np.inf)
        n = self._counts[played]
        out[played] = self._sums[played] / n + np.sqrt(self.c * np.log(max(t, 1.0)) / n)
        return out

    def _select(self, context: FloatArray | None) -> int:
        return int(np.argmax(self.indices()))

    def _arm_scores(self, context: FloatArray | None) -> FloatArray:
        return self.indices()

    def _ranking_scores(self, context: FloatArray | None) -> FloatArray:
        # Slates rank by the bound itself: never-played arms first (by index), ties by index.
        return self.indices()

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        p = np.zeros(self._n_arms)
        p[self._select(context)] = 1.0
        return p

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        self._counts[arm] += 1.0
        self._sums[arm] += reward

    def _hyperparams(self) -> dict[str, Any]:
        return {"c": self.c}
