"""Linear Thompson sampling (Agrawal & Goyal, 2013) on disjoint per-arm ridge regressions."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from banditkit.base import Seed
from banditkit.policies._linear_arms import _LinearArms
from banditkit.validation import FloatArray, IntArray, check_real

#: Posterior draws behind the Monte Carlo estimate of ``probabilities`` (standard error <= 0.005).
PROBABILITY_DRAWS = 10_000


class LinearThompsonSampling(_LinearArms, register=True):
    """Linear Thompson sampling: draw ``theta_a ~ N(theta_hat_a, v^2 A_a^{-1})`` per arm, play the arm
    whose draw gives the largest ``x . theta_a``.

    ``v`` >= 0 scales the posterior spread (0 is greedy), ``ridge`` > 0 is the prior precision. Only
    ``x . theta_a`` enters the decision, and for a Gaussian ``theta_a`` it is exactly
    ``N(x . theta_hat_a, v^2 x^T A_a^{-1} x)``, so each decision draws that scalar directly: one
    standard normal per arm, the same cost as LinUCB (``O(K d^2)``), no factorization at any ``d``.
    ``select_batch`` draws independently per context, consuming the generator exactly as repeated
    ``select`` calls would. ``select_topk`` ranks one such draw per arm.

    ``probabilities(x)`` is a Monte Carlo estimate from ``PROBABILITY_DRAWS`` draws taken from a
    generator seeded by a hash of the policy's generator state: the same state gives the same
    estimate, and the policy's own generator is not advanced. Ties (only possible at ``x = 0``) go to
    the lowest arm index, as in ``select``. ``arm_scores(x)`` (also ``means(x)``) is each arm's posterior
    mean reward ``x . theta_hat_a``.

    >>> import numpy as np
    >>> from banditkit.policies.lin_ts import LinearThompsonSampling
    >>> weights = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # arm k pays weights[k] . x
    >>> policy = LinearThompsonSampling(n_arms=3, dim=2, v=0.2, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(300):
    ...     x = rng.normal(size=2)
    ...     arm = policy.select(x)
    ...     policy.update(arm, float(weights[arm] @ x) + 0.1 * rng.normal(), x)
    >>> [int(np.argmax(policy.probabilities(x))) for x in ([3.0, 0.0], [0.0, 3.0], [-3.0, 0.0])]
    [0, 1, 2]
    """

    def __init__(self, n_arms: int, dim: int, *, v: float = 1.0, ridge: float = 1.0,
                 seed: Seed = None) -> None:
        self.v = check_real("v", v, low=0.0)
        super().__init__(n_arms, dim, ridge=ridge, seed=seed)

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self._d, "v": self.v, "ridge": self.ridge}

    def means(self, context: ArrayLike) -> FloatArray:
        """Each arm's posterior mean reward ``x . theta_hat_a`` for ``context``; draws nothing. The same as
        ``arm_scores``.

        >>> import numpy as np
        >>> LinearThompsonSampling(n_arms=2, dim=2).means(np.array([1.0, 0.0])).tolist()
        [0.0, 0.0]
        """
        return self.arm_scores(context)

    def _arm_scores(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        # A copy: the means are a view of the products that update reuses.
        return self._means_variances(context)[0].astype(np.float64)

    def _sampled_scores(self, means: FloatArray, var: FloatArray, z: FloatArray) -> FloatArray:
        """``means + v * sqrt(var) * z`` (any matching shapes)."""
        spread = self.v * np.sqrt(np.maximum(var, 0.0))
        scores: FloatArray = means + spread * z
        return scores

    def _select(self, context: FloatArray | None) -> int:
        assert context is not None
        means, var = self._means_variances(context)
        scores = self._sampled_scores(means, var, self._rng.standard_normal(self._n_arms))
        arm = int(scores.argmax())
        if not math.isfinite(scores[arm]):
            self._nonfinite(context)
        return arm

    def select_batch(self, contexts: ArrayLike | None = None, *, n: int | None = None) -> IntArray:
        """Choose an arm for each row of ``contexts``, one independent posterior draw per context."""
        xs = self._contexts(contexts, n)
        assert isinstance(xs, np.ndarray)
        means, var = self._batch_means_variances(xs)
        z = self._rng.standard_normal((xs.shape[0], self._n_arms))
        return self._sampled_scores(means, var, z).argmax(axis=1).astype(np.int64)  # type: ignore[no-any-return]

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        means, var = self._means_variances(context)
        z = self._probability_generator().standard_normal((PROBABILITY_DRAWS, self._n_arms))
        wins = self._sampled_scores(means, var, z).argmax(axis=1)
        return np.bincount(wins, minlength=self._n_arms) / PROBABILITY_DRAWS

    def _probability_generator(self) -> np.random.Generator:
        """A generator determined by the policy's generator state, which it leaves untouched."""
        state = json.dumps(self._rng.bit_generator.state, sort_keys=True, default=_plain)
        digest = hashlib.sha256(state.encode()).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))

    def _ranking_scores(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        means, var = self._means_variances(context)
        scores = self._sampled_scores(means, var, self._rng.standard_normal(self._n_arms))
        return scores.astype(np.float64)


def _plain(value: Any) -> Any:
    """JSON fallback for generator states that hold arrays or numpy scalars."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot hash a generator state holding {type(value).__name__}")
