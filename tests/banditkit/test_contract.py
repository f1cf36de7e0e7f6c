"""The contract every policy keeps, checked over every policy (contextual and context-free alike).

Each case scripts the same interaction: contexts and a reward table drawn once from fixed seeds, the
reward of arm ``a`` at step ``t`` being ``REWARDS[t, a]`` (in [0, 1], so EXP3 and Beta-Bernoulli
Thompson sampling accept it), so two policies that choose alike see the same feedback.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from banditkit.base import BasePolicy, Policy
from banditkit.persistence import load, save
from banditkit.policies.baselines import FixedArm, RandomPolicy, RoundRobin
from banditkit.policies.epsilon_greedy import EpsilonGreedy
from banditkit.policies.exp3 import EXP3
from banditkit.policies.lin_ts import PROBABILITY_DRAWS as LIN_TS_DRAWS
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB
from banditkit.policies.thompson import PROBABILITY_DRAWS as TS_DRAWS
from banditkit.policies.thompson import ThompsonSampling
from banditkit.policies.ucb1 import UCB1
from tests.banditkit.states import assert_same_state

N_ARMS, DIM, STEPS = 3, 4, 200
_rng = np.random.default_rng(20240601)
CONTEXTS = _rng.normal(size=(STEPS, DIM))
_THETA = _rng.normal(size=(N_ARMS + 1, DIM)) / np.sqrt(DIM)
# Column N_ARMS serves an arm added at run time. Linear in the context, plus noise, clipped to [0, 1].
REWARDS = np.clip(0.5 + 0.25 * CONTEXTS @ _THETA.T + 0.1 * _rng.normal(size=(STEPS, N_ARMS + 1)), 0.0, 1.0)


def linucb(seed: int, **kwargs: Any) -> BasePolicy:
    return LinUCB(N_ARMS, DIM, alpha=kwargs.pop("alpha", 0.5), ridge=1.0, seed=seed, **kwargs)


def lin_ts(seed: int) -> BasePolicy:
    return LinearThompsonSampling(N_ARMS, DIM, v=0.3, ridge=1.0, seed=seed)


@dataclass(frozen=True)
class Case:
    make: Callable[[int], BasePolicy]
    contextual: bool = False
    deterministic: bool = False
    # Probabilities estimated from this many Monte Carlo draws (their error enters the tolerance).
    mc_draws: int = 0


CASES: dict[str, Case] = {
    "linucb": Case(linucb, contextual=True, deterministic=True),
    "linucb-float32-discounted": Case(lambda s: linucb(s, discount=0.95, dtype="float32"),
                                      contextual=True, deterministic=True),
    "lin-ts": Case(lin_ts, contextual=True, mc_draws=LIN_TS_DRAWS),
    "thompson-bernoulli": Case(lambda s: ThompsonSampling(N_ARMS, seed=s), mc_draws=TS_DRAWS),
    "thompson-gaussian": Case(lambda s: ThompsonSampling(N_ARMS, likelihood="gaussian", noise_var=0.05,
                                                         seed=s), mc_draws=TS_DRAWS),
    "exp3": Case(lambda s: EXP3(N_ARMS, gamma=0.2, seed=s)),
    "epsilon-greedy": Case(lambda s: EpsilonGreedy(N_ARMS, epsilon=0.4, decay=0.01, min_epsilon=0.1, seed=s)),
    "ucb1": Case(lambda s: UCB1(N_ARMS, c=2.0, seed=s), deterministic=True),
    "random": Case(lambda s: RandomPolicy(N_ARMS, seed=s)),
    "fixed-arm": Case(lambda s: FixedArm(N_ARMS, arm=0), deterministic=True),
    "round-robin": Case(lambda s: RoundRobin(N_ARMS, period=1), deterministic=True),
    "round-robin-period-3": Case(lambda s: RoundRobin(N_ARMS, period=3), deterministic=True),
    "round-robin-manual": Case(lambda s: RoundRobin(N_ARMS, period=None), deterministic=True),
}

pytestmark = pytest.mark.parametrize("name", list(CASES))


def ctx(case: Case, t: int) -> np.ndarray | None:
    return CONTEXTS[t % STEPS] if case.contextual else None


def play(case: Case, policy: BasePolicy, start: int, steps: int) -> list[int]:
    """Run ``steps`` select/update rounds from step ``start``; return the choices."""
    choices = []
    for t in range(start, start + steps):
        x = ctx(case, t)
        arm = policy.select(x)
        choices.append(arm)
        policy.update(arm, float(REWARDS[t % STEPS, arm]), x)
    return choices


def trained(name: str, seed: int = 0, steps: int = 60) -> tuple[Case, BasePolicy]:
    case = CASES[name]
    policy = case.make(seed)
    play(case, policy, 0, steps)
    return case, policy


def assert_plain(value: Any, where: str = "state") -> None:
    """State holds plain numbers, strings, lists, dicts and numpy arrays only (no pickling needed)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r} is not a string"
            assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, bool | int | float | str | np.ndarray | np.generic), (
            f"{where} holds a {type(value).__name__}")


