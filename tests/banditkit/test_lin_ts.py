"""Linear Thompson sampling: learning, the sampled distribution, probabilities, batches, bad input."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from banditkit.policies.lin_ts import PROBABILITY_DRAWS, LinearThompsonSampling
from tests.banditkit.test_linucb import feed, inverse_errors, linear_env_ratio


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def test_reaches_the_oracle_on_a_linear_environment() -> None:
    assert linear_env_ratio(LinearThompsonSampling(5, 16, v=0.3, seed=0), seed=0) >= 0.95


def test_posterior_statistics_are_exact() -> None:
    policy = LinearThompsonSampling(3, 10, v=0.5, ridge=2.0, seed=1)
    feed(policy, 3000, seed=1, select=True)
    assert max(inverse_errors(policy)) < 1e-10
    state = policy.state_dict()
    assert state["hyperparams"] == {"dim": 10, "v": 0.5, "ridge": 2.0}
    arrays = state["state"]
    for a_mat, b, theta in zip(arrays["A"], arrays["b"], arrays["theta"], strict=True):
        np.testing.assert_allclose(theta, np.linalg.solve(a_mat, b), rtol=1e-9, atol=1e-12)


def test_choices_follow_full_posterior_draws() -> None:
    """Drawing the scalar x . theta is the same as drawing theta ~ N(theta_hat, v^2 A^-1): compare the
    choice frequencies with an independent sampler of whole parameter vectors."""
    policy = LinearThompsonSampling(4, 5, v=0.8, seed=2)
    feed(policy, 40, seed=2)
    x = np.array([0.4, -0.3, 0.9, 0.1, -0.5])
    state = policy.state_dict()["state"]
    rng = np.random.default_rng(99)
    n = 20_000
    wins = np.zeros(4)
    draws = []
    for a_inv, theta in zip(state["A_inv"], state["theta"], strict=True):
        chol = np.linalg.cholesky(0.8**2 * a_inv)
        draws.append((theta + rng.normal(size=(n, 5)) @ chol.T) @ x)
    wins = np.bincount(np.argmax(np.stack(draws, axis=1), axis=1), minlength=4) / n
    p = policy.probabilities(x)
    chosen = np.bincount([policy.select(x) for _ in range(n)], minlength=4) / n
    tolerance = 5 * np.sqrt(np.clip(wins, 1e-3, None) * (1 / n + 1 / PROBABILITY_DRAWS))
    assert np.all(np.abs(p - wins) <= tolerance), (p, wins)
    assert np.all(np.abs(chosen - wins) <= 5 * np.sqrt(np.clip(wins, 1e-3, None) * 2 / n)), (chosen, wins)
    assert min(wins) > 0.02  # a case where every arm still has a real chance


def test_probabilities_leave_the_generator_alone_and_repeat() -> None:
    policy = LinearThompsonSampling(3, 4, v=0.5, seed=3)
    feed(policy, 30, seed=3)
    x = np.ones(4)
    before = copy.deepcopy(policy._rng.bit_generator.state)
    first = policy.probabilities(x)
    assert policy._rng.bit_generator.state == before
    np.testing.assert_array_equal(policy.probabilities(x), first)
    assert first.sum() == pytest.approx(1.0)
    policy.select(x)  # the generator moves on, and so does the Monte Carlo stream
    assert policy._rng.bit_generator.state != before


def test_zero_context_ties_go_to_the_lowest_arm() -> None:
    policy = LinearThompsonSampling(3, 2, v=1.0, seed=4)
    feed(policy, 20, seed=4)
    zero = np.zeros(2)
    assert policy.select(zero) == 0
    np.testing.assert_array_equal(policy.probabilities(zero), [1.0, 0.0, 0.0])


def test_select_batch_draws_like_repeated_select() -> None:
    policy = LinearThompsonSampling(4, 6, v=0.4, seed=5)
    feed(policy, 200, seed=5)
    looped = copy.deepcopy(policy)
    xs = np.random.default_rng(6).normal(size=(250, 6))
    assert policy.select_batch(xs).tolist() == [looped.select(x) for x in xs]
    assert policy._rng.bit_generator.state == looped._rng.bit_generator.state


def test_select_topk_ranks_one_draw() -> None:
    first = LinearThompsonSampling(5, 3, v=0.5, seed=7)
    second = copy.deepcopy(first)
    x = np.array([1.0, 0.5, -0.2])
    slates = [first.select_topk(x, k=3).tolist() for _ in range(20)]
    assert slates == [second.select_topk(x, k=3).tolist() for _ in range(20)]
    assert all(len(set(s)) == 3 for s in slates)
    assert len({tuple(s) for s in slates}) > 1  # a fresh draw each time


def test_v_zero_is_greedy() -> None:
    policy = LinearThompsonSampling(3, 2, v=0.0, seed=8)
    policy.update(2, 1.0, np.array([1.0, 0.0]))
    assert {policy.select(np.array([1.0, 0.0])) for _ in range(20)} == {2}


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"v": -0.1}, ValueError, r"v must be >= 0.0, got -0.1"),
    ({"ridge": -1.0}, ValueError, r"ridge must be > 0.0, got -1.0"),
    ({"v": None}, TypeError, r"v must be a real number, got NoneType"),
])
def test_bad_hyperparameters(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        LinearThompsonSampling(2, 3, **kwargs)


def test_bad_context_leaves_the_state_untouched() -> None:
    policy = LinearThompsonSampling(2, 3, seed=9)
    feed(policy, 10, seed=9)
    before = copy.deepcopy(policy.state_dict())
    with pytest.raises(ValueError, match="context contains NaN or inf"):
        policy.update(0, 1.0, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="context contains NaN or inf"):
        policy.select(np.array([np.inf, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"context must have shape \(3,\), got \(2,\)"):
        policy.probabilities([1.0, 2.0])
    after = policy.state_dict()
    for key in before["state"]:
        np.testing.assert_array_equal(after["state"][key], before["state"][key])


def test_public_means_are_the_posterior_means_and_draw_nothing() -> None:
    rng = np.random.default_rng(2)
    policy = LinearThompsonSampling(n_arms=3, dim=4, v=0.0, seed=0)  # v = 0: greedy on the means
    for _ in range(40):
        x = rng.normal(size=4)
        state = policy.state_dict()["rng"]
        means = policy.means(x)
        assert policy.state_dict()["rng"] == state
        assert policy.select(x) == int(np.argmax(means))
        policy.update(int(rng.integers(3)), float(rng.normal()), x)
