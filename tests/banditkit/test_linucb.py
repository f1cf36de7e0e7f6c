"""LinUCB: exactness of the maintained inverse, learning, discounting, float32, arms, slates, bad input."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from banditkit.base import BasePolicy
from banditkit.policies._linear_arms import _TRIANGLE_MIN_DIM
from banditkit.policies.linucb import LinUCB


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """OpenBLAS threads make matrix-vector products erratic on a busy 2-core machine."""
    with threadpool_limits(1):
        yield


def inverse_errors(policy: BasePolicy) -> list[float]:
    """Per arm: || A_inv - inv(A) ||_F / || inv(A) ||_F from the state dict."""
    state = policy.state_dict()["state"]
    errors = []
    for a_mat, a_inv in zip(state["A"], state["A_inv"], strict=True):
        exact = np.linalg.inv(a_mat.astype(np.float64))
        errors.append(float(np.linalg.norm(a_inv - exact) / np.linalg.norm(exact)))
    return errors


def direct_scores(policy: LinUCB, x: np.ndarray) -> np.ndarray:
    """UCB scores computed from the state dict by solving with A directly."""
    state = policy.state_dict()["state"]
    scores = []
    for a_mat, b in zip(state["A"], state["b"], strict=True):
        theta = np.linalg.solve(a_mat, b)
        scores.append(theta @ x + policy.alpha * np.sqrt(x @ np.linalg.solve(a_mat, x)))
    return np.array(scores)


def feed(policy: BasePolicy, n: int, seed: int, *, select: bool = False) -> None:
    """``n`` updates with Gaussian contexts (scaled to norm about 1) and rewards linear in them."""
    assert policy.dim is not None
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(policy.n_arms, policy.dim))
    xs = rng.normal(size=(n, policy.dim)) / np.sqrt(policy.dim)
    noise = rng.normal(size=n)
    for t in range(n):
        arm = policy.select(xs[t]) if select else t % policy.n_arms
        policy.update(arm, float(weights[arm] @ xs[t] + 0.1 * noise[t]), xs[t])


# --------------------------------------------------------------------- exactness
@pytest.mark.parametrize("discount", [1.0, 0.99])
def test_inverse_matches_numpy_inv_after_10000_updates(discount: float) -> None:
    policy = LinUCB(4, 64, alpha=1.0, ridge=1.0, discount=discount)
    feed(policy, 10_000, seed=0)
    assert max(inverse_errors(policy)) < 1e-8
    state = policy.state_dict()["state"]
    assert state["counts"].tolist() == [2500] * 4
    for a_mat, b, theta in zip(state["A"], state["b"], state["theta"], strict=True):
        np.testing.assert_allclose(theta, np.linalg.solve(a_mat, b), rtol=1e-8, atol=1e-10)


def test_design_matrix_is_ridge_plus_outer_products() -> None:
    policy = LinUCB(2, 5, ridge=2.0)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(40, 5))
    rewards = rng.normal(size=40)
    for x, r in zip(xs, rewards, strict=True):
        policy.update(1, float(r), x)
    state = policy.state_dict()["state"]
    np.testing.assert_allclose(state["A"][1], 2.0 * np.eye(5) + xs.T @ xs, rtol=1e-12)
    np.testing.assert_allclose(state["b"][1], rewards @ xs, rtol=1e-12)
    np.testing.assert_array_equal(state["A"][0], 2.0 * np.eye(5))
    np.testing.assert_array_equal(state["A_inv"][0], 0.5 * np.eye(5))


@pytest.mark.parametrize("discount", [1.0, 0.95])
def test_triangle_mode_is_exact_too(discount: float) -> None:
    """From _TRIANGLE_MIN_DIM on only one triangle of each inverse is maintained; the exported inverse is full."""
    policy = LinUCB(2, _TRIANGLE_MIN_DIM, discount=discount)
    feed(policy, 600, seed=2, select=True)
    assert max(inverse_errors(policy)) < 1e-10
    a_inv = policy.state_dict()["state"]["A_inv"]
    np.testing.assert_array_equal(a_inv, np.transpose(a_inv, (0, 2, 1)))


@pytest.mark.parametrize("dim", [6, _TRIANGLE_MIN_DIM])
def test_update_after_select_equals_update_alone_bitwise(dim: int) -> None:
    """``update`` reuses the products of the preceding ``select``; the result must not depend on it."""
    with_select = LinUCB(3, dim, alpha=0.7, discount=0.97)
    alone = copy.deepcopy(with_select)
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = rng.normal(size=dim)
        reward = float(rng.normal())
        arm = with_select.select(x)
        with_select.update(arm, reward, x)
        alone.update(arm, reward, x.copy())
    first, second = with_select.state_dict()["state"], alone.state_dict()["state"]
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_scores_and_choices_match_a_direct_computation() -> None:
    policy = LinUCB(4, 6, alpha=0.8, ridge=0.5)
    feed(policy, 300, seed=4, select=True)
    rng = np.random.default_rng(5)
    for _ in range(50):
        x = rng.normal(size=6)
        scores = direct_scores(policy, x)
        assert policy.select(x) == int(np.argmax(scores))
        np.testing.assert_array_equal(policy.select_topk(x, k=4), np.argsort(-scores, kind="stable"))
        np.testing.assert_array_equal(policy.probabilities(x), np.eye(4)[np.argmax(scores)])


@pytest.mark.parametrize("dim", [6, _TRIANGLE_MIN_DIM])
def test_select_batch_equals_repeated_select(dim: int) -> None:
    policy = LinUCB(5, dim, alpha=0.5)
    feed(policy, 400, seed=6)
    xs = np.random.default_rng(7).normal(size=(300, dim))
    assert policy.select_batch(xs).tolist() == [policy.select(x) for x in xs]
    assert policy.select_batch(np.empty((0, dim))).shape == (0,)


def test_ties_go_to_the_lowest_arm() -> None:
    policy = LinUCB(4, 3)
    x = np.array([0.3, -0.2, 0.5])
    assert policy.select(x) == 0
    assert policy.select_topk(x, k=4).tolist() == [0, 1, 2, 3]
    assert policy.select_batch(np.stack([x, x])).tolist() == [0, 0]
    policy.update(0, -1.0, x)  # arm 0 now looks worse; 1, 2, 3 stay tied
    assert policy.select(x) == 1
    assert policy.select_topk(x, k=4).tolist() == [1, 2, 3, 0]


# --------------------------------------------------------------------- learning
def linear_env_ratio(policy: BasePolicy, seed: int, *, d: int = 16, k: int = 5, steps: int = 5000,
                     noise: float = 0.3) -> float:
    """Mean expected reward of the policy's choices over the last 20% of ``steps`` divided by the
    oracle's, on rewards ``x . theta_arm + N(0, noise^2)`` with Gaussian contexts and parameters."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(k, d)) / np.sqrt(d)
    xs = rng.normal(size=(steps, d))
    means = xs @ theta.T
    noise_draws = noise * rng.normal(size=steps)
    got = np.empty(steps)
    for t in range(steps):
        arm = policy.select(xs[t])
        got[t] = means[t, arm]
        policy.update(arm, float(means[t, arm] + noise_draws[t]), xs[t])
    tail = slice(int(0.8 * steps), steps)
    return float(got[tail].mean() / means[tail].max(axis=1).mean())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reaches_the_oracle_on_a_linear_environment(dtype: str) -> None:
    # Random choices score 0 here (the means are centred), so the ratio measures what was learned.
    assert linear_env_ratio(LinUCB(5, 16, alpha=1.0, dtype=dtype), seed=0) >= 0.95