def test_follows_the_protocol(name: str) -> None:
    _, policy = trained(name, steps=5)
    assert isinstance(policy, Policy)
    assert policy.n_arms == N_ARMS
    assert_plain(policy.state_dict())
    assert repr(policy).startswith(type(policy).__name__ + "(")


def test_same_seed_same_choices(name: str) -> None:
    case = CASES[name]
    first, second = case.make(11), case.make(11)
    assert play(case, first, 0, 80) == play(case, second, 0, 80)
    x = ctx(case, 80)
    np.testing.assert_array_equal(first.probabilities(x), second.probabilities(x))
    np.testing.assert_array_equal(first.select_topk(x, k=2), second.select_topk(x, k=2))


def test_state_dict_round_trip_continues_identically(name: str) -> None:
    case, policy = trained(name, seed=3, steps=40)
    state = policy.state_dict()
    restored = case.make(12345)  # another seed: the generator state must come from the state dict
    restored.load_state_dict(copy.deepcopy(state))
    rebuilt = BasePolicy.from_state_dict(copy.deepcopy(state))
    assert type(rebuilt) is type(policy) and rebuilt.n_arms == policy.n_arms
    expected = play(case, policy, 40, 60)
    assert play(case, restored, 40, 60) == expected
    assert play(case, rebuilt, 40, 60) == expected
    x = ctx(case, 100)
    np.testing.assert_allclose(restored.probabilities(x), policy.probabilities(x))
    np.testing.assert_allclose(rebuilt.probabilities(x), policy.probabilities(x))


def test_save_load_round_trip_continues_identically(name: str, tmp_path: Path) -> None:
    case, policy = trained(name, seed=4, steps=40)
    path = tmp_path / "policy"
    save(policy, path)
    loaded = load(path)
    assert type(loaded) is type(policy)
    assert isinstance(loaded, BasePolicy)
    assert play(case, loaded, 40, 60) == play(case, policy, 40, 60)
    x = ctx(case, 100)
    np.testing.assert_allclose(loaded.probabilities(x), policy.probabilities(x))


def test_select_batch_equals_repeated_select(name: str) -> None:
    """Deterministic policies must agree; the stochastic ones here also consume their generator exactly
    as repeated ``select`` does, so a batched run reproduces a looped one from the same state."""
    case, policy = trained(name)
    twin = copy.deepcopy(policy)
    xs = CONTEXTS[60:100] if case.contextual else None
    batch = policy.select_batch(xs, n=None if case.contextual else 40)
    assert batch.dtype == np.int64 and batch.shape == (40,)
    assert np.all((batch >= 0) & (batch < N_ARMS))
    assert batch.tolist() == [twin.select(ctx(case, t)) for t in range(60, 100)]
    assert policy.select_batch(CONTEXTS[:0] if case.contextual else None, n=None if case.contextual else 0
                               ).shape == (0,)


