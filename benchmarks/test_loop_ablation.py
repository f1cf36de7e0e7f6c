"""The LASeR loop ablation: every bandit policy at each exploration value, and the methods that read labels,
on reduced built-in-world runs under each RM mode (opt-in: ``-m laser``).

    pytest benchmarks/test_loop_ablation.py --benchmark-only -m laser --benchmark-json ablation.json
    pytest benchmarks/test_loop_ablation.py --benchmark-only -m laser --quick   # CI-sized, under 3 minutes
    python -m benchmarks.report ablation.json --out docs/results/ablation

Each case times its runs (2 seeds in 2 worker processes) and stores in ``extra_info`` the dev accuracy per
domain and mean, in-domain share, lock-ins, the bandit reward's mean, the cumulative regret against the
oracle routing (from the per-step counterfactual rewards) and seconds per step by part
(:mod:`benchmarks.loop_ablation`). The grid, its sizes and the time it takes are in the README.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.loop_ablation import (
    CONTEXTUAL,
    FULL,
    INFORMATIVE_MODES,
    QUICK,
    Case,
    cases,
    check_summary,
    run_case,
)

pytestmark = pytest.mark.laser
#: The quick grid runs on a smaller world (built in about a minute when not cached).
QUICK_WORLD_SCALE = 0.25
CHANCE = 1 / 3  # three RMs
RESULTS: dict[str, dict[str, Any]] = {}


def _quick(config: pytest.Config) -> bool:
    return bool(config.getoption("quick", default=False))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        grid = cases(quick=_quick(metafunc.config))
        metafunc.parametrize("case", grid, ids=[c.id for c in grid])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The runs' folder, with the built-in world built (or found in the cache) before any case is timed."""
    from laser_app.config import RunConfig
    from laser_app.world import world_for

    world_for(RunConfig(world_scale=QUICK_WORLD_SCALE if _quick(request.config) else 1.0), progress=False)
    return tmp_path_factory.mktemp("loop-ablation")


@pytest.mark.benchmark(group="laser-loop", timer=time.perf_counter)
def test_loop_case(benchmark: Any, case: Case, root: Path, request: pytest.FixtureRequest) -> None:
    quick = _quick(request.config)
    sizes, scale = (QUICK, QUICK_WORLD_SCALE) if quick else (FULL, 1.0)
    info: dict[str, Any] = {}

    def run() -> None:
        info.update(run_case(case, root, sizes=sizes, world_scale=scale))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(info, sizes=dict(sizes), world_scale=scale)
    RESULTS[case.id] = info
    assert not check_summary(info), check_summary(info)
    if case.method in ("oracle",):
        assert info["in_domain_share"] == pytest.approx(1.0)  # the oracle routes every task to its RM
        assert info["regret"] == pytest.approx(0.0, abs=1e-9)  # by definition, against itself


def best_shares(results: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Per (contextual policy, informative mode) that ran: its best in-domain share over exploration values."""
    best: dict[tuple[str, str], float] = {}
    for r in results.values():
        key = (r["policy"], r["mode"])
        if r["policy"] in CONTEXTUAL and r["mode"] in INFORMATIVE_MODES and r["in_domain_share"] is not None:
            best[key] = max(best.get(key, 0.0), r["in_domain_share"])
    return best


@pytest.mark.benchmark(group="laser-loop-check")
def test_contextual_policies_route_above_chance_at_their_best_exploration(benchmark: Any) -> None:
    """At its best exploration value, each contextual policy sends more than a third of each informative
    mode's batches to the task's own RM (runs after the cases; skipped when they were deselected). It takes
    the benchmark fixture only so that ``--benchmark-only`` runs it."""
    best = benchmark.pedantic(best_shares, args=(RESULTS,), rounds=1, iterations=1)
    if not best:
        pytest.skip("no contextual policy ran on an informative mode (deselected)")
    low = {f"{p} on {m}": round(v, 3) for (p, m), v in best.items() if v <= CHANCE}
    assert not low, f"best in-domain share at or below chance ({CHANCE:.2f}): {low}"
