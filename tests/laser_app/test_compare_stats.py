"""``laser compare``'s numbers on hand-made run metrics: records, the summary and paired test, the CSV, the
tables and the plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from laser_app.compare import (
    COMPARE_CSV,
    COMPARE_PNG,
    TIME_PARTS,
    paired_test,
    plot_compare,
    record_from_metrics,
    render_compare,
    summarize,
    write_csv,
)
from laser_app.compare.stats import UNTIMED_PARTS
from laser_app.errors import LaserError
from laser_app.events import STEP_PARTS
from laser_app.report import LOCK_IN_SHARE

DOMAINS = ("math", "mcq", "yesno")


def metrics(after: float, *, before: float = 0.5, shares: dict[str, float] | None = None,
            locked: tuple[str, ...] = (), total: float = 100.0, setup: float = 10.0) -> dict[str, Any]:
    """A run's metrics.json as ``summarize_run`` writes it: domain accuracies around a known mean."""
    def acc(mean: float) -> dict[str, float]:
        return {"math": mean + 0.1, "mcq": mean - 0.1, "yesno": mean, "mean": mean}

    per_step = {"encode": 0.01, "select": 0.01, "generate": 2.0, "score": 1.0, "train": 1.0,
                "diagnostics": 0.5}  # not part of the loop's time
    return {
        "accuracy": {"dev": [acc(before), acc(after)], "test": [acc(before), acc(before + 0.01), acc(after)]},
        "in_domain_share": None if shares is None else {"per_task": shares,
                                                        "mean": float(np.mean([*shares.values()]))},
        "lock_in": None if shares is None else {"per_task": {d: d in locked for d in shares},
                                                "threshold": 0.8},
        "steps": 10,
        "timings": {"total": total, "setup": setup, "eval": 5.0, "per_step": per_step,
                    "bandit_share_of_step": 0.02 / 4.02},
    }


AFTER = {"laser": [0.70, 0.66, 0.72], "random": [0.60, 0.64, 0.62], "ensemble-score": [0.71, 0.60, 0.65]}
SHARES = [{"math": 1.0, "mcq": 0.5, "yesno": 0.75}, {"math": 1.0, "mcq": 0.0, "yesno": 1.0},
          {"math": 0.5, "mcq": 1.0, "yesno": 1.0}]


@pytest.fixture
def records() -> list[dict[str, Any]]:
    out = []
    for method, accs in AFTER.items():
        for seed, a in enumerate(accs):
            m = metrics(a, before=0.5 + seed / 100,
                        shares=SHARES[seed] if method == "laser" else None,
                        locked=("mcq",) if method == "laser" and seed == 1 else (),
                        total=100.0 if method == "laser" else 55.0)
            out.append(record_from_metrics(m, ood="noise", method=method, seed=seed, split=None,
                                           run_dir=f"runs/noise/{method}/seed{seed}"))
    return out


