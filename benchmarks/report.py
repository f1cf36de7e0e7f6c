"""Turn the LASeR loop ablation's ``--benchmark-json`` output into Markdown tables and PNGs.

    python -m benchmarks.report ablation.json --out docs/results/ablation

Writes ``ablation.md`` (a summary table: dev accuracy and in-domain share per method and RM mode; then every
case with its lock-ins, bandit reward, regret against the oracle routing and seconds per step),
``ablation.csv`` (one row per case), ``accuracy.png`` and ``in_domain.png`` (against the exploration value,
one panel per policy, one line per RM mode; random routing dotted), and prints the summary table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.loop_ablation import EXPLORATION, MODES

Case = Mapping[str, Any]


def load_cases(path: Path) -> list[dict[str, Any]]:
    """The cases' ``extra_info`` (with the case's wall seconds) from a ``--benchmark-json`` file."""
    data = json.loads(path.read_text())
    out = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if "method" in info and "accuracy" in info:
            out.append({**info, "wall_seconds": bench["stats"]["mean"]})
    if not out:
        raise SystemExit(f"{path}: no loop-ablation cases in it; run pytest benchmarks/test_loop_ablation.py "
                         "--benchmark-only -m laser --benchmark-json FILE first")
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def modes_of(cases: Sequence[Case]) -> list[str]:
    """The RM modes present, in the grid's order."""
    seen = {c["mode"] for c in cases}
    return [m for m in MODES if m in seen] + sorted(seen - set(MODES))


def methods_of(cases: Sequence[Case]) -> list[str]:
    """The methods present, in the order they ran."""
    return list(dict.fromkeys(c["method"] for c in cases))


def summary_table(cases: Sequence[Case]) -> str:
    """Dev accuracy (mean over domains and seeds, %) and in-domain share (%) per method and RM mode.

    >>> print(summary_table([{"method": "random", "mode": "weak", "accuracy": {"mean": 0.5},
    ...                       "in_domain_share": 0.3}]))
    | method | weak: acc | in-domain |
    |---|---|---|
    | random | 50.0 | 30.0 |
    """
    modes, by = modes_of(cases), {(c["method"], c["mode"]): c for c in cases}
    head = "| method | " + " | ".join(f"{m}: acc | in-domain" for m in modes) + " |"
    lines = [head, "|---|" + "---|---|" * len(modes)]
    for method in methods_of(cases):
        cells = []
        for mode in modes:
            c = by.get((method, mode))
            cells += ["", ""] if c is None else [_pct(c["accuracy"]["mean"]), _pct(c.get("in_domain_share"))]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(cases: Sequence[Case]) -> str:
    """Every case: dev accuracy per domain and its change from the start, in-domain share, lock-ins, the
    bandit reward's mean, regret against the oracle routing (total and per step), seconds per step."""
    domains = [d for d in cases[0]["accuracy"] if d != "mean"]
    head = ["method", "mode", *domains, "mean", "Δ start", "in-domain", "lock-ins", "reward", "regret",
            "regret/step", "s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in sorted(cases, key=lambda c: (modes_of(cases).index(c["mode"]), methods_of(cases).index(c["method"]))):
        acc, start = c["accuracy"], c.get("accuracy_start") or {}
        delta = None if start.get("mean") is None else acc["mean"] - start["mean"]
        secs = sum(v for v in (c.get("seconds_per_step") or {}).values() if v)
        row = [c["method"], c["mode"], *[_pct(acc.get(d)) for d in domains], f"**{_pct(acc['mean'])}**",
               "-" if delta is None else f"{100 * delta:+.1f}", _pct(c.get("in_domain_share")),
               f"{c.get('lock_ins', 0)}", _num(c.get("reward_mean")), _num(c.get("regret"), 2),
               _num(c.get("regret_per_step")), _num(secs)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_csv(cases: Sequence[Case], path: Path) -> None:
    """One row per case (means over seeds)."""
    domains = [d for d in cases[0]["accuracy"]]
    fields = ["method", "policy", "setting", "value", "mode", "seeds", *[f"acc_{d}" for d in domains],
              "in_domain_share", "lock_ins", "reward_mean", "regret", "regret_per_step", "wall_seconds"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for c in cases:
            writer.writerow({**{k: c.get(k) for k in fields if not k.startswith("acc_")},
                             **{f"acc_{d}": c["accuracy"][d] for d in domains}})


def plot_against_exploration(cases: Sequence[Case], metric: str, path: Path, title: str) -> None:
    """One panel per policy with an exploration grid: ``metric`` (``accuracy`` mean or ``in_domain_share``)
    against the exploration value, one line per RM mode; random routing as a dotted line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(c: Case) -> float | None:
        v = c["accuracy"]["mean"] if metric == "accuracy" else c.get(metric)
        return None if v is None else 100 * float(v)

    policies = [p for p, grid in EXPLORATION.items() if grid is not None and any(c["policy"] == p for c in cases)]
    modes = modes_of(cases)
    colors = dict(zip(modes, ["tab:blue", "tab:orange", "tab:red", "tab:gray", "tab:green"], strict=False))
    fig, axes = plt.subplots(1, max(1, len(policies)), figsize=(3.2 * max(1, len(policies)), 3.2), sharey=True,
                             squeeze=False)
    for ax, policy in zip(axes[0], policies, strict=False):
        setting = EXPLORATION[policy][0]  # type: ignore[index]
        for mode in modes:
            pts = sorted((c["value"], value(c)) for c in cases
                         if c["policy"] == policy and c["mode"] == mode and value(c) is not None)
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", color=colors[mode], label=mode)
            ref = next((value(c) for c in cases if c["method"] == "random" and c["mode"] == mode), None)
            if ref is not None:
                ax.axhline(ref, color=colors[mode], linestyle=":", linewidth=1)
        ax.set_xscale("symlog", linthresh=0.01)
        values = sorted({float(c["value"]) for c in cases if c["policy"] == policy and c["value"] is not None})
        if values:  # no empty negative half of the symlog axis
            ax.set_xlim(-0.003 if values[0] == 0 else values[0] / 1.5, values[-1] * 1.5)
        ax.set_xlabel(setting)
        ax.set_title(policy)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(title + " (%)")
    axes[0][-1].legend(fontsize=8, title="RM mode (dotted: random)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="the --benchmark-json file of the loop ablation")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for ablation.md/.csv and the PNGs")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"error: {args.results} is not a file; pass the --benchmark-json output", file=sys.stderr)
        return 2
    cases = load_cases(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = summary_table(cases)
    (args.out / "ablation.md").write_text(
        "## Dev accuracy (%) and in-domain share (%), means over seeds\n\n" + summary
        + "\n\n## Every case\n\n" + detail_table(cases) + "\n")
    write_csv(cases, args.out / "ablation.csv")
    plot_against_exploration(cases, "accuracy", args.out / "accuracy.png", "dev accuracy")
    plot_against_exploration(cases, "in_domain_share", args.out / "in_domain.png", "in-domain share")
    print(summary)
    print(f"\nwrote {args.out / 'ablation.md'}, ablation.csv, accuracy.png, in_domain.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
