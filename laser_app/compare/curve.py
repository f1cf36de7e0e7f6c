"""The label-budget curve (DESIGN.md, "Information budgets"): accuracy against labelled prompts per task, the
one place where methods of different label budgets meet.

x is the labelled prompts per task a method read (0 for none, N for dev-N, the training prompts per task for
all) on a symmetric-log axis, so 0 has a place; y is the mean accuracy on the compared split with its
bootstrap interval. Methods of one family (``dev-pick[dev_labels=8]``, ``dev-pick[dev_labels=32]``) are
joined by a line; the starting policy and the oracle are horizontal lines with their intervals as bands.
Methods whose budget is unknown (runs from before budgets were recorded) are left out, and the title says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from laser_app.compare.budgets import labelled_per_task
from laser_app.compare.methods import SFT

LABEL_BUDGET_PNG = "label_budget.png"
_MARKERS = "osD^v<>pPXh*"


class Point(NamedTuple):
    """One method on the curve."""

    method: str
    family: str
    budget: str
    x: float
    y: float
    low: float | None
    high: float | None


def curve_points(s: Mapping[str, Any], families: Mapping[str, str]) -> tuple[list[Point], list[str]]:
    """The points of one ood kind's summary and the methods left out (unknown budget); sft and the oracle
    are lines, not points.

    >>> s = {"domains": ["a", "b"], "methods": ["sft", "laser", "gold", "old"],
    ...      "labels": {"sft": {"budget": "none"}, "laser": {"budget": "none"},
    ...                 "gold": {"budget": "all", "labelled_prompts": 600}, "old": None},
    ...      "accuracy": {m: {"mean": {"mean": 0.5}} for m in ["sft", "laser", "gold", "old"]}}
    >>> points, unknown = curve_points(s, {})
    >>> [(p.method, p.x) for p in points], unknown
    ([('laser', 0.0), ('gold', 300.0)], ['old'])
    """
    points, unknown = [], []
    for m in s["methods"]:
        labels = (s.get("labels") or {}).get(m)
        acc = s["accuracy"][m]
        y = acc["mean"].get("mean")
        if m == SFT or y is None or (labels or {}).get("budget") == "oracle":
            continue
        x = labelled_per_task(labels, len(s["domains"]))
        if x is None:
            unknown.append(m)
            continue
        points.append(Point(m, families.get(m, m.split("[")[0]), str((labels or {})["budget"]), x, float(y),
                            acc.get("low", {}).get("mean"), acc.get("high", {}).get("mean")))
    return points, unknown


def _spread(points: Sequence[Point]) -> list[float]:
    """Plot positions: points that share an x are spread a little around it (linearly at 0, by a factor
    elsewhere) so their error bars do not hide each other."""
    out = []
    for p in points:
        same = [q for q in points if q.x == p.x]
        k = same.index(p) - (len(same) - 1) / 2
        out.append(p.x + 0.12 * k if p.x == 0 else p.x * 10 ** (0.025 * k))
    return out


def _lines(ax: Any, s: Mapping[str, Any]) -> None:
    """The starting policy and the oracle as horizontal lines, their intervals as bands."""
    for m in s["methods"]:
        budget = ((s.get("labels") or {}).get(m) or {}).get("budget")
        if m != SFT and budget != "oracle":
            continue
        acc = s["accuracy"][m]
        y = acc["mean"].get("mean")
        if y is None:
            continue
        color, ls = ("grey", "--") if m == SFT else ("black", ":")
        ax.axhline(y, color=color, ls=ls, lw=1.2, label=f"{m} ({'starting policy' if m == SFT else 'oracle'})")
        low, high = acc.get("low", {}).get("mean"), acc.get("high", {}).get("mean")
        if low is not None and high is not None:
            ax.axhspan(low, high, color=color, alpha=0.08, lw=0)


def _panel(ax: Any, s: Mapping[str, Any], families: Mapping[str, str], title: str) -> None:
    points, unknown = curve_points(s, families)
    xs = _spread(points)
    fams = list(dict.fromkeys(p.family for p in points))
    for f in fams:
        mine = sorted((x, p.y) for x, p in zip(xs, points, strict=True) if p.family == f)
        if len({p.budget for p in points if p.family == f}) > 1:
            ax.plot([x for x, _ in mine], [y for _, y in mine], color=f"C{fams.index(f) % 10}", lw=1, alpha=0.6)
    for k, (x, p) in enumerate(zip(xs, points, strict=True)):
        err = None
        if p.low is not None and p.high is not None:
            err = np.clip([[p.y - p.low], [p.high - p.y]], 0, None)
        ax.errorbar([x], [p.y], yerr=err, fmt=_MARKERS[k % len(_MARKERS)], color=f"C{fams.index(p.family) % 10}",
                    capsize=3, ms=6, label=f"{p.method} ({p.budget})")
    _lines(ax, s)
    ticks = sorted({p.x for p in points})
    ax.set_xscale("symlog", linthresh=1.0)
    if ticks:
        names = {p.x: p.budget for p in points}
        ax.set_xticks(ticks, [f"{x:g}\n{names[x]}" for x in ticks], fontsize=7)
        ax.set_xlim(-0.8, max(ticks) * 2.5 if max(ticks) > 0 else 1.0)
    split = s.get("split") or "test"
    ax.set_xlabel("labelled prompts per task (symmetric log scale; 0 = none)")
    ax.set_ylabel(f"{split} accuracy (mean, 95% interval)")
    note = f"; unknown budget, left out: {', '.join(unknown)}" if unknown else ""
    ax.set_title(f"{title}: {split} split, label budget vs accuracy{note}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))


def plot_label_budget(data: Mapping[str, Any], path: Path) -> Path:
    """One panel per ood kind of a ``compare.json`` document: the label-budget curve."""
    from laser_app.plots import _pyplot

    plt = _pyplot()
    summary = data["summary"]
    families = {m["label"]: m["base"] for m in data.get("methods", []) if isinstance(m, Mapping)}
    fig, axes = plt.subplots(len(summary), 1, figsize=(10.0, 4.2 * len(summary)), squeeze=False)
    for ax, (ood, s) in zip(axes[:, 0], summary.items(), strict=True):
        _panel(ax, s, families, data.get("ood_labels", {}).get(ood, ood))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