def test_summary_and_paired_test_on_hand_made_metrics(records: list[dict[str, Any]], tmp_path: Path) -> None:
    assert records[0]["split"] == "test" and records[0]["iterations"] == 2
    methods = ["sft", "random", "ensemble-score", "laser"]
    s = summarize(records, methods=methods, reference="laser", learners=["laser"])["noise"]
    assert s["domains"] == list(DOMAINS) and s["seeds"] == [0, 1, 2] and s["methods"] == methods
    acc = s["accuracy"]
    assert acc["laser"]["mean"]["mean"] == pytest.approx(np.mean(AFTER["laser"]))
    assert acc["laser"]["std"]["mean"] == pytest.approx(np.std(AFTER["laser"], ddof=1))
    assert acc["laser"]["mean"]["math"] == pytest.approx(np.mean(AFTER["laser"]) + 0.1)
    # sft: the before-training accuracy every run records, no run of its own
    assert acc["sft"]["per_seed"] == {str(k): pytest.approx({"math": 0.6 + k / 100, "mcq": 0.4 + k / 100,
                                                             "yesno": 0.5 + k / 100, "mean": 0.5 + k / 100})
                                      for k in range(3)}

    for other, (w, t_, l_) in {"random": (3, 0, 0), "ensemble-score": (2, 0, 1), "sft": (3, 0, 0)}.items():
        pair = s["paired"][other]
        ref = np.array(AFTER["laser"])
        base = np.array(AFTER[other]) if other != "sft" else np.array([0.50, 0.51, 0.52])
        diff = ref - base
        t_by_hand = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))
        assert (pair["wins"], pair["ties"], pair["losses"], pair["n"]) == (w, t_, l_, 3)
        assert pair["mean_diff"] == pytest.approx(diff.mean())
        assert pair["t"] == pytest.approx(t_by_hand)
        assert 0 < pair["p"] < 1 and pair["reference"] == "laser"
    assert s["paired"]["random"]["p"] < s["paired"]["ensemble-score"]["p"]
    assert "laser" not in s["paired"]

    time = s["time"]
    assert "sft" not in time
    assert time["random"]["relative_wall"] == pytest.approx(0.55)
    assert time["random"]["relative_work"] == pytest.approx(45 / 90)  # without the set-up
    assert time["laser"]["loop"] == pytest.approx(40.2) and time["laser"]["per_step"]["generate"] == 2.0

    share = s["in_domain"]
    assert list(share) == ["laser"]
    assert share["laser"]["per_domain"] == pytest.approx({"math": 2.5 / 3, "mcq": 0.5, "yesno": 2.75 / 3})
    laser = share["laser"]
    assert (laser["lock_ins"], laser["task_runs"], laser["locked"]) == (1, 9, [[1, "mcq"]])

    # the CSV: one row per method x seed x domain (and the mean)
    path = write_csv(records, tmp_path / COMPARE_CSV)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3 * 3 * 4
    row = next(r for r in rows if r["method"] == "laser" and r["seed"] == "1" and r["domain"] == "mcq")
    assert float(row["accuracy"]) == pytest.approx(0.56) and row["in_domain_share"] == "0.0"
    assert row["locked_in"] == "True" and row["run_dir"] == "runs/noise/laser/seed1"

    console = Console(record=True, width=200)
    render_compare({"summary": {"noise": s}, "ood_labels": {"noise": "out-of-domain noise"},
                    "shared_runs": [{"method": "laser-paper", "seed": 0, "ood": "noise",
                                     "same_as": "laser"}]},
                   console)
    text = " ".join(console.export_text().split())
    assert "out-of-domain noise: test accuracy % after training (mean±std over 3 seeds)" in text
    assert "paired test of laser vs each method" in text and "3/0/0" in text and "2/0/1" in text
    assert "1/9 (s1:mcq)" in text and "time ×laser" in text
    assert "note: laser-paper has the same settings as laser; it reuses that method's runs" in text

    # one row of panels per ood kind
    both = summarize([*records, *({**r, "ood": "bias"} for r in records)], methods=methods, reference="laser",
                     learners=["laser"])
    assert list(both) == ["noise", "bias"] and both["bias"]["accuracy"] == s["accuracy"]
    png = plot_compare({"summary": both}, tmp_path / COMPARE_PNG)
    assert png.stat().st_size > 10_000


def test_paired_test_edge_cases() -> None:
    assert paired_test({0: 0.5}, {0: 0.4}) == {"n": 1, "mean_diff": pytest.approx(0.1), "wins": 1, "ties": 0,
                                               "losses": 0, "t": None, "p": None}
    same = paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert (same["ties"], same["mean_diff"], same["t"], same["p"]) == (2, 0.0, None, None)
    assert paired_test({0: 0.5, 1: 0.6, 2: 0.7}, {1: 0.5, 2: 0.6})["n"] == 2  # only the seeds both have


def test_split_choice() -> None:
    m = metrics(0.7)
    assert record_from_metrics(m, ood="bias", method="x", seed=0, split="dev")["accuracy"]["mean"] == 0.7
    with pytest.raises(LaserError, match="--split 'eval': the runs evaluated on dev, test"):
        record_from_metrics(m, ood="bias", method="x", seed=0, split="eval")
    with pytest.raises(LaserError, match="recorded no accuracy"):
        record_from_metrics({**m, "accuracy": {}}, ood="bias", method="x", seed=0, split=None)


def test_time_table_shows_every_timed_step_part_once(records: list[dict[str, Any]]) -> None:
    assert len(set(TIME_PARTS)) == len(TIME_PARTS)
    assert set(TIME_PARTS) == set(STEP_PARTS) - set(UNTIMED_PARTS)
    assert set(UNTIMED_PARTS) <= set(STEP_PARTS)
    s = summarize(records, methods=["random", "laser"], reference="laser", learners=["laser"])
    console = Console(record=True, width=200, file=io.StringIO())
    render_compare({"summary": s}, console)
    text = console.export_text()
    header = next(line for line in text.splitlines() if "bandit" in line and "wall" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == [
        "method", "wall", "loop", "generate", "score", "train", "select", "encode", "bandit"]
    assert "diagnostics" not in text
    # lock-ins are counted by the run summary's threshold; the table says which
    assert f"(>= {LOCK_IN_SHARE:.0%} of a domain's batches on one wrong RM)" in " ".join(text.split())
