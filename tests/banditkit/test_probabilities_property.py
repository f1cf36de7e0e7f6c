"""Property: any sequence of valid feedback and arm changes leaves ``probabilities`` a distribution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditkit.base import BasePolicy
from banditkit.policies.baselines import FixedArm, RandomPolicy, RoundRobin
from banditkit.policies.epsilon_greedy import EpsilonGreedy
from banditkit.policies.exp3 import EXP3
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB
from banditkit.policies.thompson import ThompsonSampling
from banditkit.policies.ucb1 import UCB1

DIM = 3


def linucb() -> BasePolicy:
    return LinUCB(2, DIM, alpha=1.0, ridge=1.0, discount=0.9, seed=0)


def lin_ts() -> BasePolicy:
    return LinearThompsonSampling(2, DIM, v=0.5, ridge=1.0, seed=0)


# (factory, needs rewards in [0, 1])
POLICIES: dict[str, tuple[Callable[[], BasePolicy], bool]] = {
    "linucb": (linucb, False),
    "lin-ts": (lin_ts, False),
    "thompson-bernoulli": (lambda: ThompsonSampling(2, prior_alpha=0.5, prior_beta=0.5, seed=0), True),
    "thompson-gaussian": (lambda: ThompsonSampling(2, likelihood="gaussian", prior_var=0.01, seed=0), False),
    "exp3": (lambda: EXP3(2, gamma=0.05, seed=0), True),
    "epsilon-greedy": (lambda: EpsilonGreedy(2, epsilon=0.2, decay=0.5, seed=0), False),
    "ucb1": (lambda: UCB1(2), False),
    "random": (lambda: RandomPolicy(2, seed=0), False),
    "fixed-arm": (lambda: FixedArm(2, arm=0), False),
    "round-robin": (lambda: RoundRobin(2, period=2), False),
}

contexts = st.lists(st.floats(-5.0, 5.0), min_size=DIM, max_size=DIM)
unit_reward = st.floats(0.0, 1.0)
any_reward = st.floats(-1e4, 1e4)


def operations(reward: st.SearchStrategy[float]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Feedback one at a time or in batches, selections, and arms added or removed (indices are taken
    modulo the number of arms at the time)."""
    op = st.one_of(
        st.tuples(st.just("update"), st.integers(0, 99), reward, contexts),
        st.tuples(st.just("batch"), st.lists(st.tuples(st.integers(0, 99), reward, contexts), max_size=8)),
        st.tuples(st.just("select"), contexts),
        st.tuples(st.just("add")),
        st.tuples(st.just("remove"), st.integers(0, 99)),
    )
    return st.lists(op, max_size=25)


def apply(policy: BasePolicy, ops: list[tuple[Any, ...]]) -> None:
    contextual = policy.contextual
    for kind, *args in ops:
        if kind == "update":
            arm, reward, x = args
            policy.update(arm % policy.n_arms, reward, x if contextual else None)
        elif kind == "batch":
            (rows,) = args
            arms = [a % policy.n_arms for a, _, _ in rows]
            policy.update_batch(np.array(arms, dtype=np.int64), [r for _, r, _ in rows],
                                np.array([x for _, _, x in rows]).reshape(-1, DIM) if contextual else None)
        elif kind == "select":
            policy.select(args[0] if contextual else None)
        elif kind == "add":
            policy.add_arm()
        elif policy.n_arms > 1:
            arm = args[0] % policy.n_arms
            if not (isinstance(policy, FixedArm) and arm == policy.arm):  # FixedArm refuses that one
                policy.remove_arm(arm)
        check(policy, contextual)


def check(policy: BasePolicy, contextual: bool) -> None:
    x = np.linspace(-1.0, 1.0, DIM) if contextual else None
    p = policy.probabilities(x)
    assert p.shape == (policy.n_arms,)
    assert np.all(np.isfinite(p)) and np.all(p >= 0.0)
    assert abs(p.sum() - 1.0) < 1e-9
    assert 0 <= policy.select(x) < policy.n_arms


def property_test(name: str) -> Callable[[], None]:
    make, unit = POLICIES[name]

    @settings(max_examples=50, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(ops=operations(unit_reward if unit else any_reward))
    def test(ops: list[tuple[Any, ...]]) -> None:
        apply(make(), ops)

    return test


test_linucb = property_test("linucb")
test_lin_ts = property_test("lin-ts")
test_thompson_bernoulli = property_test("thompson-bernoulli")
test_thompson_gaussian = property_test("thompson-gaussian")
test_exp3 = property_test("exp3")
test_epsilon_greedy = property_test("epsilon-greedy")
test_ucb1 = property_test("ucb1")
test_random = property_test("random")
test_fixed_arm = property_test("fixed-arm")
test_round_robin = property_test("round-robin")
