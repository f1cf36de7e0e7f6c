"""Epsilon-greedy: exploit the best mean, explore uniformly with probability epsilon."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from banditkit.base import Seed
from banditkit.policies._arm_stats import ArmStatistics
from banditkit.validation import FloatArray, IntArray, check_k, check_real


class EpsilonGreedy(ArmStatistics, register=True):
    """Epsilon-greedy with an optional decaying exploration rate.

    With probability ``epsilon_t`` the arm is drawn uniformly; otherwise it is the greedy arm, the
    one with the highest mean reward. Arms never played count as greedy while any remain (so each arm
    is tried early), and ties are broken uniformly. Hence
    ``probabilities() = (1 - epsilon_t) * uniform-over-greedy-set + epsilon_t / n_arms``.

    Schedule: ``epsilon_t = max(min_epsilon, epsilon / (1 + decay * t))`` where ``t`` is the number of
    rewards observed so far (removing an arm does not reset it); ``decay=None`` (or 0) keeps
    ``epsilon`` constant. Counting rewards rather than selections keeps ``probabilities`` a function
    of the learned state: ``select_batch`` explores at one rate. ``arm_scores()`` is ``means``, each
    arm's empirical mean reward.

    >>> import numpy as np
    >>> from banditkit.policies.epsilon_greedy import EpsilonGreedy
    >>> rng = np.random.default_rng(0)
    >>> means = [0.2, 0.5, 0.8]
    >>> policy = EpsilonGreedy(3, epsilon=0.3, decay=0.01, seed=1)
    >>> for _ in range(500):
    ...     arm = policy.select()
    ...     policy.update(arm, float(rng.random() < means[arm]))
    >>> print(round(policy.current_epsilon, 3), policy.probabilities().round(3))
    0.05 [0.017 0.017 0.967]
    """

    def __init__(self, n_arms: int, *, epsilon: float = 0.1, decay: float | None = None,
                 min_epsilon: float = 0.0, seed: Seed = None) -> None:
        super().__init__(n_arms, seed=seed)
        self.epsilon = check_real("epsilon", epsilon, low=0.0, high=1.0)
        self.decay = None if decay is None else check_real("decay", decay, low=0.0)
        self.min_epsilon = check_real("min_epsilon", min_epsilon, low=0.0, high=1.0)
        if self.min_epsilon > self.epsilon:
            raise ValueError(f"min_epsilon ({self.min_epsilon}) must be <= epsilon ({self.epsilon})")
        self._init_stats()
        self._t = 0

    @property
    def current_epsilon(self) -> float:
        """The exploration rate the next choice uses."""
        if not self.decay:
            return float(self.epsilon)
        return max(float(self.min_epsilon), float(self.epsilon) / (1.0 + float(self.decay) * self._t))

    @property
    def counts(self) -> FloatArray:
        """How many rewards each arm has received."""
        return self._counts.copy()

    @property
    def means(self) -> FloatArray:
        """Each arm's mean reward (0 for arms never played)."""
        return np.divide(self._sums, self._counts, out=np.zeros(self._n_arms), where=self._counts > 0)

    def _arm_scores(self, context: FloatArray | None) -> FloatArray:
        return self.means

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray:
        """With probability ``epsilon_t`` a uniformly random slate, else the arms by mean (untried first)."""
        k = check_k(k, self._n_arms)
        if self._rng.random() < self.current_epsilon:
            return self._rng.permutation(self._n_arms)[:k].astype(np.int64)
        scores = np.where(self._counts > 0, self.means, np.inf)
        order = np.lexsort((self._rng.random(self._n_arms), -scores))
        return order[:k].astype(np.int64)

    def _greedy(self) -> IntArray:
        untried = np.flatnonzero(self._counts == 0)
        if untried.size:
            return untried.astype(np.int64)
        means = self.means
        return np.flatnonzero(means == means.max()).astype(np.int64)

    def _select(self, context: FloatArray | None) -> int:
        if self._rng.random() < self.current_epsilon:
            return int(self._rng.integers(self._n_arms))
        greedy = self._greedy()
        return int(greedy[0] if greedy.size == 1 else self._rng.choice(greedy))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        eps = self.current_epsilon
        greedy = self._greedy()
        p = np.full(self._n_arms, eps / self._n_arms)
        p[greedy] += (1.0 - eps) / greedy.size
        return p

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        self._counts[arm] += 1.0
        self._sums[arm] += reward
        self._t += 1

    def _hyperparams(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "decay": self.decay, "min_epsilon": self.min_epsilon}

    def _get_state(self) -> dict[str, Any]:
        return {**super()._get_state(), "t": self._t}

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        self._t = int(state["t"])
