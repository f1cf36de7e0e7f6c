"""``arm_scores`` of each policy against a direct computation from the feedback it was given."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TypeVar

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from banditkit.base import BasePolicy
from banditkit.normalizers import Normalized, QuantileNormalizer
from banditkit.policies.baselines import FixedArm, RandomPolicy, RoundRobin
from banditkit.policies.epsilon_greedy import EpsilonGreedy
from banditkit.policies.exp3 import EXP3
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB
from banditkit.policies.thompson import ThompsonSampling
from banditkit.policies.ucb1 import UCB1
from tests.banditkit.test_linucb import direct_scores, feed

K = 4
# Arm 3 is never played, so the scores of an unplayed arm are checked too.
ARMS = np.array([0, 1, 2, 0, 1, 0, 2, 2, 0, 1, 0, 0])
REWARDS = np.array([0.9, 0.2, 0.4, 0.7, 0.0, 1.0, 0.5, 0.3, 0.8, 0.1, 0.6, 1.0])
P = TypeVar("P", bound=BasePolicy)


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def tallies() -> tuple[np.ndarray, np.ndarray]:
    """Each arm's number of rewards and their sum."""
    return np.bincount(ARMS, minlength=K).astype(float), np.bincount(ARMS, REWARDS, minlength=K)


def fed(policy: P) -> P:
    for arm, reward in zip(ARMS.tolist(), REWARDS.tolist(), strict=True):
        policy.update(arm, reward)
    return policy


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_linucb_scores_are_the_upper_confidence_bounds(dtype: str) -> None:
    policy = LinUCB(K, 6, alpha=0.8, ridge=0.5, discount=0.99, dtype=dtype)
    feed(policy, 300, seed=4, select=True)
    for x in np.random.default_rng(5).normal(size=(20, 6)):
        scores = policy.arm_scores(x)
        np.testing.assert_array_equal(scores, policy.scores(x))
        np.testing.assert_allclose(scores, direct_scores(policy, x), rtol=1e-3 if dtype == "float32" else 1e-9)
        assert policy.select(x) == int(np.argmax(scores))


def test_linear_thompson_scores_are_the_posterior_means() -> None:
    policy = LinearThompsonSampling(K, 6, v=0.5, ridge=2.0, seed=0)
    feed(policy, 300, seed=6)
    state = policy.state_dict()["state"]
    thetas = np.stack([np.linalg.solve(a, b) for a, b in zip(state["A"], state["b"], strict=True)])
    for x in np.random.default_rng(7).normal(size=(20, 6)):
        scores = policy.arm_scores(x)
        np.testing.assert_array_equal(scores, policy.means(x))
        np.testing.assert_allclose(scores, thetas @ x, rtol=1e-9, atol=1e-12)
    scores[:] = 0.0  # a copy: writing into it leaves the policy as it was
    np.testing.assert_allclose(policy.arm_scores(x), thetas @ x, rtol=1e-9, atol=1e-12)


def test_thompson_bernoulli_scores_are_the_beta_posterior_means() -> None:
    counts, sums = tallies()
    policy = fed(ThompsonSampling(K, prior_alpha=2.0, prior_beta=3.0, seed=0))
    np.testing.assert_allclose(policy.arm_scores(), (2.0 + sums) / (5.0 + counts), rtol=1e-15)


def test_thompson_gaussian_scores_are_the_normal_posterior_means() -> None:
    counts, sums = tallies()
    policy = fed(ThompsonSampling(K, likelihood="gaussian", prior_mean=0.5, prior_var=2.0, noise_var=0.25,
                                  seed=0))
    expected = (0.5 / 2.0 + sums / 0.25) / (1.0 / 2.0 + counts / 0.25)
    np.testing.assert_allclose(policy.arm_scores(), expected, rtol=1e-15)


def test_exp3_scores_are_its_probabilities() -> None:
    policy = EXP3(K, gamma=0.3, seed=0)
    for _ in range(30):
        arm = policy.select()
        policy.update(arm, float(arm == 2))
    w = np.exp(policy.state_dict()["state"]["log_weights"])
    expected = 0.7 * w / w.sum() + 0.3 / K
    np.testing.assert_allclose(policy.arm_scores(), expected, rtol=1e-14)
    np.testing.assert_array_equal(policy.arm_scores(), policy.probabilities())


def test_epsilon_greedy_scores_are_the_empirical_means() -> None:
    counts, sums = tallies()
    policy = fed(EpsilonGreedy(K, epsilon=0.2, seed=0))
    expected = np.divide(sums, counts, out=np.zeros(K), where=counts > 0)
    np.testing.assert_array_equal(policy.arm_scores(), expected)
    np.testing.assert_array_equal(policy.arm_scores(), policy.means)


def test_ucb1_scores_are_its_indices() -> None:
    counts, sums = tallies()
    policy = fed(UCB1(K, c=2.0))
    played = counts > 0
    expected = np.full(K, np.inf)
    expected[played] = sums[played] / counts[played] + np.sqrt(2.0 * np.log(len(ARMS)) / counts[played])
    np.testing.assert_allclose(policy.arm_scores(), expected, rtol=1e-15)
    np.testing.assert_array_equal(policy.arm_scores(), policy.indices())
    assert policy.arm_scores()[3] == np.inf


def test_random_policy_scores_are_uniform() -> None:
    np.testing.assert_array_equal(RandomPolicy(K, seed=0).arm_scores(), np.full(K, 1 / K))


def test_fixed_arm_scores_are_one_hot() -> None:
    np.testing.assert_array_equal(FixedArm(K, arm=2).arm_scores(), [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("period", [1, 2, None])
def test_round_robin_scores_are_one_hot_on_the_next_arm(period: int | None) -> None:
    policy = RoundRobin(K, period=period)
    for _ in range(7):
        scores = policy.arm_scores()
        assert policy.select() == int(np.argmax(scores)) and scores.sum() == 1.0


def test_normalized_delegates_to_the_wrapped_policy() -> None:
    inner = LinUCB(K, 3, alpha=0.5, seed=0)
    policy = Normalized(copy.deepcopy(inner), QuantileNormalizer())
    rng = np.random.default_rng(8)
    for x in rng.normal(size=(40, 3)):
        arm = policy.select(x)
        reward = float(rng.normal(5.0, 2.0))
        inner.update(arm, policy.normalizer.normalize(reward), x)
        policy.update(arm, reward, x)
    x = rng.normal(size=3)
    np.testing.assert_array_equal(policy.arm_scores(x), inner.arm_scores(x))
    with pytest.raises(ValueError, match=r"context must have shape \(3,\), got \(2,\)"):
        policy.arm_scores(np.ones(2))
