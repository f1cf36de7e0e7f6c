"""Online decisions per second: banditkit's LinUCB against peer libraries and a bare numpy loop.

One decision is one select and one update, K = 4 arms, contexts of dimension 32 and 384, BLAS pinned
to one thread (threadpoolctl). Peers come from the ``peers`` extra (``pip install -e .[peers]``);
each is skipped when missing. Contexts, rewards and each library's input format (dicts for river,
text lines for Vowpal Wabbit) are prepared before timing, so only the libraries' own work is timed.
Each library runs until ``BUDGET_S`` seconds or ``MAX_DECISIONS[d]`` decisions pass, after a short
warm-up. Run with ``pytest benchmarks/test_peers.py -s``; a table is printed at the end.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from banditkit.policies.linucb import LinUCB

K = 4
DIMS = (32, 384)
ALPHA = 1.0
BUDGET_S = 1.5
WARMUP = 20
MAX_DECISIONS = {32: 60_000, 384: 8_000}

Step = Callable[[int], None]  # runs decision t (select, then update with that round's reward)
RATES: dict[tuple[str, int], float] = {}


@dataclass
class Problem:
    contexts: np.ndarray  # (n, d), unit rows
    rewards: np.ndarray  # (n, K): x . theta_k + noise, fixed in advance


_PROBLEMS: dict[int, Problem] = {}


def problem(d: int) -> Problem:
    if d not in _PROBLEMS:
        rng = np.random.default_rng(d)
        n = MAX_DECISIONS[d] + WARMUP
        x = rng.normal(size=(n, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        theta = rng.normal(size=(K, d))
        theta /= np.linalg.norm(theta, axis=1, keepdims=True)
        _PROBLEMS[d] = Problem(x, x @ theta.T + 0.1 * rng.normal(size=(n, K)))
    return _PROBLEMS[d]


# --------------------------------------------------------------------------- one step function per library
def banditkit_step(d: int) -> Step:
    p = problem(d)
    policy = LinUCB(K, d, alpha=ALPHA, seed=0)

    def step(t: int) -> None:
        x = p.contexts[t]
        arm = policy.select(x)
        policy.update(arm, float(p.rewards[t, arm]), x)

    return step


def bare_numpy_step(d: int) -> Step:
    """The 20-line reference: per-arm inverse kept by Sherman-Morrison, one batched matmul per decision."""
    p = problem(d)
    a_inv = np.stack([np.eye(d)] * K)
    b = np.zeros((K, d))

    stacked = a_inv.reshape(K * d, d)  # a view: one gemv gives every arm's A^{-1} x

    def step(t: int) -> None:
        x = p.contexts[t]
        ax = (stacked @ x).reshape(K, d)
        ucb = np.einsum("kd,kd->k", b, ax) + ALPHA * np.sqrt(ax @ x)
        arm = int(np.argmax(ucb))
        u = ax[arm]
        a_inv[arm] -= np.outer(u, u / (1.0 + x @ u))
        b[arm] += p.rewards[t, arm] * x

    return step


def mabwiser_step(d: int) -> Step:
    mab_module = pytest.importorskip("mabwiser.mab")
    p = problem(d)
    mab = mab_module.MAB(arms=list(range(K)), learning_policy=mab_module.LearningPolicy.LinUCB(alpha=ALPHA),
                         seed=0)
    rows = p.contexts[:, None, :]  # one-row 2-D views
    mab.fit(list(range(K)), [0.0] * K, p.contexts[-K:])  # MABWiser predicts only after a first fit

    def step(t: int) -> None:
        arm = int(mab.predict(rows[t]))
        mab.partial_fit([arm], [float(p.rewards[t, arm])], rows[t])

    return step


def contextualbandits_step(d: int) -> Step:
    online = pytest.importorskip("contextualbandits.online")
    p = problem(d)
    model = online.LinUCB(nchoices=K, alpha=ALPHA, method="sm", random_state=1)
    rows = p.contexts[:, None, :]

    def step(t: int) -> None:
        arm = int(model.predict(rows[t])[0])
        model.partial_fit(rows[t], np.array([arm]), np.array([p.rewards[t, arm]]))

    return step


def river_step(d: int) -> Step:
    bandit = pytest.importorskip("river.bandit")
    p = problem(d)
    policy = bandit.LinUCBDisjoint(alpha=ALPHA, seed=0)
    arms = list(range(K))
    dicts = [dict(enumerate(row.tolist())) for row in p.contexts[: _needed(d)]]

    def step(t: int) -> None:
        arm = policy.pull(arms, context=dicts[t])
        policy.update(arm, dicts[t], float(p.rewards[t, arm]))

    return step


def vowpalwabbit_step(d: int) -> Step:
    vw_module = pytest.importorskip("vowpalwabbit")
    p = problem(d)
    vw = vw_module.Workspace("--cb_explore_adf --squarecb --quiet -q sa", enable_logging=False)
    rng = np.random.default_rng(0)
    actions = [f"|a a{k}" for k in range(K)]
    shared = ["shared |s " + " ".join(f"f{i}:{v:.6f}" for i, v in enumerate(row))
              for row in p.contexts[: _needed(d)]]

    def step(t: int) -> None:
        example = [shared[t], *actions]
        pmf = np.asarray(vw.predict(example))
        arm = int(rng.choice(K, p=pmf / pmf.sum()))
        example[1 + arm] = f"0:{-p.rewards[t, arm]:.6f}:{pmf[arm]:.6f} {actions[arm]}"  # cost = -reward
        vw.learn(example)

    return step


PEER_RATES_GUESS = {32: 20_000, 384: 3_000}  # upper estimates, only to size the prepared inputs


def _needed(d: int) -> int:
    return min(MAX_DECISIONS[d], int(PEER_RATES_GUESS[d] * BUDGET_S * 1.5)) + WARMUP


LIBRARIES: dict[str, Callable[[int], Step]] = {
    "banditkit LinUCB": banditkit_step,
    "bare numpy Sherman-Morrison": bare_numpy_step,
    "mabwiser LinUCB": mabwiser_step,
    "contextualbandits LinUCB (sm)": contextualbandits_step,
    "river LinUCBDisjoint": river_step,
    "vowpalwabbit cb_explore_adf squarecb": vowpalwabbit_step,
}


def decisions_per_second(step: Step, d: int, limit: int) -> float:
    for t in range(WARMUP):
        step(t)
    start = time.perf_counter()
    deadline = start + BUDGET_S
    t = WARMUP
    while t < WARMUP + limit and time.perf_counter() < deadline:
        step(t)
        t += 1
    return (t - WARMUP) / (time.perf_counter() - start)


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not RATES:
        return
    lines = ["", f"Decisions per second (select + update), K={K}, one BLAS thread", ""]
    header = f"{'library':<38}" + "".join(f"{f'd={d}':>12}{'vs banditkit':>14}" for d in DIMS)
    lines += [header, "-" * len(header)]
    for name in LIBRARIES:
        cells = []
        for d in DIMS:
            rate, ours = RATES.get((name, d)), RATES.get(("banditkit LinUCB", d))
            cells.append(f"{rate:>12,.0f}" if rate else f"{'-':>12}")
            cells.append(f"{rate / ours:>13.2f}x" if rate and ours else f"{'-':>14}")
        lines.append(f"{name:<38}" + "".join(cells))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines), flush=True)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("library", list(LIBRARIES))
def test_decisions_per_second(benchmark: Any, library: str, d: int) -> None:
    benchmark.group = f"peers-d{d}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = LIBRARIES[library](d)
        limit = MAX_DECISIONS[d] if library.startswith(("banditkit", "bare")) else _needed(d) - WARMUP
        with threadpool_limits(limits=1):
            rate = benchmark.pedantic(decisions_per_second, args=(step, d, limit), rounds=1, iterations=1)
    RATES[(library, d)] = rate
    benchmark.extra_info.update({"library": library, "d": d, "decisions_per_s": rate})
    assert rate > 0
