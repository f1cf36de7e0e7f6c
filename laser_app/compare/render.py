"""A comparison's outputs from its ``compare.json`` document: the CSV rows, the PNG and the tables.

>>> rows = csv_rows([{"ood": "bias", "method": "random", "seed": 0, "accuracy": {"math": 0.5, "mean": 0.5},
...                   "before": {"math": 0.4, "mean": 0.4}}])
>>> [(r["domain"], r["accuracy"], r["before"]) for r in rows]
[('math', 0.5, 0.4), ('mean', 0.5, 0.4)]
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

CSV_FIELDS = ("ood", "method", "seed", "domain", "accuracy", "before", "in_domain_share", "locked_in",
              "wall_seconds", "run_dir")
#: Step parts (:data:`laser_app.events.STEP_PARTS`) in the time table, in display order: the loop's costly
#: parts first, then the bandit's; the untimed ones (:data:`~laser_app.compare.stats.UNTIMED_PARTS`) are left
#: out.
TIME_PARTS = ("generate", "score", "train", "select", "encode")


def csv_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per ood x method x seed x domain (and domain ``mean``)."""
    rows = []
    for r in records:
        share, lock = r.get("in_domain_share") or {}, r.get("lock_in") or {}
        wall = (r.get("timings") or {}).get("total")
        for d, acc in r["accuracy"].items():
            rows.append({"ood": r["ood"], "method": r["method"], "seed": r["seed"], "domain": d,
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
    """Grouped bars per ood kind: accuracy per domain and average (std over seeds as error bars) for every
    method, and the in-domain share per domain of each LASeR variant (lock-ins noted)."""
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
        means = [s["accuracy"][m]["mean"].get(d) for m in s["methods"]]
        stds = [s["accuracy"][m]["std"].get(d) or 0.0 for m in s["methods"]]
        ys = [np.nan if v is None else v for v in means]
        style = {"color": "black" if d == "mean" else f"C{k % 10}", "alpha": 0.85}
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, ys, width, yerr=stds, capsize=2,
               label="average" if d == "mean" else d, **style)
    ax.set_xticks(x, s["methods"], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"{s.get('split') or 'test'} accuracy")
    ax.set_title(title + f" ({len(s['seeds'])} seeds)")
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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else _pct(mean) + ("" if std is None else f"±{_pct(std)}")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def render_compare(data: Mapping[str, Any], console: Console) -> None:
    """Print the comparison tables of a ``compare.json`` document, one block per ood kind: accuracy,
    the paired tests, time, and the LASeR variants' in-domain share and lock-ins.

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
            console.print(_paired_table(s, head, ref))
            console.print(f"on each seed's average accuracy: Δ = {ref} minus the method, in points; W/T/L = "
                          f"seeds {ref} wins, ties, loses; t, p = scipy.stats.ttest_rel (two-sided)")
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
        console.print(Text(f"failed: {f['method']} seed {f['seed']} ({f['ood']}): {f['error']} "
                           f"(log: {f.get('log')})", style="red"))


def _accuracy_table(s: Mapping[str, Any], head: str, ref: str | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    n_seeds = len(s["seeds"])
    table = Table(title=f"{head}{s.get('split') or 'test'} accuracy % after training (mean±std over "
                        f"{n_seeds} seed{'s' if n_seeds != 1 else ''})")
    table.add_column("method")
    for d in s["domains"]:
        table.add_column(d, justify="right")
    table.add_column("average", justify="right")
    table.add_column(f"time ×{ref}" if ref else "time s", justify="right")
    for m in s["methods"]:
        a, t = s["accuracy"][m], s["time"].get(m)
        wall = "-" if not t else (_num(t["relative_work"]) if ref else _num(t["work"], ".1f"))
        table.add_row(Text(m), *[_pm(a["mean"].get(d), a["std"].get(d)) for d in s["domains"]],
                      _pm(a["mean"].get("mean"), a["std"].get("mean")), wall,
                      style="bold" if m == ref else None)
    return table


def _paired_table(s: Mapping[str, Any], head: str, ref: str | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{head}paired test of {ref} vs each method")
    for col in ("method", "Δ", "W/T/L", "t", "p"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, pair in s["paired"].items():
        delta = "-" if pair["mean_diff"] is None else f"{100 * pair['mean_diff']:+.1f}"
        table.add_row(Text(m), delta, f"{pair['wins']}/{pair['ties']}/{pair['losses']}",
                      _num(pair["t"]), _num(pair["p"], ".3f"))
    return table


def _time_table(s: Mapping[str, Any], head: str) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{head}seconds per run and per step (mean over seeds)")
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
        where = ", ".join(f"s{seed}:{d}" for seed, d in r["locked"])
        table.add_row(Text(m), *[_pct(r["per_domain"].get(d)) for d in s["domains"]],
                      _pm(r["mean"], r["std"]),
                      f"{r['lock_ins']}/{r['task_runs']}" + (f" ({where})" if where else ""),
                      style="bold" if m == ref else None)
    return table
