"""Thompson sampling with conjugate priors: Beta-Bernoulli and Gaussian with known noise."""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from banditkit.base import Seed
from banditkit.policies._arm_stats import ArmStatistics
from banditkit.validation import FloatArray, IntArray, check_k, check_real, check_reward

Likelihood = Literal["bernoulli", "gaussian"]
LIKELIHOODS: tuple[str, ...] = get_args(Likelihood)

#: Posterior draws behind the Monte Carlo estimate of ``probabilities`` (standard error <= 0.008).
PROBABILITY_DRAWS = 4000


class ThompsonSampling(ArmStatistics, register=True):
    """Thompson sampling: draw each arm's mean from its posterior, play the largest draw.

    ``likelihood="bernoulli"``: a ``Beta(prior_alpha, prior_beta)`` prior per arm; a reward ``r`` in
    [0, 1] adds ``r`` to alpha and ``1 - r`` to beta (fractional rewards act as pseudo-counts), so
    rewards outside [0, 1] raise with the normalizers named as the fix.
    ``likelihood="gaussian"``: rewards are ``N(mean, noise_var)`` with a known ``noise_var`` and a
    ``N(prior_mean, prior_var)`` prior on each mean; any finite reward is accepted. (The [0, 1] check
    depends on the likelihood, so this class checks rewards itself and leaves the class-wide
    ``unit_rewards`` flag False.)

    ``probabilities`` is P(arm's draw is the largest). For a Gaussian pair it is exact
    (``Phi((m1 - m2) / sqrt(v1 + v2))``); otherwise it is a Monte Carlo estimate from
    ``PROBABILITY_DRAWS`` joint posterior draws, taken from a generator seeded by the posterior
    parameters: the same state always gives the same estimate, and the policy's own generator
    is not advanced. ``select_topk`` ranks one joint posterior draw. ``arm_scores()`` is each arm's
    posterior mean: ``alpha / (alpha + beta)`` for Bernoulli, the posterior mean for Gaussian.

    >>> import numpy as np
    >>> from banditkit.policies.thompson import ThompsonSampling
    >>> rng = np.random.default_rng(0)
    >>> means = [0.2, 0.5, 0.8]
    >>> policy = ThompsonSampling(3, seed=1)
    >>> for _ in range(500):
    ...     arm = policy.select()
    ...     policy.update(arm, float(rng.random() < means[arm]))
    >>> print(policy.counts.argmax(), policy.probabilities().round(2))
    2 [0.   0.01 0.99]
    """

    def __init__(self, n_arms: int, *, likelihood: Likelihood = "bernoulli", prior_alpha: float = 1.0,
                 prior_beta: float = 1.0, prior_mean: float = 0.0, prior_var: float = 1.0,
                 noise_var: float = 1.0, seed: Seed = None) -> None:
        super().__init__(n_arms, seed=seed)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.likelihood: Likelihood = likelihood
        self.prior_alpha = check_real("prior_alpha", prior_alpha, low=0.0, low_open=True)
        self.prior_beta = check_real("prior_beta", prior_beta, low=0.0, low_open=True)
        self.prior_mean = check_real("prior_mean", prior_mean)
        self.prior_var = check_real("prior_var", prior_var, low=0.0, low_open=True)
        self.noise_var = check_real("noise_var", noise_var, low=0.0, low_open=True)
        self._init_stats()

    @property
    def counts(self) -> FloatArray:
        """How many rewards each arm has received."""
        return self._counts.copy()

    def posterior(self) -> tuple[FloatArray, FloatArray]:
        """Each arm's posterior: ``(alpha, beta)`` for Bernoulli, ``(mean, variance)`` for Gaussian."""
        if self.likelihood == "bernoulli":
            return self.prior_alpha + self._sums, self.prior_beta + self._counts - self._sums
        precision = 1.0 / self.prior_var + self._counts / self.noise_var
        mean = (self.prior_mean / self.prior_var + self._sums / self.noise_var) / precision
        return mean, 1.0 / precision

    def _arm_scores(self, context: FloatArray | None) -> FloatArray:
        a, b = self.posterior()
        if self.likelihood == "bernoulli":
            means: FloatArray = a / (a + b)
            return means
        return a

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray:
        """The ``k`` arms with the largest values in one joint posterior draw, best first."""
        k = check_k(k, self._n_arms)
        return np.argsort(-self._draw(self._rng, 1)[0], kind="stable")[:k].astype(np.int64)

    def _draw(self, rng: np.random.Generator, n: int) -> FloatArray:
        a, b = self.posterior()
        size = (n, self._n_arms)
        if self.likelihood == "bernoulli":
            return rng.beta(a, b, size=size)
        return rng.normal(a, np.sqrt(b), size=size)

    def _select(self, context: FloatArray | None) -> int:
        return int(np.argmax(self._draw(self._rng, 1)[0]))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        if self._n_arms == 1:
            return np.ones(1)
        a, b = self.posterior()
        if self.likelihood == "gaussian" and self._n_arms == 2:
            p0 = float(special.ndtr((a[0] - a[1]) / np.sqrt(b[0] + b[1])))
            return np.array([p0, 1.0 - p0])
        # Seeded by the posterior itself: deterministic per state, independent of self._rng.
        entropy = np.frombuffer(np.concatenate([a, b]).astype("<f8").tobytes(), dtype="<u4")
        draws = self._draw(np.random.default_rng(entropy), PROBABILITY_DRAWS)
        counts = np.bincount(np.argmax(draws, axis=1), minlength=self._n_arms)
        return counts / PROBABILITY_DRAWS

    # ``unit_rewards`` is a class attribute of the base; this policy needs [0, 1] per instance.
    def _check_rewards(self, rewards: FloatArray) -> None:
        if self.likelihood == "bernoulli":
            bad = rewards[(rewards < 0.0) | (rewards > 1.0)]
            if bad.size:
                check_reward(float(bad[0]), unit_interval=True)  # raises, naming the normalizers

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        check_reward(reward, unit_interval=self.likelihood == "bernoulli")
        self._counts[arm] += 1.0
        self._sums[arm] += reward

    def _update_batch(self, arms: IntArray, rewards: FloatArray,
                      contexts: list[FloatArray | None] | FloatArray) -> None:
        self._check_rewards(rewards)  # before any change: a bad batch is rejected whole
        np.add.at(self._counts, arms, 1.0)
        np.add.at(self._sums, arms, rewards)

    def _hyperparams(self) -> dict[str, Any]:
        return {"likelihood": self.likelihood, "prior_alpha": self.prior_alpha,
                "prior_beta": self.prior_beta, "prior_mean": self.prior_mean,
                "prior_var": self.prior_var, "noise_var": self.noise_var}
