"""A comparison's outputs from its ``compare.json`` document: the CSV rows, the PNG and the tables.

>>> rows = csv_rows([{"ood": "bias", "world_seed": 1, "method": "random", "seed": 0, "labels": {"budget": "none"},
...                   "accuracy": {"math": 0.5, "mean": 0.5}, "before": {"math": 0.4, "mean": 0.4}}])
>>> [(r["world_seed"], r["labels"], r["domain"], r["accuracy"], r["before"]) for r in rows]
[(1, 'none', 'math', 0.5, 0.4), (1, 'none', 'mean', 0.5, 0.4)]
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_app.report import LOCK_IN_SHARE

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

CSV_FIELDS = ("ood", "world_seed", "method", "labels", "seed", "domain", "accuracy", "before", "in_domain_share",
              "locked_in", "wall_seconds", "run_dir")
#: Step parts (:data:`laser_app.events.STEP_PARTS`) in the time table, in display order: the loop's costly
#: parts first, then the bandit's; the untimed ones (:data:`~laser_app.compare.stats.UNTIMED_PARTS`) are left
#: out.
TIME_PARTS = ("generate", "score", "train", "select", "encode")


def csv_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per ood x world seed x method x seed x domain (and domain ``mean``); ``labels`` is the run's
    label budget (empty when unknown)."""
    rows = []
    for r in records:
        share, lock = r.get("in_domain_share") or {}, r.get("lock_in") or {}
        wall = (r.get("timings") or {}).get("total")
        for d, acc in r["accuracy"].items():
            rows.append({"ood": r["ood"], "world_seed": r.get("world_seed", 0), "method": r["method"],
                         "labels": (r.get("labels") or {}).get("budget"), "seed": r["seed"], "domain": d,
                         "accuracy": acc, "before": r["before"].get(d),
                         "in_domain_share": share.get(d) if d != "mean" else
                         (float(np.mean(list(share.values()))) if share else None),
                         "locked_in": lock.get(d) if d != "mean" else (any(lock.values()) if lock else None),
                         "wall_seconds": wall, "run_dir": r.get("run_dir")})
    return rows