def test_update_batch_equals_update_loop(name: str) -> None:
    case, policy = trained(name, seed=5, steps=30)
    looped = copy.deepcopy(policy)
    arms = np.array([t % N_ARMS for t in range(30, 70)])
    rewards = REWARDS[np.arange(30, 70), arms]
    xs = CONTEXTS[30:70] if case.contextual else None
    policy.update_batch(arms, rewards, xs)
    for i, (arm, reward) in enumerate(zip(arms, rewards, strict=True)):
        looped.update(int(arm), float(reward), ctx(case, 30 + i))
    x = ctx(case, 70)
    np.testing.assert_allclose(policy.probabilities(x), looped.probabilities(x), atol=1e-9)
    assert play(case, policy, 70, 30) == play(case, looped, 70, 30)


def test_probabilities_are_a_distribution_matching_choices(name: str) -> None:
    """For stochastic policies the empirical frequency of N = 4000 selects from one learned state must
    match ``probabilities`` within 5 standard deviations of the difference: the binomial std
    sqrt(p (1 - p) / N), plus sqrt(p (1 - p) / D) when ``probabilities`` is itself a Monte Carlo estimate
    from D draws (p is floored at 1/N so a wrong zero cannot hide). 5 std over 13 cases x 3 arms gives a
    false alarm about once in 10^5 runs; the seeds are fixed, so the outcome is fixed too."""
    case, policy = trained(name)
    x = ctx(case, 60)
    p = policy.probabilities(x)
    assert p.shape == (N_ARMS,) and p.dtype == np.float64
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0, abs=1e-12)
    twin = copy.deepcopy(policy)
    assert play(case, policy, 60, 20) == play(case, twin, 60, 20), "probabilities() changed later choices"
    if case.deterministic:
        assert p.max() == 1.0
        assert twin.select(ctx(case, 80)) == int(np.argmax(policy.probabilities(ctx(case, 80))))
        return
    n = 4000
    sampler = copy.deepcopy(policy)
    x = ctx(case, 80)
    p = sampler.probabilities(x)
    freq = np.bincount([sampler.select(x) for _ in range(n)], minlength=N_ARMS) / n
    q = np.clip(p, 1.0 / n, 1.0 - 1.0 / n)
    std = np.sqrt(q * (1 - q) * (1.0 / n + (1.0 / case.mc_draws if case.mc_draws else 0.0)))
    assert np.all(np.abs(freq - p) <= 5 * std), f"p={p}, frequencies={freq}"


def test_arm_scores_are_deterministic_and_change_nothing(name: str) -> None:
    case, policy = trained(name)
    before = copy.deepcopy(policy)
    x = ctx(case, 60)
    scores = policy.arm_scores(x)
    assert scores.shape == (N_ARMS,) and scores.dtype == np.float64
    np.testing.assert_array_equal(policy.arm_scores(x), scores)
    assert_same_state(policy.state_dict(), before.state_dict())  # the generator state included
    if case.deterministic:
        assert policy.select(x) == int(np.argmax(scores))
        policy = copy.deepcopy(before)
    assert play(case, policy, 60, 20) == play(case, before, 60, 20), "arm_scores() changed later choices"
    if not case.contextual:
        return
    with pytest.raises(ValueError, match=rf"this policy is contextual: pass a context vector of dimension {DIM}"):
        policy.arm_scores()
    with pytest.raises(ValueError, match=rf"context must have shape \({DIM},\), got \({DIM + 1},\)"):
        policy.arm_scores(np.ones(DIM + 1))
    with pytest.raises(ValueError, match="context contains NaN or inf"):
        policy.arm_scores(np.full(DIM, np.nan))


