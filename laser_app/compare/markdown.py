"""A comparison's tables as Markdown (``compare.md``), one per out-of-domain kind, for READMEs and reports.

Each row: the method, its label budget, accuracy per domain, the mean with its 95% bootstrap interval, the
paired difference to its budget class's reference (reference minus method) with the Holm-corrected p value,
and for bandits the in-domain share and lock-ins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COMPARE_MD = "compare.md"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _difference(s: Mapping[str, Any], method: str) -> str:
    paired = s.get("paired", {}).get(method)
    if paired and paired.get("mean_diff") is not None:
        return (f"{100 * paired['mean_diff']:+.1f} [{100 * paired['low']:+.1f}, {100 * paired['high']:+.1f}] "
                f"vs {paired['reference']} ({paired['p_holm']:.3f})")
    return "reference" if method in s.get("references", {}).values() else ""


def markdown_table(ood: str, s: Mapping[str, Any]) -> str:
    """The table of one out-of-domain kind's summary ``s`` (``compare.json``'s ``summary[ood]``)."""
    domains = list(s["domains"])
    units = len(s["units"])
    lines = [f"`--ood {ood}` ({s['split']} accuracy %, mean [95% bootstrap interval over {units} units and "
             "prompts]; Δ = reference − method within the label budget, Holm-corrected p):", "",
             "| method | labels | " + " | ".join(domains) + " | mean | Δ vs reference [95%] (p Holm) | in-domain "
             "| lock-ins |", "|---|---|" + "---|" * len(domains) + "---|---|---|---|"]
    for method in s["methods"]:
        acc = s["accuracy"][method]
        budget = (s.get("labels", {}).get(method) or {}).get("budget", "")
        mean = f"**{_pct(acc['mean']['mean'])}** [{_pct(acc['low']['mean'])}, {_pct(acc['high']['mean'])}]"
        routed = s.get("in_domain", {}).get(method)
        share = "" if not routed or routed.get("mean") is None else f"{100 * routed['mean']:.0f}%"
        locks = "" if not routed else f"{routed['lock_ins']}/{routed['task_runs']}"
        cells = [method, budget, *[_pct(acc["mean"][d]) for d in domains], mean, _difference(s, method), share, locks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_tables(data: Mapping[str, Any]) -> str:
    """Every out-of-domain kind's table of a ``compare.json`` document, separated by blank lines."""
    return "\n\n".join(markdown_table(ood, s) for ood, s in (data.get("summary") or {}).items()) + "\n"
