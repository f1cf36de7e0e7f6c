"""Ablations: every policy, and LinUCB's alpha, on the linear and the drifting environments.

Run with ``pytest benchmarks/test_ablation.py -s`` (add ``--benchmark-enable`` for timings). Each case
simulates ``N_STEPS`` rounds for each of ``SEEDS`` and records, in ``benchmark.extra_info``, the mean
reward, the mean per-step regret, the mean reward over the last 20% of the rounds as a share of the
oracle's (the policy that knows the parameters), and the time per decision. A table is printed at
the end. Rewards on these environments lie around [-1, 1], so the policies that need rewards in [0, 1]
(EXP3, Beta-Bernoulli Thompson sampling) run wrapped in ``Normalized(..., QuantileNormalizer())``;
Thompson sampling uses the Gaussian likelihood.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from banditkit.base import Policy
from banditkit.envs.base import BaseEnvironment
from banditkit.envs.drifting import DriftingEnv
from banditkit.envs.linear import LinearContextualEnv
from banditkit.normalizers import Normalized, QuantileNormalizer
from banditkit.policies.baselines import RandomPolicy
from banditkit.policies.epsilon_greedy import EpsilonGreedy
from banditkit.policies.exp3 import EXP3
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB
from banditkit.policies.thompson import ThompsonSampling
from banditkit.policies.ucb1 import UCB1
from banditkit.simulate import simulate

K, DIM, NOISE = 5, 16, 0.1
N_STEPS = 4000
SEEDS = (0, 1)
ALPHAS = (0.0, 0.1, 0.3, 1.0, 3.0)

ENVS: dict[str, Callable[[int], BaseEnvironment]] = {
    "linear": lambda seed: LinearContextualEnv(K, DIM, noise=NOISE, seed=seed),
    "drifting": lambda seed: DriftingEnv(K, DIM, noise=NOISE, seed=seed, drift="rotate", period=5000),
}

PolicyFactory = Callable[[int], Policy]
POLICIES: dict[str, PolicyFactory] = {
    "LinUCB(alpha=0.3)": lambda s: LinUCB(K, DIM, alpha=0.3, seed=s),
    "LinUCB(alpha=0.3, discount=0.99)": lambda s: LinUCB(K, DIM, alpha=0.3, discount=0.99, seed=s),
    "LinUCB(alpha=0.3, discount=0.95)": lambda s: LinUCB(K, DIM, alpha=0.3, discount=0.95, seed=s),
    "LinTS(v=0.1)": lambda s: LinearThompsonSampling(K, DIM, v=0.1, seed=s),
    "EpsilonGreedy(0.1)": lambda s: EpsilonGreedy(K, epsilon=0.1, seed=s),
    "EXP3(0.1)+quantile": lambda s: Normalized(EXP3(K, gamma=0.1, seed=s), QuantileNormalizer()),
    "Thompson(gaussian)": lambda s: ThompsonSampling(K, likelihood="gaussian", seed=s),
    "UCB1": lambda s: UCB1(K, seed=s),
    "Random": lambda s: RandomPolicy(K, seed=s),
}
ALPHA_POLICIES: dict[str, PolicyFactory] = {
    f"LinUCB(alpha={alpha:g})": (lambda s, a=alpha: LinUCB(K, DIM, alpha=a, seed=s)) for alpha in ALPHAS
}

RESULTS: list[dict[str, Any]] = []


def run_case(make_policy: PolicyFactory, env_name: str) -> dict[str, float]:
    """Mean statistics over ``SEEDS`` of one policy on one environment."""
    keys = ("mean_reward", "mean_regret", "tail_share", "us_per_step")
    stats: dict[str, list[float]] = {key: [] for key in keys}
    tail = N_STEPS - N_STEPS // 5
    for seed in SEEDS:
        env = ENVS[env_name](seed)
        policy = make_policy(seed)
        start = time.perf_counter()
        result = simulate(policy, env, N_STEPS, seed=100 + seed, record_propensities=False)
        stats["us_per_step"].append((time.perf_counter() - start) / N_STEPS * 1e6)
        stats["mean_reward"].append(result.mean_reward)
        stats["mean_regret"].append(float(result.regret.mean()))
        oracle = float(result.optimal_rewards[tail:].mean())
        stats["tail_share"].append(float(result.expected_rewards[tail:].mean()) / oracle)
    return {key: float(np.mean(values)) for key, values in stats.items()}


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if RESULTS:
        header = (f"{'environment':<11} {'policy':<30} {'reward':>8} {'regret':>8} {'last20%/oracle':>15} "
                  f"{'us/step':>8}")
        lines = [
            "",
            f"Ablation: K={K}, d={DIM}, noise={NOISE}, {N_STEPS} steps, mean over seeds {SEEDS}",
            header,
            "-" * len(header),
            *(f"{r['env']:<11} {r['policy']:<30} {r['mean_reward']:>8.4f} {r['mean_regret']:>8.4f} "
              f"{r['tail_share']:>15.3f} {r['us_per_step']:>8.1f}" for r in RESULTS),
        ]
        print_table(request, lines)


def print_table(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print past pytest's output capture (module teardown has no ``capsys``)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines), flush=True)


def record(benchmark: Any, env_name: str, name: str, stats: dict[str, float]) -> None:
    benchmark.extra_info.update({"env": env_name, "policy": name, **stats})
    RESULTS.append({"env": env_name, "policy": name, **stats})


@pytest.mark.parametrize("env_name", list(ENVS))
@pytest.mark.parametrize("name", list(POLICIES))
def test_policy_ablation(benchmark: Any, env_name: str, name: str) -> None:
    benchmark.group = f"policies-{env_name}"
    with threadpool_limits(limits=1):
        stats = benchmark.pedantic(run_case, args=(POLICIES[name], env_name), rounds=1, iterations=1)
    record(benchmark, env_name, name, stats)
    assert np.isfinite(stats["mean_reward"])
    if name.startswith("LinUCB") and env_name == "linear":
        assert stats["tail_share"] > 0.9  # a contextual policy that learns gets close to the oracle


@pytest.mark.parametrize("env_name", list(ENVS))
@pytest.mark.parametrize("name", list(ALPHA_POLICIES))
def test_linucb_alpha_ablation(benchmark: Any, env_name: str, name: str) -> None:
    benchmark.group = f"linucb-alpha-{env_name}"
    with threadpool_limits(limits=1):
        stats = benchmark.pedantic(run_case, args=(ALPHA_POLICIES[name], env_name), rounds=1, iterations=1)
    record(benchmark, env_name, name, stats)
    assert np.isfinite(stats["mean_regret"])