def drifting_env_ratio(policy: BasePolicy, seed: int, *, d: int = 8, k: int = 3, steps: int = 6000) -> float:
    """As ``linear_env_ratio`` but the arms' parameters rotate (arm i takes arm i-1's) halfway;
    the ratio is taken over the second half."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(k, d)) / np.sqrt(d)
    xs = rng.normal(size=(steps, d))
    noise_draws = 0.1 * rng.normal(size=steps)
    got, best = np.empty(steps), np.empty(steps)
    for t in range(steps):
        means = (theta if t < steps // 2 else np.roll(theta, 1, axis=0)) @ xs[t]
        arm = policy.select(xs[t])
        got[t], best[t] = means[arm], means.max()
        policy.update(arm, float(means[arm] + noise_draws[t]), xs[t])
    tail = slice(steps // 2, steps)
    return float(got[tail].mean() / best[tail].mean())


def test_discounting_tracks_a_drifting_environment() -> None:
    plain = drifting_env_ratio(LinUCB(3, 8, alpha=0.5), seed=0)
    discounted = drifting_env_ratio(LinUCB(3, 8, alpha=0.5, discount=0.9), seed=0)
    # Measured: about -0.2 undiscounted (it keeps playing the arm that used to be best) and 0.9 with
    # discount = 0.9.
    assert discounted >= 0.8
    assert discounted >= plain + 0.5


def test_directional_forgetting_in_one_dimension_is_exponential_weighting() -> None:
    """With d = 1 the scheme is exact exponential forgetting: A = c^n ridge + sum c^(n-i) x_i^2 (c the discount)."""
    discount, ridge = 0.8, 2.0
    policy = LinUCB(1, 1, discount=discount, ridge=ridge)
    rng = np.random.default_rng(8)
    xs, rs = rng.uniform(0.5, 2.0, size=30), rng.normal(size=30)
    for x, r in zip(xs, rs, strict=True):
        policy.update(0, float(r), np.array([x]))
    weights = discount ** np.arange(29, -1, -1)
    a_exact = discount**30 * ridge + np.sum(weights * xs**2)
    b_exact = np.sum(weights * rs * xs)
    state = policy.state_dict()["state"]
    np.testing.assert_allclose(state["A"][0, 0, 0], a_exact, rtol=1e-12)
    np.testing.assert_allclose(state["b"][0, 0], b_exact, rtol=1e-12)
    np.testing.assert_allclose(state["theta"][0, 0], b_exact / a_exact, rtol=1e-10)


def test_forgetting_keeps_the_ridge_in_unseen_directions() -> None:
    policy = LinUCB(1, 3, discount=0.5, ridge=1.5)
    for _ in range(200):
        policy.update(0, 1.0, np.array([2.0, 0.0, 0.0]))
    a_mat = policy.state_dict()["state"]["A"][0]
    np.testing.assert_allclose(a_mat[1:, 1:], 1.5 * np.eye(2), rtol=1e-12)
    # Along the seen direction the information settles at x^2 / (1 - discount), not growing without bound.
    np.testing.assert_allclose(a_mat[0, 0], 4.0 / (1 - 0.5), rtol=1e-9)
    np.testing.assert_allclose(policy.state_dict()["state"]["theta"][0], [0.5, 0.0, 0.0], rtol=1e-9)


# --------------------------------------------------------------------- float32
def test_float32_mode() -> None:
    policy = LinUCB(3, 12, alpha=0.5, dtype="float32", discount=0.98)
    twin = LinUCB(3, 12, alpha=0.5, dtype="float64", discount=0.98)
    rng = np.random.default_rng(9)
    agree = 0
    for _ in range(500):
        x = rng.normal(size=12)
        arm = policy.select(x)
        agree += arm == twin.select(x)
        reward = float(np.sin(x[0] + arm))
        policy.update(arm, reward, x)
        twin.update(arm, reward, x)
    state = policy.state_dict()
    assert state["hyperparams"]["dtype"] == "float32"
    for key in ("A", "A_inv", "b", "theta"):
        assert state["state"][key].dtype == np.float32
    assert max(inverse_errors(policy)) < 1e-4
    assert agree >= 490
    assert policy.select_batch(rng.normal(size=(7, 12))).dtype == np.int64
    with pytest.raises(ValueError, match="dtype must be 'float64' or 'float32', got 'float16'"):
        LinUCB(2, 3, dtype="float16")


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_overflowing_context_raises_clearly() -> None:
    policy = LinUCB(2, 3, dtype="float32")
    big = np.array([1e30, 0.0, 0.0])  # finite in float64, overflows float32 arithmetic
    with pytest.raises(ValueError, match="too large for this policy's float32"):
        policy.select(big)
    with pytest.raises(ValueError, match="too large for this policy's float32"):
        policy.update(0, 1.0, big)


# --------------------------------------------------------------------- arms
def test_add_and_remove_arms_keep_the_other_arms() -> None:
    policy = LinUCB(3, 4, alpha=0.3, ridge=2.0)
    feed(policy, 90, seed=10)
    before = policy.state_dict()["state"]
    assert policy.add_arm() == 3
    after_add = policy.state_dict()["state"]
    for key in ("A", "A_inv", "b", "theta"):
        np.testing.assert_array_equal(after_add[key][:3], before[key])
    np.testing.assert_array_equal(after_add["A"][3], 2.0 * np.eye(4))
    np.testing.assert_array_equal(after_add["A_inv"][3], 0.5 * np.eye(4))
    assert after_add["counts"].tolist() == [30, 30, 30, 0]
    policy.update(3, 1.0, np.ones(4))
    policy.remove_arm(1)
    after_remove = policy.state_dict()["state"]
    assert policy.n_arms == 3
    np.testing.assert_array_equal(after_remove["A"][0], before["A"][0])
    np.testing.assert_array_equal(after_remove["A"][1], before["A"][2])
    assert after_remove["counts"].tolist() == [30, 30, 1]
    assert max(inverse_errors(policy)) < 1e-12


def test_select_topk_ranks_by_upper_confidence_bound() -> None:
    policy = LinUCB(5, 4, alpha=0.4)
    feed(policy, 200, seed=11, select=True)
    x = np.array([0.5, -1.0, 0.25, 2.0])
    order = np.argsort(-direct_scores(policy, x), kind="stable")
    assert policy.select_topk(x, k=3).tolist() == order[:3].tolist()
    assert policy.select_topk(x, k=1)[0] == policy.select(x)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"alpha": -1.0}, ValueError, r"alpha must be >= 0.0, got -1.0"),
    ({"ridge": 0.0}, ValueError, r"ridge must be > 0.0, got 0.0"),
    ({"discount": 0.0}, ValueError, r"discount must be > 0.0, got 0.0"),
    ({"discount": 1.5}, ValueError, r"discount must be <= 1.0, got 1.5"),
    ({"gamma": 0.9}, TypeError, r"unexpected keyword argument 'gamma'"),
    ({"alpha": float("nan")}, ValueError, r"alpha must be finite, got nan"),
    ({"alpha": "1"}, TypeError, r"alpha must be a real number, got str"),
])
def test_bad_hyperparameters(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        LinUCB(2, 3, **kwargs)


def test_bad_shapes_and_counts() -> None:
    with pytest.raises(ValueError, match="n_arms must be >= 1, got 0"):
        LinUCB(0, 3)
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        LinUCB(2, 0)


@pytest.mark.parametrize("dim", [3, _TRIANGLE_MIN_DIM])
def test_bad_input_leaves_the_state_untouched(dim: int) -> None:
    policy = LinUCB(3, dim, discount=0.9)
    feed(policy, 12, seed=12)
    before = copy.deepcopy(policy.state_dict())
    x = np.ones(dim)
    bad: list[tuple[Any, Any, Any, type[Exception], str]] = [
        (0, 1.0, np.r_[np.nan, np.ones(dim - 1)], ValueError, "context contains NaN or inf"),
        (0, 1.0, np.r_[np.ones(dim - 1), -np.inf], ValueError, "context contains NaN or inf"),
        (0, 1.0, np.ones(dim + 1), ValueError, rf"context must have shape \({dim},\), got \({dim + 1},\)"),
        (0, 1.0, None, ValueError, f"pass a context vector of dimension {dim}"),
        (3, 1.0, x, ValueError, r"arm 3 is out of range: this policy has arms 0\.\.2"),
        (np.int64(-1), 1.0, x, ValueError, r"arm -1 is out of range"),
        (True, 1.0, x, TypeError, "arm must be an int, got bool"),
        (0, float("nan"), x, ValueError, "reward must be finite, got nan"),
        (0, "1", x, TypeError, "reward must be a real number, got str"),
    ]
    for arm, reward, context, error, message in bad:
        with pytest.raises(error, match=message):
            policy.update(arm, reward, context)
    bad_contexts: list[tuple[Any, str]] = [
        (np.full(dim, np.inf), "context contains NaN or inf"),
        (np.zeros((1, dim)), rf"context must have shape \({dim},\)"),
        ([1.0] * (dim - 1), rf"context must have shape \({dim},\), got \({dim - 1},\)"),
    ]
    for context, message in bad_contexts:
        with pytest.raises(ValueError, match=message):
            policy.select(context)
    after = policy.state_dict()
    for key in before["state"]:
        np.testing.assert_array_equal(after["state"][key], before["state"][key])
    # Lists, ints and other dtypes are converted on the checked path.
    assert policy.select([1] * dim) == policy.select(np.ones(dim, dtype=np.float32)) == policy.select(x)
    policy.update(np.int64(1), 1, [1] * dim)  # type: ignore[arg-type]
    assert policy.state_dict()["state"]["counts"][1] == before["state"]["counts"][1] + 1


def test_fresh_policy_ties_go_to_the_lowest_arm() -> None:
    rng = np.random.default_rng(3)
    for n_arms, dim in ((3, 8), (5, 128)):
        policy = LinUCB(n_arms, dim, alpha=1.0, seed=0)
        xs = rng.normal(size=(200, dim))
        assert all(policy.select(x) == 0 for x in xs)
        assert np.all(policy.select_batch(xs) == 0)


def test_select_batch_matches_select_on_large_and_fortran_ordered_batches() -> None:
    rng = np.random.default_rng(4)
    policy = LinUCB(4, 384, alpha=0.5, seed=0)
    for _ in range(300):
        x = rng.normal(size=384)
        arm = policy.select(x)
        policy.update(arm, float(rng.random()), x)
    xs = rng.normal(size=(500, 384))
    expected = np.array([policy.select(x) for x in xs])
    np.testing.assert_array_equal(policy.select_batch(xs), expected)
    np.testing.assert_array_equal(policy.select_batch(np.asfortranarray(xs)), expected)


def test_near_duplicate_arms_choose_like_select() -> None:
    rng = np.random.default_rng(5)
    policy = LinUCB(2, 128, alpha=0.5, seed=0)
    for _ in range(200):
        x = rng.normal(size=128)
        r = float(rng.random())
        policy.update(0, r, x)
        policy.update(1, r, x)
    state = policy.state_dict()
    state["state"]["b"][1] = state["state"]["b"][0] * (1 + 1e-13 * rng.normal(size=128))
    policy.load_state_dict(state)
    xs = rng.normal(size=(300, 128))
    np.testing.assert_array_equal(policy.select_batch(xs), [policy.select(x) for x in xs])


def test_public_scores_are_what_select_maximizes() -> None:
    rng = np.random.default_rng(5)
    policy = LinUCB(n_arms=4, dim=6, alpha=0.7, seed=0)
    for _ in range(50):
        x = rng.normal(size=6)
        scores = policy.scores(x)
        assert scores.shape == (4,) and scores.dtype == np.float64
        assert policy.select(x) == int(np.argmax(scores))
        policy.update(int(rng.integers(4)), float(rng.normal()), x)
    with pytest.raises(ValueError):
        policy.scores(np.zeros(5))
