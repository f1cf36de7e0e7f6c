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
    assert acc["sft"]["per_unit"] == [{"world_seed": 0, "seed": k, "accuracy": pytest.approx(
        {"math": 0.6 + k / 100, "mcq": 0.4 + k / 100, "yesno": 0.5 + k / 100, "mean": 0.5 + k / 100})}
        for k in range(3)]
    # no per-prompt results in these metrics: the intervals resample the seeds alone, inside their range
    assert acc["laser"]["resampled"] == "seeds" and s["bootstrap"]["seeds_only"] == methods
    low, high = acc["laser"]["low"]["mean"], acc["laser"]["high"]["mean"]
    assert min(AFTER["laser"]) - 1e-9 <= low < high <= max(AFTER["laser"]) + 1e-9

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
        assert 0 < pair["p_ttest"] < 1 and pair["p_holm"] >= pair["p"]
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
    assert (laser["lock_ins"], laser["task_runs"], laser["locked"]) == (1, 9, [[0, 1, "mcq"]])

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
    assert ("out-of-domain noise: test split: accuracy % after training, mean [95% interval] over 3 units (1 world "
            "seed x 3 run seeds); bootstrap over units only (the runs recorded no per-prompt results)") in text
    lo, hi = acc["laser"]["low"]["mean"], acc["laser"]["high"]["mean"]
    assert f"{100 * np.mean(AFTER['laser']):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in text
    assert "paired bootstrap of each method vs the reference of its label budget; p Holm-corrected over the 3 " \
           "comparisons of this table" in text and "3/0/0" in text and "2/0/1" in text
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


BUDGETS = {"random": {"budget": "none", "labelled_prompts": 0},
           "laser": {"budget": "none", "labelled_prompts": 0},
           "dev-pick[dev_labels=32]": {"budget": "dev-32", "labelled_prompts": 96},
           "prior-router": {"budget": "dev-8", "labelled_prompts": 24},
           "dev-pick[dev_labels=8]": {"budget": "dev-8", "labelled_prompts": 24},
           "gold": {"budget": "all", "labelled_prompts": 900},
           "oracle": {"budget": "oracle", "labelled_prompts": 0},
           "old": None}  # a run from before budgets (and per-prompt results) were recorded
LIFT = {"random": 0.0, "laser": 0.15, "dev-pick[dev_labels=32]": 0.2, "prior-router": 0.1,
        "dev-pick[dev_labels=8]": 0.1, "gold": 0.25, "oracle": 0.3, "old": 0.05}


def budget_records(split: str | None = None) -> list[dict[str, Any]]:
    """Runs over 2 world seeds x 2 run seeds with per-prompt results on the same prompts per world seed: each
    method's answers are the starting policy's plus some prompts it gets right on top."""
    rng = np.random.default_rng(0)
    out = []
    for world in (0, 1):
        chance = {split_: {d: rng.uniform(0.2, 0.6, 40) for d in DOMAINS} for split_ in ("dev", "test")}
        for seed in (0, 1):
            before = {s: {d: (rng.random(40) < p).astype(int) for d, p in c.items()} for s, c in chance.items()}
            for method, lift in LIFT.items():
                final = {s: {d: np.maximum(h, rng.random(40) < lift).astype(int).tolist() for d, h in b.items()}
                         for s, b in before.items()}
                first = {s: {d: h.tolist() for d, h in b.items()} for s, b in before.items()}
                m = metrics(0.5)
                m["accuracy"] = {s: [{**{d: float(np.mean(h)) for d, h in first[s].items()},
                                      "mean": float(np.mean([np.mean(h) for h in first[s].values()]))},
                                     {**{d: float(np.mean(h)) for d, h in final[s].items()},
                                      "mean": float(np.mean([np.mean(h) for h in final[s].values()]))}]
                                 for s in first}
                if BUDGETS[method] is not None:
                    m["labels"] = {**BUDGETS[method], "source": "test"}
                    m["per_example"] = {"before": first, "final": final}
                out.append(record_from_metrics(m, ood="bias", method=method, seed=seed, split=split,
                                               world_seed=world))
    return out


