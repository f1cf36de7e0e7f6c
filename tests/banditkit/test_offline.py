"""Offline evaluation: replay and (self-normalized) IPS against known true values, fixed seeds.

Tolerances are 4 standard errors (each estimate's own SE, plus the Monte Carlo error of the
true value, which is negligible at 400,000 contexts): a correct estimator lands outside with
probability about 6e-5, and with fixed seeds the outcome is deterministic.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from banditkit.base import BasePolicy
from banditkit.envs import BernoulliEnv, LinearContextualEnv
from banditkit.envs.linear import random_unit_vectors
from banditkit.offline import LoggedData, OfflineEstimate, evaluate_offline
from banditkit.policies.baselines import FixedArm, RandomPolicy
from banditkit.policies.ucb1 import UCB1
from banditkit.simulate import simulate
from banditkit.validation import FloatArray

K, DIM, N_LOGGED = 4, 5, 12_000


class Softmax(BasePolicy):
    """A fixed stochastic target: softmax of ``thetas @ x / temperature``; counts its updates."""

    contextual = True

    def __init__(self, n_arms: int, *, dim: int, thetas: Any = None, temperature: float = 0.1,
                 seed: int | None = None) -> None:
        super().__init__(n_arms, dim=dim, seed=seed)
        self.thetas = np.asarray(thetas, dtype=np.float64)
        self.temperature = temperature
        self.updates: list[int] = []

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        if self.temperature == 0:
            return np.eye(self.n_arms)[int(np.argmax(self.thetas @ context))]
        z = self.thetas @ context / self.temperature
        p: FloatArray = np.exp(z - z.max())
        return p / p.sum()

    def _select(self, context: FloatArray | None) -> int:
        return int(self._rng.choice(self.n_arms, p=self._probabilities(context)))

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        self.updates.append(arm)

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self.dim, "thetas": self.thetas.tolist(), "temperature": self.temperature}

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def _add_arm(self) -> None:
        raise NotImplementedError

    def _remove_arm(self, arm: int) -> None:
        raise NotImplementedError


@pytest.fixture(scope="module")
def linear_log() -> tuple[LinearContextualEnv, LoggedData]:
    env = LinearContextualEnv(K, DIM, noise=0.3, seed=0)
    logged = simulate(RandomPolicy(K, seed=1), env, N_LOGGED, seed=2, record_contexts=True).to_logged_data()
    return env, logged


def true_value(thetas: FloatArray, temperature: float) -> float:
    """The target's expected reward over the environment's context distribution (uniform on the sphere)."""
    x = random_unit_vectors(np.random.default_rng(99), 400_000, DIM)
    means = x @ thetas.T
    if temperature == 0:
        return float(means.max(axis=1).mean())
    z = means / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return float((p * means).sum(axis=1).mean())


@pytest.mark.parametrize("temperature", [0.0, 0.2])
def test_replay_and_ips_recover_the_true_value(linear_log: tuple[LinearContextualEnv, LoggedData],
                                               temperature: float) -> None:
    env, logged = linear_log
    truth = true_value(env.thetas, temperature)
    target = Softmax(K, dim=DIM, thetas=env.thetas, temperature=temperature, seed=3)
    est = evaluate_offline(target, logged, learn=False)
    assert est.n_rounds == N_LOGGED
    assert est.n_matched is not None and est.replay is not None and est.replay_se is not None
    assert est.ips is not None and est.ips_se is not None and est.snips is not None and est.ess is not None
    # about 1/K of the rounds match under uniform logging (binomial, 4 standard deviations)
    assert abs(est.n_matched - N_LOGGED / K) < 4 * math.sqrt(N_LOGGED * (1 / K) * (1 - 1 / K))
    assert abs(est.replay - truth) < 4 * est.replay_se
    assert abs(est.ips - truth) < 4 * est.ips_se
    assert abs(est.snips - truth) < 4 * est.ips_se
    # the rewards' sd is at least the noise's (0.3) and at most that plus the means' range (|mean| <= 1)
    assert 0.9 * 0.3 < est.replay_se * math.sqrt(est.n_matched) < math.hypot(0.3, 1.0)
    # uniform logging: importance weights are K * p, so the ESS is N / (K * E[p^2])
    assert 0 < est.ess <= N_LOGGED
    # the estimators separate a good target from a bad one by far more than their error
    worst = evaluate_offline(Softmax(K, dim=DIM, thetas=-env.thetas, temperature=temperature, seed=3), logged,
                             method="ips", learn=False)
    assert worst.ips is not None and worst.ips < truth - 10 * est.ips_se


def test_ips_matches_a_direct_computation(linear_log: tuple[LinearContextualEnv, LoggedData]) -> None:
    env, logged = linear_log
    target = Softmax(K, dim=DIM, thetas=env.thetas, temperature=0.5)
    est = evaluate_offline(target, logged, method="ips", learn=False)
    assert logged.contexts is not None
    z = logged.contexts @ env.thetas.T / 0.5
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    w = p[np.arange(N_LOGGED), logged.arms] / logged.propensities
    wr = w * logged.rewards
    assert est.ips == pytest.approx(wr.mean(), rel=1e-12)
    assert est.ips_se == pytest.approx(wr.std(ddof=1) / math.sqrt(N_LOGGED), rel=1e-9)
    assert est.snips == pytest.approx(wr.sum() / w.sum(), rel=1e-12)
    assert est.ess == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-9)
    assert est.n_matched is None and est.replay is None and est.replay_se is None
    assert target.updates == []


def test_learn_updates_only_on_matched_rounds(linear_log: tuple[LinearContextualEnv, LoggedData]) -> None:
    env, logged = linear_log
    learner = Softmax(K, dim=DIM, thetas=env.thetas, temperature=0.2, seed=4)
    est = evaluate_offline(learner, logged, method="replay", learn=True)
    assert len(learner.updates) == est.n_matched
    frozen = Softmax(K, dim=DIM, thetas=env.thetas, temperature=0.2, seed=4)
    again = evaluate_offline(frozen, logged, method="replay", learn=False)
    assert frozen.updates == [] and again.n_matched == est.n_matched  # same generator, same choices
    assert est.ips is None and est.ips_se is None and est.snips is None


def test_ips_only_without_learning_never_selects() -> None:
    class NoSelect(FixedArm):
        def _select(self, context: FloatArray | None) -> int:
            raise AssertionError("select must not be called")

    logged = LoggedData(None, [0, 1, 0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5])
    est = evaluate_offline(NoSelect(2, arm=0), logged, method="ips", learn=False)
    assert est.ips == pytest.approx((2 * 1.0 + 0 + 2 * 0.0) / 3)
    assert est.snips == pytest.approx(0.5)


def test_replay_of_a_learning_policy_matches_its_online_reward() -> None:
    # Li et al. (2011): under uniform logging, replay over N rounds behaves like N / K online steps
    env = BernoulliEnv([0.2, 0.4, 0.45, 0.7], seed=0)
    logged = simulate(RandomPolicy(4, seed=1), env, 12_000, seed=2, record_propensities=True).to_logged_data()
    est = evaluate_offline(UCB1(4, seed=0), logged)
    assert est.n_matched is not None and est.replay is not None and est.replay_se is not None
    online = [simulate(UCB1(4, seed=s), env, est.n_matched, seed=10 + s).mean_reward for s in range(4)]
    online_se = 0.5 / math.sqrt(est.n_matched * 4)  # Bernoulli rewards: sd <= 0.5
    assert abs(est.replay - float(np.mean(online))) < 4 * math.hypot(est.replay_se, online_se)
    assert est.replay > 0.6  # it learned: uniform play earns 0.4375


def test_context_free_fixed_arm() -> None:
    env = BernoulliEnv([0.3, 0.8], seed=0)
    logged = simulate(RandomPolicy(2, seed=1), env, 4000, seed=2).to_logged_data()
    est = evaluate_offline(FixedArm(2, arm=1), logged)
    assert est.n_matched == int((logged.arms == 1).sum())
    assert est.replay == pytest.approx(logged.rewards[logged.arms == 1].mean())
    assert est.ips is not None and est.ips_se is not None
    assert abs(est.ips - 0.8) < 4 * est.ips_se


def test_no_match_gives_nan() -> None:
    logged = LoggedData(None, [1, 1], [1.0, 0.0], [0.5, 0.5])
    est = evaluate_offline(FixedArm(2, arm=0), logged)
    assert est.n_matched == 0 and est.replay is not None and math.isnan(est.replay)
    assert est.ips == 0.0 and est.snips is not None and math.isnan(est.snips) and est.ess == 0.0
    assert isinstance(est, OfflineEstimate)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((None, [], [], []), ValueError, "arms must be a non-empty 1-D array"),
        ((None, [0.5, 1.0], [1.0, 1.0], [0.5, 0.5]), TypeError, "arms must be integers"),
        ((None, [-1], [1.0], [0.5]), ValueError, "arms must be >= 0, got -1"),
        ((None, [0, 1], [1.0], [0.5, 0.5]), ValueError, "equal lengths"),
        ((None, [0], [math.nan], [0.5]), ValueError, "rewards contain NaN or inf"),
        ((None, [0, 1], [1.0, 1.0], [0.5, 1.5]), ValueError,
         r"propensities must lie in \(0, 1\], got 1.5 at round 1"),
        ((None, [0], [1.0], [math.nan]), ValueError, "propensities must lie in"),
        ((np.ones((2, 3)), [0], [1.0], [0.5]), ValueError, r"contexts must have shape \(1, dim\)"),
        ((np.full((1, 3), np.inf), [0], [1.0], [0.5]), ValueError, "contexts contain NaN or inf"),
    ],
)
def test_logged_data_validation(args: tuple[Any, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LoggedData(*args)


def test_evaluate_offline_bad_arguments() -> None:
    logged = LoggedData(None, [0, 2], [1.0, 0.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="method must be one of both, replay, ips, got 'dr'"):
        evaluate_offline(RandomPolicy(3), logged, method="dr")
    with pytest.raises(ValueError, match=r"the log has arm 2 but the policy has arms 0\.\.1"):
        evaluate_offline(RandomPolicy(2), logged)
