"""Environments: the protocol, seeding, each environment's rewards, and the adversarial constructions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from banditkit.base import BasePolicy
from banditkit.envs import (
    AdversarialEnv,
    BernoulliEnv,
    DriftingEnv,
    Environment,
    GaussianEnv,
    LinearContextualEnv,
    SupervisedEnv,
)
from banditkit.envs.base import BaseEnvironment
from banditkit.policies.baselines import RandomPolicy
from banditkit.policies.exp3 import EXP3
from banditkit.policies.ucb1 import UCB1
from banditkit.simulate import simulate
from banditkit.validation import FloatArray
from tests.banditkit.states import assert_same_state


def blobs(n: int = 600, k: int = 3, dim: int = 2, spread: float = 0.5,
          seed: int = 0) -> tuple[FloatArray, Any]:
    """Gaussian blobs around ``k`` well separated centers."""
    rng = np.random.default_rng(seed)
    centers = 4.0 * np.eye(k, dim) if k <= dim else rng.normal(0.0, 4.0, size=(k, dim))
    y = rng.integers(0, k, size=n)
    X = centers[y] + spread * rng.normal(size=(n, dim))
    return X, y


ENVS: dict[str, Callable[[int], BaseEnvironment]] = {
    "bernoulli": lambda seed: BernoulliEnv([0.1, 0.5, 0.9], seed=seed),
    "gaussian": lambda seed: GaussianEnv([0.0, 1.0, -1.0], std=[1.0, 0.5, 2.0], seed=seed),
    "linear": lambda seed: LinearContextualEnv(4, 5, noise=0.2, seed=seed),
    "rotate": lambda seed: DriftingEnv(3, 4, seed=seed, drift="rotate", period=50),
    "switch": lambda seed: DriftingEnv(3, 4, seed=seed, drift="switch", period=7),
    "adversarial": lambda seed: AdversarialEnv(3, first_phase=5, seed=seed),
    "supervised": lambda seed: SupervisedEnv(*blobs(50), seed=seed),
}


def trace(env: BaseEnvironment, n: int, arms: Callable[[int], int] = lambda t: t) -> dict[str, Any]:
    contexts, rewards, means = [], [], []
    for t in range(n):
        contexts.append(env.context())
        means.append(env.expected_rewards())
        rewards.append(env.pull(arms(t) % env.n_arms))
        env.step()
    return {"contexts": contexts, "rewards": rewards, "means": means}


ALL_KEYS = ("contexts", "rewards", "means")


def same(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...] = ALL_KEYS) -> bool:
    for key in keys:
        for x, y in zip(a[key], b[key], strict=True):
            if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
                return False
    return True


# --------------------------------------------------------------------------- every environment
@pytest.mark.parametrize("name", ENVS)
def test_follows_protocol(name: str) -> None:
    env = ENVS[name](0)
    assert isinstance(env, Environment)
    means = env.expected_rewards()
    assert means.shape == (env.n_arms,) and means.dtype == np.float64
    x = env.context()
    if env.dim is None:
        assert x is None
    else:
        assert x is not None and x.shape == (env.dim,)
    assert isinstance(env.pull(0), float)
    assert env.t == 0
    env.step()
    assert env.t == 1
    assert 0 <= env.optimal_arm() < env.n_arms


@pytest.mark.parametrize("name", ENVS)
def test_same_seed_same_sequence_and_reset_replays(name: str) -> None:
    a, b = ENVS[name](3), ENVS[name](3)
    first = trace(a, 60)
    assert same(first, trace(b, 60))
    a.reset()
    assert same(first, trace(a, 60))
    a.reset(3)
    assert same(first, trace(a, 60))


@pytest.mark.parametrize("name", ENVS)
def test_other_seed_other_stream_same_problem(name: str) -> None:
    env = ENVS[name](3)
    first = trace(env, 60)
    env.reset(4)
    second = trace(env, 60)
    keys = ("rewards",) if env.dim is None else ("contexts",)
    if name == "adversarial":  # means are a fixed schedule; only the Bernoulli draws change
        assert same(first, second, ("means",))
    assert not same(first, second, keys)
    if name in ("bernoulli", "gaussian"):
        assert same(first, second, ("means",))  # the problem does not change with the stream


@pytest.mark.parametrize("name", ENVS)
def test_contexts_do_not_depend_on_the_arms_pulled(name: str) -> None:
    a, b = ENVS[name](5), ENVS[name](5)
    assert same(trace(a, 40, lambda t: 0), trace(b, 40, lambda t: 7 * t + 1), ("contexts", "means"))


@pytest.mark.parametrize("name", ENVS)
def test_bad_arm_raises(name: str) -> None:
    env = ENVS[name](0)
    with pytest.raises(ValueError, match=f"arm {env.n_arms} is out of range"):
        env.pull(env.n_arms)
    with pytest.raises(TypeError, match="arm must be an int"):
        env.pull(1.0)  # type: ignore[arg-type]


def test_seed_kinds() -> None:
    a = BernoulliEnv([0.5, 0.5], seed=np.random.default_rng(1))
    b = BernoulliEnv([0.5, 0.5], seed=np.random.default_rng(1))
    assert same(trace(a, 30), trace(b, 30))
    unseeded = BernoulliEnv([0.5, 0.5])
    replay = trace(unseeded, 30)
    unseeded.reset()
    assert same(replay, trace(unseeded, 30))  # even unseeded, reset() replays
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        BernoulliEnv([0.5], seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        BernoulliEnv([0.5], seed="1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- stochastic
def test_bernoulli_rewards_match_means() -> None:
    env = BernoulliEnv([0.1, 0.5, 0.9], seed=0)
    draws = np.array([[env.pull(a) for a in range(3)] for _ in range(4000)])
    assert set(np.unique(draws)) == {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(axis=0), [0.1, 0.5, 0.9], atol=0.03)  # 4 standard errors


@pytest.mark.parametrize(
    ("means", "match"),
    [([], "non-empty 1-D"), ([[0.5]], "non-empty 1-D"), ([0.5, 1.5], r"in \[0, 1\]"), ([np.nan], "finite")],
)
def test_bernoulli_bad_means(means: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BernoulliEnv(means)


def test_gaussian_rewards_match_means_and_std() -> None:
    env = GaussianEnv([0.0, 3.0], std=[1.0, 0.1], seed=0)
    draws = np.array([[env.pull(a) for a in range(2)] for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(axis=0), [0.0, 3.0], atol=0.07)
    np.testing.assert_allclose(draws.std(axis=0), [1.0, 0.1], rtol=0.05)
    assert GaussianEnv([1.0, 2.0], std=0.0).pull(1) == 2.0
    with pytest.raises(ValueError, match="std must be finite and >= 0"):
        GaussianEnv([0.0], std=-1.0)
    with pytest.raises(ValueError, match="std must be a scalar or one value per arm"):
        GaussianEnv([0.0, 1.0], std=[1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- linear and drifting
def test_linear_env_rewards() -> None:
    env = LinearContextualEnv(n_arms=4, dim=6, noise=0.3, seed=0)
    thetas = env.thetas
    np.testing.assert_allclose(np.linalg.norm(thetas, axis=1), 1.0)
    noise = []
    for _ in range(2000):
        x = env.context()
        assert np.linalg.norm(x) == pytest.approx(1.0)
        np.testing.assert_allclose(env.expected_rewards(), thetas @ x)
        noise.append(env.pull(2) - thetas[2] @ x)
        env.step()
    assert np.mean(noise) == pytest.approx(0.0, abs=0.03)
    assert np.std(noise) == pytest.approx(0.3, rel=0.05)
    explicit = LinearContextualEnv(2, 3, noise=0.0, thetas=[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], seed=1)
    x = explicit.context()
    assert explicit.pull(1) == pytest.approx(2.0 * x[1])
    with pytest.raises(ValueError, match=r"thetas must have shape \(2, 3\)"):
        LinearContextualEnv(2, 3, thetas=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"noise must be >= 0\.0"):
        LinearContextualEnv(2, 3, noise=-0.1)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        LinearContextualEnv(2, 0)


def test_switching_drift_shifts_parameters_every_period() -> None:
    env = DriftingEnv(3, 4, seed=0, drift="switch", period=10)
    base = env.thetas
    for t in range(1, 40):
        env.step()
        np.testing.assert_array_equal(env.thetas, np.roll(base, -((t // 10) % 3), axis=0))
    assert env.t == 39


def test_rotating_drift_keeps_norms_and_completes_a_turn() -> None:
    env = DriftingEnv(4, 5, seed=0, drift="rotate", period=100)
    start = env.thetas
    seen = []
    for _ in range(100):
        np.testing.assert_allclose(np.linalg.norm(env.thetas, axis=1), 1.0)
        seen.append(env.thetas)
        env.step()
    np.testing.assert_allclose(env.thetas, start, atol=1e-12)
    cosines = np.einsum("kd,kd->k", seen[25], start)
    np.testing.assert_allclose(cosines, 0.0, atol=1e-12)  # a quarter turn later: orthogonal
    np.testing.assert_allclose(np.einsum("kd,kd->k", seen[1], start), np.cos(2 * np.pi / 100))


def test_drifting_bad_arguments() -> None:
    with pytest.raises(ValueError, match="drift must be one of rotate, switch, got 'spin'"):
        DriftingEnv(2, 3, drift="spin")
    with pytest.raises(ValueError, match="needs dim >= 2"):
        DriftingEnv(2, 1, drift="rotate")
    with pytest.raises(ValueError, match="period must be >= 1"):
        DriftingEnv(2, 3, period=0)
    DriftingEnv(2, 1, drift="switch")  # one dimension is enough to switch


# --------------------------------------------------------------------------- adversarial
def test_adversarial_phases_grow_and_best_arm_leads_every_round() -> None:
    env = AdversarialEnv(4, gap=0.25, first_phase=3, growth=2.0, seed=0)
    phases, leads = [], []
    for _ in range(3 + 6 + 12 + 24 + 1):
        means = env.expected_rewards()
        phases.append(env.phase())
        others = np.delete(means, env.best_arm)
        assert np.all(others == others[0])
        leads.append(means[env.best_arm] - others[0])
        env.step()
    assert phases == [0] * 3 + [1] * 6 + [2] * 12 + [3] * 24 + [4]
    np.testing.assert_allclose(leads, 0.25)
    assert {AdversarialEnv(3, seed=s).best_arm for s in range(20)} == {0, 1, 2}


def test_adversarial_sequence_is_oblivious() -> None:
    a, b = AdversarialEnv(3, seed=1), AdversarialEnv(3, seed=1)
    ra, rb = [], []
    for _ in range(500):  # whatever is pulled, every arm's reward in a round is fixed
        ra.append([a.pull(k) for k in range(3)])
        rb.append([b.pull(k) for k in (2, 1, 0)][::-1])
        a.step()
        b.step()
    np.testing.assert_array_equal(ra, rb)


def test_exp3_beats_uniform_and_ucb1_on_the_adversarial_env() -> None:
    # the best arm leads by 0.2 in every round, so uniform play's regret is 0.2 * (K - 1) / K = 0.133
    regrets: dict[str, list[float]] = {"uniform": [], "exp3": [], "ucb1": []}
    for seed in range(3):
        env = AdversarialEnv(3, seed=seed)
        regrets["uniform"].append(simulate(RandomPolicy(3, seed=seed), env, 3000).regret.mean())
        regrets["exp3"].append(simulate(EXP3(3, gamma=0.1, seed=seed), env, 3000).regret.mean())
        ucb1 = simulate(UCB1(3, seed=seed), env, 3000, record_propensities=False)
        regrets["ucb1"].append(ucb1.regret.mean())
    mean = {k: float(np.mean(v)) for k, v in regrets.items()}
    assert mean["uniform"] == pytest.approx(0.2 * 2 / 3, abs=0.01)
    assert mean["exp3"] < 0.5 * mean["uniform"]
    assert mean["exp3"] < mean["ucb1"]


class SampleMeanGreedy(BasePolicy):
    """Deterministic: the best sample mean, ties to the lowest index."""

    def __init__(self, n_arms: int, *, dim: int | None = None) -> None:
        super().__init__(n_arms, dim=dim)
        self.sums = np.zeros(n_arms)
        self.counts = np.zeros(n_arms)

    def _select(self, context: FloatArray | None) -> int:
        return int(np.argmax(self.sums / np.maximum(self.counts, 1) + (self.counts == 0)))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        return np.eye(self.n_arms)[self._select(context)]

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        self.sums[arm] += reward
        self.counts[arm] += 1

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def _get_state(self) -> dict[str, Any]:
        return {"sums": self.sums.copy(), "counts": self.counts.copy()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.sums, self.counts = np.array(state["sums"]), np.array(state["counts"])

    def _add_arm(self) -> None:
        self.sums, self.counts = np.append(self.sums, 0.0), np.append(self.counts, 0.0)

    def _remove_arm(self, arm: int) -> None:
        self.sums, self.counts = np.delete(self.sums, arm), np.delete(self.counts, arm)


@pytest.mark.parametrize("make", [lambda: SampleMeanGreedy(3), lambda: UCB1(3, seed=0)],
                         ids=["greedy", "ucb1"])
def test_against_a_deterministic_policy_it_earns_nothing(make: Callable[[], BasePolicy]) -> None:
    policy = make()
    before = policy.state_dict()
    env = AdversarialEnv.against(policy, 1500, seed=0)
    assert_same_state(policy.state_dict(), before)  # built from a copy
    assert simulate(policy, env, 1500).mean_reward == 0.0
    uniform = simulate(RandomPolicy(3, seed=1), env, 1500).mean_reward
    assert uniform == pytest.approx(2 / 3, abs=0.04)
    exp3 = simulate(EXP3(3, seed=1), env, 1500).mean_reward
    assert exp3 > 0.6


def test_against_rejects_randomized_and_contextual_policies() -> None:
    with pytest.raises(ValueError, match="RandomPolicy randomizes"):
        AdversarialEnv.against(RandomPolicy(3, seed=0), 10)

    class Ctx(SampleMeanGreedy):
        contextual = True

    with pytest.raises(ValueError, match="Ctx is contextual; AdversarialEnv is context-free"):
        AdversarialEnv.against(Ctx(3, dim=2), 10)


def test_adversarial_explicit_table_and_bad_arguments() -> None:
    env = AdversarialEnv(2, means=[[1.0, 0.0], [0.0, 1.0]], seed=0)
    seen = []
    for _ in range(4):
        seen.append((env.pull(0), env.pull(1)))
        env.step()
    assert seen == [(1.0, 0.0), (0.0, 1.0)] * 2
    assert env.phase() == -1
    with pytest.raises(ValueError, match=r"means must have shape \(n_steps, n_arms=3\)"):
        AdversarialEnv(3, means=[[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"means must be finite and lie in \[0, 1\]"):
        AdversarialEnv(2, means=[[0.5, 1.5]])
    with pytest.raises(ValueError, match=r"gap must be > 0.0"):
        AdversarialEnv(2, gap=0.0)
    with pytest.raises(ValueError, match=r"growth must be >= 1\.0"):
        AdversarialEnv(2, growth=0.5)
    with pytest.raises(ValueError, match=r"best_arm must be in 0\.\.1"):
        AdversarialEnv(2, best_arm=2)


# --------------------------------------------------------------------------- supervised
def test_supervised_env_on_blobs() -> None:
    X, y = blobs(300, k=3, dim=3)
    env = SupervisedEnv(X, y, seed=0)
    assert (env.n_arms, env.dim, env.n_rows) == (3, 3, 300)
    rows = []
    for _ in range(300):  # one pass visits every row once
        x = env.context()
        label = env.label()
        i = int(np.flatnonzero(np.all(X == x, axis=1))[0])
        rows.append(i)
        assert label == y[i]
        assert [env.pull(a) for a in range(3)] == [float(a == y[i]) for a in range(3)]
        np.testing.assert_array_equal(env.expected_rewards(), np.eye(3)[y[i]])
        env.step()
    assert sorted(rows) == list(range(300)) and rows != list(range(300))
    second = []
    for _ in range(300):
        second.append(env.label())
        env.step()
    assert sorted(second) == sorted(y.tolist())


def test_supervised_env_in_order_and_string_labels() -> None:
    X = np.arange(8.0).reshape(4, 2)
    env = SupervisedEnv(X, np.array(["cat", "dog", "cat", "ant"]), shuffle=False)
    assert env.classes.tolist() == ["ant", "cat", "dog"]
    labels = []
    for _ in range(8):
        labels.append(env.label())
        env.step()
    assert labels == [1, 2, 1, 0] * 2


def test_supervised_env_is_learnable() -> None:
    X, y = blobs(600, k=3, dim=3, spread=0.5)
    centers = 4.0 * np.eye(3)

    class NearestCenter(SampleMeanGreedy):
        contextual = True

        def _select(self, context: FloatArray | None) -> int:
            assert context is not None
            return int(np.argmin(np.linalg.norm(centers - context, axis=1)))

    env = SupervisedEnv(X, y, seed=0)
    oracle = simulate(NearestCenter(3, dim=3), env, 600)
    assert oracle.mean_reward > 0.97
    uniform = simulate(RandomPolicy(3, seed=0), env, 600)
    assert uniform.mean_reward == pytest.approx(1 / 3, abs=0.07)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.ones((3, 2)), [0, 1], "y must be 1-D with one label per row of X"),
        (np.ones(3), [0, 1, 0], "X must be a non-empty 2-D array"),
        (np.ones((3, 2)), [1, 1, 1], "at least 2 distinct labels"),
        (np.array([[np.nan, 1.0], [1.0, 1.0]]), [0, 1], "X contains NaN or inf"),
    ],
)
def test_supervised_env_bad_data(X: Any, y: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SupervisedEnv(X, y)


class DiscountedRidge(BasePolicy):
    """Epsilon-greedy on per-arm ridge regressions that all forget at rate ``gamma`` every step."""

    contextual = True

    def __init__(self, n_arms: int, *, dim: int, gamma: float = 1.0, seed: int | None = None) -> None:
        super().__init__(n_arms, dim=dim, seed=seed)
        self.gamma = gamma
        self.A = np.stack([np.eye(dim)] * n_arms)
        self.b = np.zeros((n_arms, dim))

    def _select(self, context: FloatArray | None) -> int:
        if self._rng.random() < 0.05:
            return int(self._rng.integers(self.n_arms))
        theta = np.linalg.solve(self.A, self.b[..., None])[..., 0]
        return int(np.argmax(theta @ context))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        return np.full(self.n_arms, 1.0 / self.n_arms)

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        assert self.dim is not None
        self.A = self.gamma * self.A + (1 - self.gamma) * np.eye(self.dim)
        self.b *= self.gamma
        self.A[arm] += np.outer(context, context)
        self.b[arm] += reward * np.asarray(context)

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self.dim, "gamma": self.gamma}

    def _get_state(self) -> dict[str, Any]:
        return {"A": self.A, "b": self.b}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.A, self.b = np.array(state["A"]), np.array(state["b"])

    def _add_arm(self) -> None:
        raise NotImplementedError

    def _remove_arm(self, arm: int) -> None:
        raise NotImplementedError


@pytest.mark.parametrize("drift", ["rotate", "switch"])
def test_drifting_env_rewards_forgetting(drift: str) -> None:
    def share(gamma: float, env: DriftingEnv) -> float:
        policy = DiscountedRidge(3, dim=4, gamma=gamma, seed=0)
        result = simulate(policy, env, 3000, record_propensities=False)
        return float(result.expected_rewards[1000:].mean() / result.optimal_rewards[1000:].mean())

    stationary = LinearContextualEnv(3, 4, seed=0)
    assert share(1.0, stationary) > 0.9  # the learner itself works
    env = DriftingEnv(3, 4, seed=0, drift=drift, period=1000)
    forgetful, stubborn = share(0.98, env), share(1.0, env)
    assert forgetful > 0.8  # measured: 0.87 (both drifts)
    assert stubborn < 0.1  # measured: 0.03 (rotate), -0.28 (switch)

