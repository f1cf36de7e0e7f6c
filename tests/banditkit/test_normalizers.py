"""Reward normalizers and the ``Normalized`` policy wrapper."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditkit.base import BasePolicy, policy_class
from banditkit.normalizers import (
    MinMaxNormalizer,
    Normalized,
    Normalizer,
    QuantileNormalizer,
    ZScoreNormalizer,
    normalizer_from_state_dict,
)
from banditkit.validation import FloatArray

# fixed seeds: hypothesis derandomized, no example database, no deadline on a loaded machine
PROPERTY = settings(deadline=None, derandomize=True, database=None)

rewards = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
histories = st.lists(rewards, min_size=0, max_size=40)
quantile_pairs = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).filter(lambda p: p[0] + 1e-3 < p[1])


AnyNormalizer = QuantileNormalizer | MinMaxNormalizer | ZScoreNormalizer
CLASSES: dict[str, Any] = {
    "quantile": QuantileNormalizer, "minmax": MinMaxNormalizer, "zscore": ZScoreNormalizer,
}


def make(kind: str, **kwargs: Any) -> AnyNormalizer:
    normalizer: AnyNormalizer = CLASSES[kind](**kwargs)
    return normalizer


KINDS = ["quantile", "minmax", "zscore"]


def fed(kind: str, history: list[float], **kwargs: Any) -> AnyNormalizer:
    n = make(kind, **kwargs)
    for r in history:
        n.observe(r)
    return n


def reference_quantile(history: list[float], r: float, low: float, high: float) -> float:
    values = np.array([*history, r])
    if values.min() == values.max():
        return 0.5
    q_low, q_high = np.quantile(values, [low, high])
    if q_high <= q_low:
        return 0.0 if r < q_low else 1.0 if r > q_low else 0.5
    return float(np.clip((r - q_low) / (q_high - q_low), 0.0, 1.0))


# --------------------------------------------------------------------------- properties of all normalizers
@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(history=histories, r=rewards)
def test_output_in_unit_interval(kind: str, history: list[float], r: float) -> None:
    n = fed(kind, history)
    value = n.normalize(r)
    assert 0.0 <= value <= 1.0
    assert n(r) == value  # __call__ = normalize, then observe


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(history=histories, a=rewards, b=rewards)
def test_monotone_in_reward_for_fixed_history(kind: str, history: list[float], a: float, b: float) -> None:
    n = fed(kind, history)
    lo, hi = min(a, b), max(a, b)
    assert n.normalize(lo) <= n.normalize(hi) + 1e-9


@pytest.mark.parametrize("kind", KINDS)
@settings(PROPERTY, max_examples=50)
@given(history=histories, probe=rewards)
def test_state_round_trip_through_json(kind: str, history: list[float], probe: float) -> None:
    n = fed(kind, history)
    state = json.loads(json.dumps(n.state_dict()))
    restored = normalizer_from_state_dict(state)
    assert type(restored) is type(n)
    assert restored.normalize(probe) == n.normalize(probe)
    assert restored(probe) == n(probe)
    assert restored.normalize(0.5) == n.normalize(0.5)
    again = make(kind)
    again.load_state_dict(state)
    assert again.state_dict() == json.loads(json.dumps(state))


@pytest.mark.parametrize("kind", KINDS)
def test_call_is_normalize_then_observe(kind: str) -> None:
    a, b = make(kind), make(kind)
    rng = np.random.default_rng(0)
    for r in rng.normal(size=50):
        expected = b.normalize(float(r))
        b.observe(float(r))
        assert a(float(r)) == expected
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("kind", KINDS)
def test_degenerate_history_gives_one_half(kind: str) -> None:
    n = make(kind)
    assert n.normalize(3.0) == 0.5
    assert n(7.0) == 0.5
    assert n(7.0) == 0.5
    assert n.normalize(7.0) == 0.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_reward_raises(kind: str, bad: float) -> None:
    n = make(kind)
    n.observe(1.0)
    for fn in (n, n.normalize, n.observe):
        with pytest.raises(ValueError, match="reward must be finite"):
            fn(bad)
    assert n.normalize(1.0) == 0.5  # nothing was recorded


@pytest.mark.parametrize("kind", KINDS)
def test_non_number_reward_raises_type_error(kind: str) -> None:
    with pytest.raises(TypeError, match="reward must be a real number"):
        make(kind)("1.0")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_follows_protocol_and_accepts_numpy_scalars(kind: str) -> None:
    n = make(kind)
    assert isinstance(n, Normalizer)
    assert isinstance(n(np.float32(1.5)), float)
    assert isinstance(n(np.int64(3)), float)


def test_state_for_another_normalizer_is_rejected() -> None:
    with pytest.raises(ValueError, match="state is for normalizer 'MinMaxNormalizer'"):
        QuantileNormalizer().load_state_dict(MinMaxNormalizer().state_dict())
    with pytest.raises(ValueError, match="unknown normalizer 'Nope'"):
        normalizer_from_state_dict({"normalizer": "Nope", "params": {}, "state": {}})


# --------------------------------------------------------------------------- QuantileNormalizer
@PROPERTY
@given(history=histories, r=rewards, q=quantile_pairs)
def test_quantile_matches_numpy_reference(history: list[float], r: float, q: tuple[float, float]) -> None:
    n = fed("quantile", history, low=q[0], high=q[1])
    assert n.normalize(r) == pytest.approx(reference_quantile(history, r, *q), abs=1e-9)


@PROPERTY
@given(
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=6, max_size=41, unique=True)
    .map(lambda v: v[: 1 + 5 * ((len(v) - 1) // 5)])
)
def test_quantile_maps_20th_and_80th_percentile_to_0_and_1(values: list[float]) -> None:
    # with 5k + 1 values the 20th/80th percentiles are exactly the order statistics k and 4k
    s = sorted(values)
    k = (len(s) - 1) // 5
    for target, expected in ((s[k], 0.0), (s[4 * k], 1.0)):
        history = list(values)
        history.remove(target)
        n = fed("quantile", history)
        assert n.normalize(target) == pytest.approx(expected, abs=1e-12)
        assert n(target) == pytest.approx(expected, abs=1e-12)


def test_quantile_percentiles_are_configurable() -> None:
    values = list(range(11))  # the 10th/90th percentiles of 0..10 are 1 and 9
    n = fed("quantile", [float(v) for v in values if v != 5], low=0.1, high=0.9)
    assert n.normalize(5.0) == 0.5
    assert n.normalize(1.0) == 0.0  # 1 replaces 5: the 10th percentile is still 1
    assert n.normalize(9.0) == 1.0


def test_quantile_clips_outside_the_percentiles() -> None:
    n = fed("quantile", [float(v) for v in range(100)])
    assert n.normalize(-50.0) == 0.0
    assert n.normalize(1e9) == 1.0
    assert 0.0 < n.normalize(50.0) < 1.0


def test_quantile_tied_percentiles_give_step() -> None:
    n = fed("quantile", [0.0] * 9 + [1.0])
    assert n.normalize(0.0) == 0.5
    assert n.normalize(-1.0) == 0.0
    assert n.normalize(0.5) == 1.0


@PROPERTY
@given(history=st.lists(rewards, min_size=0, max_size=30), r=rewards, window=st.integers(2, 10))
def test_quantile_window_uses_last_rewards(history: list[float], r: float, window: int) -> None:
    windowed = fed("quantile", history, window=window)
    recent = fed("quantile", history[max(0, len(history) - (window - 1)):])
    assert windowed.normalize(r) == pytest.approx(recent.normalize(r), abs=1e-12)
    assert len(windowed) == min(len(history), window)
    assert windowed(r) == pytest.approx(recent(r), abs=1e-12)
    assert len(windowed) == min(len(history) + 1, window)


def test_quantile_window_forgets_old_rewards() -> None:
    n = QuantileNormalizer(window=10)
    for r in range(1000):  # a drifting reward scale
        value = n(float(r))
    assert value == 1.0
    assert n.normalize(995.0) == pytest.approx(reference_quantile([float(v) for v in range(991, 1000)], 995.0,
                                                                  0.2, 0.8))
    assert n.state_dict()["state"]["history"] == [float(v) for v in range(990, 1000)]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"low": 0.8, "high": 0.2}, ValueError, "low must be < high"),
        ({"low": 0.5, "high": 0.5}, ValueError, "low must be < high"),
        ({"low": -0.1}, ValueError, "low must be >= 0.0, got -0.1"),
        ({"high": 1.5}, ValueError, "high must be <= 1.0, got 1.5"),
        ({"low": math.nan}, ValueError, "low must be finite"),
        ({"window": 1}, ValueError, "window must be >= 2"),
        ({"window": 0}, ValueError, "window must be >= 1"),
        ({"window": 2.5}, TypeError, "window must be an int"),
        ({"low": "0.2"}, TypeError, "low must be a real number"),
    ],
)
def test_quantile_bad_parameters(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        QuantileNormalizer(**kwargs)


def test_quantile_is_fast_on_long_histories() -> None:
    n = QuantileNormalizer()
    rng = np.random.default_rng(0)
    values = rng.normal(size=20_000)
    out = [n(float(r)) for r in values]
    assert np.mean(out) == pytest.approx(0.5, abs=0.02)
    assert np.mean(np.array(out) == 0.0) == pytest.approx(0.2, abs=0.02)  # below the 20th percentile


# --------------------------------------------------------------------------- MinMax and ZScore
@PROPERTY
@given(history=st.lists(rewards, min_size=1, max_size=30), r=rewards)
def test_minmax_matches_reference(history: list[float], r: float) -> None:
    values = np.array([*history, r])
    lo, hi = values.min(), values.max()
    expected = 0.5 if hi == lo else (r - lo) / (hi - lo)
    assert fed("minmax", history).normalize(r) == pytest.approx(expected, abs=1e-12)


@PROPERTY
@given(history=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=30),
       r=st.floats(-1e3, 1e3, allow_nan=False), clip=st.floats(0.1, 10.0))
def test_zscore_matches_reference(history: list[float], r: float, clip: float) -> None:
    values = np.array([*history, r])
    std = values.std()
    n = fed("zscore", history, clip=clip)
    if std < 1e-6 * max(1.0, float(np.abs(values).max())):
        return  # (near-)constant history: Welford and numpy may disagree on the tiny variance's sign
    z = (r - values.mean()) / std
    assert n.normalize(r) == pytest.approx((np.clip(z, -clip, clip) + clip) / (2 * clip), abs=1e-6)
    n.observe(r)
    assert n.mean == pytest.approx(values.mean(), rel=1e-9, abs=1e-9)
    assert n.std == pytest.approx(std, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("clip", [0.0, -1.0, math.inf])
def test_zscore_bad_clip(clip: float) -> None:
    with pytest.raises(ValueError, match="clip must be"):
        ZScoreNormalizer(clip=clip)


def test_zscore_clips() -> None:
    n = fed("zscore", [float(v) for v in range(1000)], clip=1.0)
    assert n.normalize(1e6) == 1.0
    assert n.normalize(-1e6) == 0.0


# --------------------------------------------------------------------------- Normalized
class RewardRecorder(BasePolicy):
    """Records the rewards it is given; picks the arm with the largest total; needs rewards in [0, 1]."""

    unit_rewards = True

    def __init__(self, n_arms: int, *, seed: int | None = None) -> None:
        super().__init__(n_arms, seed=seed)
        self.seen: list[tuple[int, float]] = []
        self.totals = np.zeros(n_arms)

    def _select(self, context: FloatArray | None) -> int:
        return int(np.argmax(self.totals))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        return np.eye(self.n_arms)[self._select(context)]

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        self.seen.append((arm, reward))
        self.totals[arm] += reward

    def _hyperparams(self) -> dict[str, Any]:
        return {}

    def _get_state(self) -> dict[str, Any]:
        return {"totals": self.totals.tolist(), "seen": [list(x) for x in self.seen]}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.totals = np.asarray(state["totals"], dtype=np.float64)
        self.seen = [(int(a), float(r)) for a, r in state["seen"]]

    def _add_arm(self) -> None:
        self.totals = np.append(self.totals, 0.0)

    def _remove_arm(self, arm: int) -> None:
        self.totals = np.delete(self.totals, arm)


class NoisyLinearScorer(BasePolicy, register=True):
    """A contextual test policy with randomness: scores are x @ w plus noise from its generator; registered,
    so that Normalized can rebuild it from a saved state."""

    contextual = True

    def __init__(self, n_arms: int, *, dim: int, seed: int | None = None) -> None:
        super().__init__(n_arms, dim=dim, seed=seed)
        self.w = np.zeros((n_arms, dim))

    def _select(self, context: FloatArray | None) -> int:
        assert context is not None
        return int(np.argmax(self.w @ context + self._rng.normal(size=self.n_arms)))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        return np.full(self.n_arms, 1.0 / self.n_arms)

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        assert context is not None
        self.w[arm] += reward * context

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def _get_state(self) -> dict[str, Any]:
        return {"w": self.w.copy()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.w = np.array(state["w"], dtype=np.float64)

    def _add_arm(self) -> None:
        assert self.dim is not None
        self.w = np.vstack([self.w, np.zeros(self.dim)])

    def _remove_arm(self, arm: int) -> None:
        self.w = np.delete(self.w, arm, axis=0)


def test_normalized_lets_unit_policies_learn_from_losses() -> None:
    with pytest.raises(ValueError, match=r"reward must lie in \[0, 1\].*QuantileNormalizer"):
        RewardRecorder(2).update(0, -2.5)
    policy = Normalized(RewardRecorder(2), QuantileNormalizer())
    for arm, loss in [(0, -2.5), (1, -1.0), (0, -3.0), (1, -0.5)]:
        policy.update(arm, loss)
    inner = policy.inner
    assert isinstance(inner, RewardRecorder)
    reference = QuantileNormalizer()
    assert inner.seen == [(a, reference(r)) for a, r in [(0, -2.5), (1, -1.0), (0, -3.0), (1, -0.5)]]
    assert all(0.0 <= r <= 1.0 for _, r in inner.seen)
    assert policy.select() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_update_batch_equals_sequential_updates(kind: str) -> None:
    rng = np.random.default_rng(1)
    arms = rng.integers(0, 3, size=40)
    raw = rng.normal(5.0, 2.0, size=40)
    batch = Normalized(RewardRecorder(3), make(kind))
    loop = Normalized(RewardRecorder(3), make(kind))
    batch.update_batch(arms, raw)
    for a, r in zip(arms, raw, strict=True):
        loop.update(int(a), float(r))
    assert isinstance(batch.inner, RewardRecorder) and isinstance(loop.inner, RewardRecorder)
    np.testing.assert_allclose(np.array(batch.inner.seen), np.array(loop.inner.seen), rtol=1e-12)
    assert batch.normalizer.state_dict() == loop.normalizer.state_dict()


def test_rejected_feedback_leaves_history_untouched() -> None:
    policy = Normalized(RewardRecorder(2), QuantileNormalizer())
    policy.update(0, 1.0)
    before = policy.normalizer.state_dict()
    with pytest.raises(ValueError, match="arm 5 is out of range"):
        policy.update(5, 2.0)
    with pytest.raises(ValueError, match="arm 7 is out of range"):
        policy.update_batch([0, 7], [1.0, 2.0])
    with pytest.raises(ValueError, match="reward must be finite"):
        policy.update(0, math.nan)
    with pytest.raises(ValueError, match="rewards contain NaN or inf"):
        policy.update_batch([0, 1], [1.0, math.inf])
    assert policy.normalizer.state_dict() == before
    contextual = Normalized(NoisyLinearScorer(2, dim=3, seed=0), MinMaxNormalizer())
    with pytest.raises(ValueError, match=r"context must have shape \(3,\)"):
        contextual.update(0, 1.0, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"contexts must have shape \(n, 3\)"):
        contextual.update_batch([0, 1], [1.0, 2.0], np.ones((2, 2)))
    assert contextual.normalizer.state_dict() == MinMaxNormalizer().state_dict()


def test_normalized_delegates_everything() -> None:
    inner = NoisyLinearScorer(3, dim=2, seed=0)
    policy = Normalized(inner, ZScoreNormalizer())
    assert policy.n_arms == 3 and policy.dim == 2
    assert policy.contextual and not Normalized(RewardRecorder(2), ZScoreNormalizer()).contextual
    assert policy.probabilities([1.0, 0.0]) == pytest.approx([1 / 3] * 3)
    assert policy.select_batch(np.eye(2)).shape == (2,)
    assert sorted(policy.select_topk([0.0, 1.0], k=3).tolist()) == [0, 1, 2]
    assert policy.add_arm() == 3 and inner.n_arms == 4 and policy.n_arms == 4
    policy.remove_arm(0)
    assert inner.n_arms == 3 and policy.n_arms == 3
    with pytest.raises(ValueError, match="this policy is contextual"):
        policy.select()
    assert "Normalized(NoisyLinearScorer" in repr(policy) and "ZScoreNormalizer(clip=3.0)" in repr(policy)
    with pytest.raises(TypeError, match="normalizer must follow"):
        Normalized(inner, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy must follow"):
        Normalized(object(), QuantileNormalizer())  # type: ignore[arg-type]


def test_normalized_state_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(2)
    policy = Normalized(NoisyLinearScorer(3, dim=4, seed=7), QuantileNormalizer(low=0.1, high=0.9, window=50))
    xs = rng.normal(size=(200, 4))
    for x in xs[:100]:
        policy.update(policy.select(x), float(rng.normal(10.0, 3.0)), x)
    state = policy.state_dict()
    assert state["policy"] == "Normalized"
    assert state["inner"]["policy"] == "tests.banditkit.test_normalizers.NoisyLinearScorer"
    assert policy_class("Normalized") is Normalized
    restored = policy_class(state["policy"]).from_state_dict(copy.deepcopy(state))
    assert isinstance(restored, Normalized)
    assert isinstance(restored.normalizer, QuantileNormalizer) and restored.normalizer.window == 50
    feedback = rng.normal(10.0, 3.0, size=100)
    for x, r in zip(xs[100:], feedback, strict=True):
        a, b = policy.select(x), restored.select(x)
        assert a == b
        policy.update(a, float(r), x)
        restored.update(b, float(r), x)
    assert policy.state_dict()["normalizer"] == restored.state_dict()["normalizer"]
    inner_a, inner_b = policy.inner, restored.inner
    assert isinstance(inner_a, NoisyLinearScorer) and isinstance(inner_b, NoisyLinearScorer)
    np.testing.assert_array_equal(inner_a.w, inner_b.w)
    other = Normalized(NoisyLinearScorer(3, dim=4), QuantileNormalizer())
    other.load_state_dict(state)
    assert other.normalizer.state_dict() == state["normalizer"]
    inner_name = r"tests\.banditkit\.test_normalizers\.NoisyLinearScorer"
    with pytest.raises(ValueError, match=f"state is for policy '{inner_name}', not 'Normalized'"):
        other.load_state_dict(state["inner"])


@pytest.mark.parametrize("kind", KINDS)
def test_normalized_real_policies_save_and_load(tmp_path: Any, kind: str) -> None:
    from banditkit.persistence import load, save
    from banditkit.policies.exp3 import EXP3
    from banditkit.policies.linucb import LinUCB

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="reward must lie in"):
        EXP3(3, seed=0).update(0, -4.0)  # raw losses: EXP3 needs [0, 1]
    for inner, dim in ((EXP3(3, gamma=0.1, seed=0), None), (LinUCB(3, 4, alpha=0.5, seed=0), 4)):
        policy = Normalized(inner, make(kind))
        contexts = rng.normal(size=(120, 4))
        losses = rng.normal(-3.0, 1.0, size=120)
        for x, loss in zip(contexts[:60], losses[:60], strict=True):
            ctx = None if dim is None else x
            policy.update(policy.select(ctx), float(loss), ctx)
        restored = load(save(policy, tmp_path / f"{kind}-{type(inner).__name__}"))
        assert isinstance(restored, Normalized) and type(restored.inner) is type(inner)
        for x, loss in zip(contexts[60:], losses[60:], strict=True):
            ctx = None if dim is None else x
            a, b = policy.select(ctx), restored.select(ctx)
            assert a == b
            np.testing.assert_array_equal(policy.probabilities(ctx), restored.probabilities(ctx))
            policy.update(a, float(loss), ctx)
            restored.update(b, float(loss), ctx)
        assert restored.normalizer.state_dict() == policy.normalizer.state_dict()