def test_select_topk(name: str) -> None:
    case, policy = trained(name)
    x = ctx(case, 60)
    slate = policy.select_topk(x, k=N_ARMS)
    assert slate.dtype == np.int64 and sorted(slate.tolist()) == list(range(N_ARMS))
    assert len(set(policy.select_topk(x, k=2).tolist())) == 2
    with pytest.raises(ValueError, match=rf"k must be <= n_arms \({N_ARMS}\), got {N_ARMS + 1}"):
        policy.select_topk(x, k=N_ARMS + 1)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        policy.select_topk(x, k=0)


def test_add_and_remove_arms(name: str) -> None:
    case, policy = trained(name)
    assert policy.add_arm() == N_ARMS
    assert policy.n_arms == N_ARMS + 1
    x = ctx(case, 60)
    p = policy.probabilities(x)
    assert p.shape == (N_ARMS + 1,) and p.sum() == pytest.approx(1.0)
    chosen = play(case, policy, 60, 40)
    assert all(0 <= a <= N_ARMS for a in chosen)
    policy.remove_arm(1)
    assert policy.n_arms == N_ARMS
    assert policy.probabilities(x).shape == (N_ARMS,)
    twin = BasePolicy.from_state_dict(copy.deepcopy(policy.state_dict()))
    assert play(case, twin, 100, 30) == play(case, policy, 100, 30)
    while policy.n_arms > 1:
        policy.remove_arm(policy.n_arms - 1)
    assert policy.select(x) == 0
    np.testing.assert_array_equal(policy.probabilities(x), [1.0])
    with pytest.raises(ValueError, match="cannot remove the last arm"):
        policy.remove_arm(0)


def test_bad_input_raises_clearly(name: str) -> None:
    case, policy = trained(name, steps=10)
    x = ctx(case, 10)
    with pytest.raises(ValueError, match="reward must be finite, got nan"):
        policy.update(0, float("nan"), x)
    with pytest.raises(ValueError, match="reward must be finite, got inf"):
        policy.update(0, float("inf"), x)
    with pytest.raises(ValueError, match="rewards contain NaN or inf"):
        policy.update_batch([0, 1], [0.5, float("-inf")], None if x is None else np.stack([x, x]))
    out_of_range = rf"arm {N_ARMS} is out of range: this policy has arms 0\.\.{N_ARMS - 1}"
    with pytest.raises(ValueError, match=out_of_range):
        policy.update(N_ARMS, 0.5, x)
    with pytest.raises(ValueError, match=r"arm -1 is out of range"):
        policy.update(-1, 0.5, x)
    with pytest.raises(TypeError, match="arm must be an int, got float"):
        policy.update(1.0, 0.5, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"got 2 arms but 3 contexts|shapes \(2,\) and \(3,\)"):
        policy.update_batch([0, 1], [0.5, 0.5, 0.5], None if x is None else np.stack([x, x, x]))
    if not case.contextual:
        return
    assert x is not None
    missing = rf"this policy is contextual: pass a context vector of dimension {DIM}"
    with pytest.raises(ValueError, match=missing):
        policy.select()
    with pytest.raises(ValueError, match="this policy is contextual"):
        policy.update(0, 0.5)
    with pytest.raises(ValueError, match="this policy is contextual"):
        policy.probabilities()
    with pytest.raises(ValueError, match=rf"context must have shape \({DIM},\), got \({DIM + 1},\)"):
        policy.select(np.ones(DIM + 1))
    with pytest.raises(ValueError, match=rf"context must have shape \({DIM},\), got \({DIM - 1},\)"):
        policy.update(0, 0.5, np.ones(DIM - 1))
    with pytest.raises(ValueError, match=rf"context must have shape \({DIM},\)"):
        policy.probabilities(np.ones((1, DIM)))
    with pytest.raises(ValueError, match=rf"contexts must have shape \(n, {DIM}\), got \(5, {DIM + 2}\)"):
        policy.select_batch(np.ones((5, DIM + 2)))
    with pytest.raises(ValueError, match="context contains NaN or inf"):
        policy.select(np.full(DIM, np.nan))
    with pytest.raises(ValueError, match="contexts contain NaN or inf"):
        policy.update_batch([0], [0.5], np.full((1, DIM), np.inf))