def write_csv(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write :func:`csv_rows` to ``path``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS))
        writer.writeheader()
        for row in csv_rows(records):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def plot_compare(data: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars per ood kind: accuracy per domain and average (the bootstrap interval as error bars) for
    every method, and the in-domain share per domain of each LASeR variant (lock-ins noted)."""
    from laser_app.plots import _pyplot

    plt = _pyplot()
    summary = data["summary"]
    oods = list(summary)
    with_share = any(s["in_domain"] for s in summary.values())
    n_methods = max((len(s["methods"]) for s in summary.values()), default=1)
    ncols = 2 if with_share else 1
    fig, axes = plt.subplots(len(oods), ncols, figsize=(max(8.0, 1.0 * n_methods + 3) + 5 * (ncols - 1),
                                                        3.8 * len(oods)), squeeze=False,
                             gridspec_kw={"width_ratios": [max(2, n_methods), 4][:ncols]})
    for row, ood in zip(axes, oods, strict=True):
        s = summary[ood]
        _accuracy_panel(row[0], s, data.get("ood_labels", {}).get(ood, ood))
        if ncols == 2:
            _share_panel(row[1], s)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy_panel(ax: Any, s: Mapping[str, Any], title: str) -> None:
    groups = [*s["domains"], "mean"]
    width = 0.8 / len(groups)
    x = np.arange(len(s["methods"]))
    for k, d in enumerate(groups):
        ys = np.array([_nan(s["accuracy"][m]["mean"].get(d)) for m in s["methods"]])
        lows = np.array([_nan(s["accuracy"][m].get("low", {}).get(d)) for m in s["methods"]])
        highs = np.array([_nan(s["accuracy"][m].get("high", {}).get(d)) for m in s["methods"]])
        err = np.nan_to_num(np.clip(np.stack([ys - lows, highs - ys]), 0, None))
        style = {"color": "black" if d == "mean" else f"C{k % 10}", "alpha": 0.85}
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, ys, width, yerr=err, capsize=2,
               label="average" if d == "mean" else d, **style)
    budgets = [(s.get("labels", {}).get(m) or {}).get("budget") or "?" for m in s["methods"]]
    ax.set_xticks(x, [f"{m} ({b})" for m, b in zip(s["methods"], budgets, strict=True)], rotation=35, ha="right",
                  fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"{s.get('split') or 'test'} accuracy (95% interval)")
    ax.set_title(f"{title}: {s.get('split') or 'test'} split, {_units_text(s)}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=len(groups))


def _share_panel(ax: Any, s: Mapping[str, Any]) -> None:
    learners = list(s["in_domain"])
    if learners:
        width = 0.8 / len(s["domains"])
        x = np.arange(len(learners))
        for k, d in enumerate(s["domains"]):
            ys = [s["in_domain"][m]["per_domain"].get(d) for m in learners]
            ax.bar(x + (k - (len(s["domains"]) - 1) / 2) * width,
                   [np.nan if v is None else v for v in ys], width, color=f"C{k % 10}", label=d)
        labels = [f"{m}\nlock-in {s['in_domain'][m]['lock_ins']}/{s['in_domain'][m]['task_runs']}"
                  for m in learners]
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=7)
        ax.set_xlim(-0.6, max(len(learners), 3) - 0.4)  # keep bars narrow with few variants
        ax.axhline(LOCK_IN_SHARE, color="grey", ls="--", lw=0.8)
        ax.legend(fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("in-domain share (last iteration)")
    ax.grid(axis="y", alpha=0.3)


def _nan(x: float | None) -> float:
    return np.nan if x is None else float(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else _pct(mean) + ("" if std is None else f"±{_pct(std)}")


def _ci(mean: float | None, low: float | None, high: float | None) -> str:
    """``62.3 [58.1, 66.0]`` in percent (the mean alone when there is no interval)."""
    if mean is None:
        return "-"
    return _pct(mean) + ("" if low is None or high is None else f" [{_pct(low)}, {_pct(high)}]")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _units_text(s: Mapping[str, Any]) -> str:
    """``6 units (2 world seeds x 3 run seeds)``."""
    n_units = len(s.get("units") or s["seeds"])
    return (f"{_plural(n_units, 'unit')} ({_plural(len(s.get('world_seeds') or [0]), 'world seed')} x "
            f"{_plural(len(s['seeds']), 'run seed')})")


def _resampling_text(s: Mapping[str, Any]) -> str:
    """What the intervals resample: seeds and prompts, or seeds alone for methods without per-prompt results."""
    split = s.get("split") or "test"
    if "bootstrap" not in s:
        return "no intervals recorded (an older compare.json: run the same laser compare again to add them)"
    boot = s["bootstrap"]
    only = list(boot.get("seeds_only", []))
    n = f"{boot.get('resamples', '?')} resamples"
    if not only:
        return f"bootstrap over units and {split} prompts, {n}"
    caution = "too narrow with few units"
    if len(only) == len(s["methods"]):
        return f"bootstrap over units only (the runs recorded no per-prompt results), {n}: {caution}"
    return (f"bootstrap over units and {split} prompts, {n}; over units only for {', '.join(only)} (no "
            f"per-prompt results): {caution}")


def render_compare(data: Mapping[str, Any], console: Console) -> None:
    """Print the comparison tables of a ``compare.json`` document, one block per ood kind: accuracy (by label
    budget), the paired tests within each budget, time, and the LASeR variants' in-domain share and lock-ins.

    >>> from rich.console import Console
    >>> render_compare({"summary": {}, "failures": [{"ood": "bias", "method": "random", "seed": 0,
    ...                                             "error": "ValueError: nan"}]}, Console(width=100))
    failed: random seed 0 (bias): ValueError: nan (log: None)
    """
    from rich.markup import escape
    from rich.text import Text

    labels = data.get("ood_labels", {})
    for ood, s in data["summary"].items():
        ref = escape(s["reference"]) if s.get("reference") else None  # labels may hold [brackets]
        head = escape(f"{labels.get(ood, ood)}: ")
        console.print(_accuracy_table(s, head, ref))
        if s["paired"]:
            console.print(_paired_table(s, head))
            console.print("on each unit's average accuracy (unit = world seed x run seed): Δ = the reference "
                          "minus the method, in points, with its 95% interval; W/T/L = units the reference "
                          "wins, ties, loses; p = two-sided paired bootstrap p-value (units and prompts "
                          "resampled jointly), p Holm = adjusted over the comparisons of this table. Methods are "
                          "compared only with the reference of their own label budget.")
        if s["time"]:
            console.print(_time_table(s, head))
            console.print(f"time ×{ref}: run time without set-up (model loading) relative to {ref}; loop: "
                          "the training steps alone; bandit: encode + select + update as a share of a step")
        if s["in_domain"]:
            console.print(_in_domain_table(s, head, ref))
    shared = {(r["method"], r["same_as"]) for r in data.get("shared_runs", [])}
    for method, same_as in sorted(shared):
        console.print(Text(f"note: {method} has the same settings as {same_as}; it reuses that method's "
                           "runs"))
    for f in data.get("failures", []):
        world = f" world {f['world_seed']}" if f.get("world_seed") is not None else ""
        console.print(Text(f"failed: {f['method']}{world} seed {f['seed']} ({f['ood']}): {f['error']} "
                           f"(log: {f.get('log')})", style="red"))


def _budget(s: Mapping[str, Any], method: str) -> str:
    return ((s.get("labels") or {}).get(method) or {}).get("budget") or "?"


def _accuracy_table(s: Mapping[str, Any], head: str, ref: str | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    split = s.get("split") or "test"
    table = Table(title=f"{head}{split} split: accuracy % after training, mean [95% interval] over "
                        f"{_units_text(s)}; {_resampling_text(s)}; rows by label budget")
    table.add_column("method")
    table.add_column("labels")
    for d in s["domains"]:
        table.add_column(d, justify="right")
    table.add_column("average", justify="right")
    table.add_column(f"time ×{ref}" if ref else "time s", justify="right")
    refs = set((s.get("references") or {}).values()) | {s.get("reference")}
    for m in s["methods"]:
        a, t = s["accuracy"][m], s["time"].get(m)
        low, high = a.get("low", {}), a.get("high", {})
        wall = "-" if not t else (_num(t["relative_work"]) if ref else _num(t["work"], ".1f"))
        table.add_row(Text(m), _budget(s, m),
                      *[_ci(a["mean"].get(d), low.get(d), high.get(d)) for d in [*s["domains"], "mean"]], wall,
                      style="bold" if m in refs else None)
    return table


def _paired_table(s: Mapping[str, Any], head: str) -> Table:
    from rich.table import Table
    from rich.text import Text

    n = sum(1 for pair in s["paired"].values() if pair.get("p") is not None)
    table = Table(title=f"{head}{s.get('split') or 'test'} split: paired bootstrap of each method vs the "
                        f"reference of its label budget; p Holm-corrected over the {_plural(n, 'comparison')} "
                        "of this table")
    for col in ("method", "labels", "reference", "Δ", "95% interval", "W/T/L", "p", "p Holm"):
        table.add_column(col, justify="left" if col in ("method", "labels", "reference") else "right")
    for m, pair in s["paired"].items():
        delta = "-" if pair["mean_diff"] is None else f"{100 * pair['mean_diff']:+.1f}"
        interval = ("-" if pair.get("low") is None else
                    f"[{100 * pair['low']:+.1f}, {100 * pair['high']:+.1f}]")
        table.add_row(Text(m), _budget(s, m), Text(pair["reference"]), delta, interval,
                      f"{pair['wins']}/{pair['ties']}/{pair['losses']}", _num(pair.get("p"), ".3f"),
                      _num(pair.get("p_holm"), ".3f"))
    return table


def _time_table(s: Mapping[str, Any], head: str) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{head}seconds per run and per step (mean over units)")
    for col in ("method", "wall", "loop", *TIME_PARTS, "bandit"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, t in s["time"].items():
        table.add_row(Text(m), _num(t["wall"], ".1f"), _num(t["loop"], ".1f"),
                      *[_num(t["per_step"].get(k), ".3f") for k in TIME_PARTS],
                      "-" if t["bandit_share"] is None else f"{100 * t['bandit_share']:.1f}%")
    return table


def _in_domain_table(s: Mapping[str, Any], head: str, ref: str | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{head}in-domain share % (last iteration) and lock-ins (>= {LOCK_IN_SHARE:.0%} of a "
                        "domain's batches on one wrong RM)")
    table.add_column("method")
    for d in s["domains"]:
        table.add_column(d, justify="right")
    table.add_column("mean", justify="right")
    table.add_column("lock-ins", justify="right")
    for m, r in s["in_domain"].items():
        worlds = len(s.get("world_seeds") or [0]) > 1
        where = ", ".join(f"{f'w{e[0]}' if worlds else ''}s{e[-2]}:{e[-1]}" for e in r["locked"])
        table.add_row(Text(m), *[_pct(r["per_domain"].get(d)) for d in s["domains"]],
                      _pm(r["mean"], r["std"]),
                      f"{r['lock_ins']}/{r['task_runs']}" + (f" ({where})" if where else ""),
                      style="bold" if m == ref else None)
    return table
