"""EXP3: exponential weights for adversarial bandits."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from banditkit.base import BasePolicy, Seed
from banditkit.validation import FloatArray, IntArray, check_k, check_real


class EXP3(BasePolicy, register=True):
    """EXP3 (Auer, Cesa-Bianchi, Freund and Schapire, 2002) for rewards in [0, 1].

    ``p = (1 - gamma) * w / sum(w) + gamma / n_arms``; a reward ``r`` for arm ``a`` multiplies
    ``w[a]`` by ``exp(gamma * r / (p_a * n_arms))``. ``p_a`` is the probability the policy gave ``a``
    the last time ``select`` or ``select_batch`` chose it, so delayed and batched rewards are weighted
    by the propensity they were played with; for an arm those never chose (logged data, arms from
    ``select_topk`` slates, which record nothing) the current probability is used. The weights are
    kept as logarithms, shifted so the largest is 0, so they never overflow.
    Rewards outside [0, 1] raise with the normalizers named as the fix. ``add_arm`` gives the new
    arm the mean weight of the existing ones. ``select_topk`` draws a slate without replacement
    with probability proportional to ``p`` (Gumbel-top-k). ``arm_scores()`` is ``p``, as
    ``probabilities()``.

    With ``gamma = min(1, sqrt(K ln K / ((e - 1) g)))`` and ``g`` at least the best arm's total
    reward, the expected regret against the best fixed arm is at most ``2 sqrt(e - 1) sqrt(g K ln K)``.

    >>> from banditkit.policies.exp3 import EXP3
    >>> policy = EXP3(3, gamma=0.1, seed=0)
    >>> for t in range(300):  # arm 2 pays 4 rounds in 5, arm 0 the fifth
    ...     arm = policy.select()
    ...     policy.update(arm, float(arm == 2 and t % 5 != 0 or arm == 0 and t % 5 == 0))
    >>> print(policy.probabilities().round(2))
    [0.03 0.03 0.93]
    """

    unit_rewards: ClassVar[bool] = True

    def __init__(self, n_arms: int, *, gamma: float = 0.1, seed: Seed = None) -> None:
        super().__init__(n_arms, seed=seed)
        self.gamma = check_real("gamma", gamma, low=0.0, high=1.0, low_open=True)
        self._log_w = np.zeros(self._n_arms)
        # Probability of each arm when the policy last chose it; 0 = never chosen (p is >= gamma/K > 0).
        self._chosen_p = np.zeros(self._n_arms)

    @property
    def log_weights(self) -> FloatArray:
        """The arms' log-weights, shifted so the largest is 0."""
        return self._log_w.copy()

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray:
        """A slate of ``k`` distinct arms drawn without replacement, proportionally to ``probabilities``."""
        k = check_k(k, self._n_arms)
        keys = np.log(self._probabilities(None)) + self._rng.gumbel(size=self._n_arms)
        return np.argsort(-keys, kind="stable")[:k].astype(np.int64)

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        w = special.softmax(self._log_w)
        p: FloatArray = (1.0 - self.gamma) * w + self.gamma / self._n_arms
        return p

    def _select(self, context: FloatArray | None) -> int:
        p = self._probabilities(None)
        arm = int(self._rng.choice(self._n_arms, p=p / p.sum()))
        self._chosen_p[arm] = p[arm]
        return arm

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        p_arm = float(self._chosen_p[arm])
        if p_arm == 0.0:
            p_arm = float(self._probabilities(None)[arm])
        self._log_w[arm] += self.gamma * reward / (p_arm * self._n_arms)
        self._log_w -= self._log_w.max()

    def _hyperparams(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def _get_state(self) -> dict[str, Any]:
        return {"log_weights": self._log_w.copy(), "chosen_p": self._chosen_p.copy()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._log_w = np.asarray(state["log_weights"], dtype=np.float64).copy()
        self._chosen_p = np.asarray(state["chosen_p"], dtype=np.float64).copy()

    def _add_arm(self) -> None:
        mean_log_w = special.logsumexp(self._log_w) - np.log(self._n_arms)
        self._log_w = np.append(self._log_w, mean_log_w)
        self._log_w -= self._log_w.max()
        self._chosen_p = np.append(self._chosen_p, 0.0)

    def _remove_arm(self, arm: int) -> None:
        self._log_w = np.delete(self._log_w, arm)
        self._log_w -= self._log_w.max()
        self._chosen_p = np.delete(self._chosen_p, arm)
