"""The loop ablation's grid, its per-case checks and ``python -m benchmarks.report`` on a benchmark JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.loop_ablation import EXPLORATION, MODES, REFERENCES, Case, cases, check_summary, summarize_case
from benchmarks.report import main

DOMAINS = ("math", "mcq", "yesno")


def test_the_grid_covers_every_policy_value_and_mode() -> None:
    grid = cases()
    per_mode = sum(len(g[1]) if g else 1 for g in EXPLORATION.values()) + len(REFERENCES)
    assert len(grid) == per_mode * len(MODES) and len({c.id for c in grid}) == len(grid)
    linucb = sorted(c.value for c in grid if c.policy == "linucb" and c.mode == "weak")
    assert linucb == [0.0, 0.01, 0.1, 0.5, 1.0, 2.0]
    assert {c.method for c in grid} >= {"prior-router", "laser-dev", "laser-gold", "agree-estimate", "oracle"}
    quick = cases(quick=True)
    assert {c.mode for c in quick} == {"weak"} and len(quick) == 5


def _seed(acc: float, share: float | None, regret: float | None) -> dict:
    return {"accuracy": {**dict.fromkeys(DOMAINS, acc), "mean": acc},
            "accuracy_start": {**dict.fromkeys(DOMAINS, 0.4), "mean": 0.4}, "in_domain_share": share,
            "lock_ins": 1, "reward_mean": 0.5, "regret": regret, "regret_per_step": None if regret is None else
            regret / 30, "seconds_per_step": {"generate": 0.05, "train": 0.03}, "steps": 30}


def test_a_case_summary_averages_seeds_and_its_check_can_fail() -> None:
    case = Case("linucb[alpha=0.1]", "weak", "linucb", "alpha", 0.1)
    info = summarize_case(case, [_seed(0.5, 0.6, 1.0), _seed(0.6, 0.8, 3.0)])
    assert info["accuracy"]["mean"] == pytest.approx(0.55) and info["in_domain_share"] == pytest.approx(0.7)
    assert info["regret"] == pytest.approx(2.0) and info["lock_ins"] == 2 and len(info["per_seed"]) == 2
    assert check_summary(info) == []
    broken = {**info, "accuracy": {**info["accuracy"], "math": float("nan")}, "regret": float("inf")}
    assert check_summary(broken) == ["accuracy math nan is not a share", "regret inf is not finite"]


def test_report_writes_tables_csv_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    benchmarks = []
    for mode in ("weak", "bias"):
        for alpha, acc in ((0.0, 0.45), (0.1, 0.52), (1.0, 0.48)):
            case = Case(f"linucb[alpha={alpha}]", mode, "linucb", "alpha", alpha)
            benchmarks.append(summarize_case(case, [_seed(acc, 0.5 + alpha / 4, 2.0)]))
        benchmarks.append(summarize_case(Case("random", mode, "random"), [_seed(0.47, 0.33, 5.0)]))
    results = tmp_path / "ablation.json"
    results.write_text(json.dumps({"benchmarks": [{"name": f"case{i}", "stats": {"mean": 12.0}, "extra_info": b}
                                                  for i, b in enumerate(benchmarks)]}))
    out = tmp_path / "report"
    assert main([str(results), "--out", str(out)]) == 0
    table = (out / "ablation.md").read_text()
    assert "| method | weak: acc | in-domain | bias: acc | in-domain |" in table
    assert "| linucb[alpha=0.1] | 52.0 | 52.5 | 52.0 | 52.5 |" in table
    assert "| random | bias | 47.0 | 47.0 | 47.0 | **47.0** | +7.0 | 33.0 | 1 |" in table
    assert len((out / "ablation.csv").read_text().splitlines()) == 1 + len(benchmarks)
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "in_domain.png").stat().st_size > 0
    assert "| linucb[alpha=0.0] |" in capsys.readouterr().out
    results.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(SystemExit, match="no loop-ablation cases in it"):
        main([str(results)])


def test_docstring_examples() -> None:  # benchmarks/ is not among the doctest paths of the default run
    import doctest

    import benchmarks.loop_ablation
    import benchmarks.report

    for module in (benchmarks.loop_ablation, benchmarks.report):
        assert doctest.testmod(module).failed == 0, module.__name__