def test_budgets_world_seeds_and_prompt_intervals(tmp_path: Path) -> None:
    methods = ["sft", "random", "laser", "dev-pick[dev_labels=32]", "prior-router", "dev-pick[dev_labels=8]",
               "gold", "oracle", "old"]
    s = summarize(budget_records(), methods=methods, reference=None, learners=["laser"])["bias"]
    # rows: sft first, then none, dev-N by N, all, oracle, unknown; the given order within a budget
    assert s["methods"] == ["sft", "random", "laser", "prior-router", "dev-pick[dev_labels=8]",
                            "dev-pick[dev_labels=32]", "gold", "oracle", "old"]
    assert s["labels"]["sft"]["budget"] == "none" and s["labels"]["old"] is None
    assert s["units"] == [[0, 0], [0, 1], [1, 0], [1, 1]] and s["world_seeds"] == [0, 1] and s["seeds"] == [0, 1]
    assert s["references"] == {"none": "laser", "dev-8": "prior-router", "dev-32": "dev-pick[dev_labels=32]",
                               "all": "gold", "oracle": "oracle"}
    # compared within a budget only: nothing crosses classes, a class of one has no test
    paired = s["paired"]
    assert {m: p["reference"] for m, p in paired.items()} == {
        "sft": "laser", "random": "laser", "dev-pick[dev_labels=8]": "prior-router"}
    assert all(p["resampled"] == "seeds and prompts" and p["n"] == 4 for p in paired.values())
    assert paired["random"]["mean_diff"] > 0.05 and paired["random"]["low"] > 0 and paired["random"]["p"] < 0.01
    # Holm over the table's 3 comparisons, by hand
    ps = [p["p"] for p in paired.values()]
    order = np.argsort(ps)
    by_hand = np.maximum.accumulate([min(1.0, (3 - k) * ps[i]) for k, i in enumerate(order)])
    assert [paired[list(paired)[i]]["p_holm"] for i in order] == pytest.approx(by_hand)

    acc = s["accuracy"]
    assert acc["laser"]["resampled"] == "seeds and prompts" and acc["old"]["resampled"] == "seeds"
    assert s["bootstrap"]["seeds_only"] == ["old"] and s["bootstrap"]["resamples"] == 2000
    for m in s["methods"]:
        a = acc[m]
        assert a["low"]["mean"] <= a["mean"]["mean"] <= a["high"]["mean"], m
        assert [(u["world_seed"], u["seed"]) for u in a["per_unit"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert acc["oracle"]["mean"]["mean"] > acc["random"]["mean"]["mean"]

    console = Console(record=True, width=250)
    render_compare({"summary": {"bias": s}}, console)
    text = " ".join(console.export_text().split())
    assert "bias: test split: accuracy % after training, mean [95% interval] over 4 units (2 world seeds x 2 run " \
           "seeds); bootstrap over units and test prompts, 2000 resamples; over units only for old" in text
    assert "p Holm-corrected over the 3 comparisons of this table" in text
    for budget in ("dev-8", "dev-32", "all", "oracle", "?"):
        assert f" {budget} " in text

    # the curve: labelled prompts per task on x, sft and the oracle as lines, unknown budgets left out
    from laser_app.compare.curve import curve_points, plot_label_budget

    points, unknown = curve_points(s, {})
    assert [(p.method, p.x) for p in points] == [("random", 0.0), ("laser", 0.0), ("prior-router", 8.0),
                                                ("dev-pick[dev_labels=8]", 8.0), ("dev-pick[dev_labels=32]", 32.0),
                                                ("gold", 300.0)]
    assert unknown == ["old"] and {p.family for p in points if p.method.startswith("dev-pick")} == {"dev-pick"}
    assert plot_label_budget({"summary": {"bias": s}}, tmp_path / "label_budget.png").stat().st_size > 10_000

    # the CSV carries the world seed and the budget of every row
    rows = list(csv.DictReader(write_csv(budget_records(), tmp_path / COMPARE_CSV).open()))
    assert {(r["world_seed"], r["labels"]) for r in rows if r["method"] == "gold"} == {("0", "all"), ("1", "all")}
    assert {r["labels"] for r in rows if r["method"] == "old"} == {""}


def test_the_chosen_split_is_the_one_every_number_and_title_uses() -> None:
    dev = summarize(budget_records("dev"), methods=["sft", "random", "laser"], reference=None,
                    learners=["laser"])["bias"]
    test = summarize(budget_records("test"), methods=["sft", "random", "laser"], reference=None,
                     learners=["laser"])["bias"]
    assert dev["split"] == "dev" and test["split"] == "test"
    assert dev["accuracy"]["laser"]["mean"] != test["accuracy"]["laser"]["mean"]
    console = Console(record=True, width=250)
    render_compare({"summary": {"bias": dev}}, console)
    text = " ".join(console.export_text().split())
    assert "bias: dev split: accuracy %" in text and "bootstrap over units and dev prompts" in text
    assert "bias: dev split: paired bootstrap" in text and "test" not in text
