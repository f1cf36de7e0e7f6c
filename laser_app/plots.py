"""PNG plots of a run folder (matplotlib, Agg backend): RM choice over time per domain, loss and reward
curves, accuracy per iteration per domain.

>>> import tempfile, pathlib, json
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> ev = {"iteration": 0, "step": 0, "task": "math", "rm": "rm-a", "choice_counts": {"math": {"rm-a": 8}},
...       "loss": 1.2, "dpo_loss": 0.69, "nll_loss": 0.51, "raw_reward": -1.2, "normalized_reward": 0.5}
>>> _ = (d / "events.jsonl").write_text(json.dumps(ev) + "\\n")
>>> [p.name for p in draw_all(d, metrics={"accuracy": {}, "rms": ["rm-a"]})]
['rm_choice.png', 'curves.png']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from laser_app.run_dir import RunDir

RM_CHOICE_PNG = "rm_choice.png"
CURVES_PNG = "curves.png"
ACCURACY_PNG = "accuracy.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _iteration_bounds(events: Sequence[Mapping[str, Any]]) -> list[int]:
    return [i for i in range(1, len(events)) if events[i]["iteration"] != events[i - 1]["iteration"]]


def plot_rm_choice(events: Sequence[Mapping[str, Any]], rm_names: Sequence[str], path: Path) -> Path:
    """One panel per domain: which RM each step chose for that domain's prompts (the majority under instance
    granularity), against the step number; dashed lines separate iterations."""
    plt = _pyplot()
    tasks = sorted({t for e in events for t in e.get("choice_counts", {})})
    labels = list(rm_names) + sorted({rm for e in events for c in e.get("choice_counts", {}).values()
                                      for rm in c} - set(rm_names))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9, 1.2 + 1.3 * len(tasks)), sharex=True, squeeze=False)
    bounds = _iteration_bounds(events)
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        xs, ys = [], []
        for i, e in enumerate(events):
            counts = e.get("choice_counts", {}).get(task)
            if counts:
                xs.append(i)
                ys.append(labels.index(max(counts, key=counts.__getitem__)))
        ax.scatter(xs, ys, s=14, c=ys, cmap="tab10", vmin=0, vmax=9)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(-0.5, len(labels) - 0.5)
        ax.set_ylabel(task)
        for b in bounds:
            ax.axvline(b - 0.5, color="grey", ls="--", lw=0.8)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("RM chosen per step, by domain")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rolling(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_curves(events: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Loss terms per step, and the bandit's raw and normalized reward per step by domain (points) with a
    rolling mean (lines)."""
    plt = _pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    steps = list(range(len(events)))
    for key, style in (("loss", "-"), ("dpo_loss", ":"), ("nll_loss", "--")):
        pts = [(s, e[key]) for s, e in zip(steps, events, strict=True) if e.get(key) is not None]
        if pts:
            ax1.plot(*zip(*pts, strict=True), style, lw=1, label=key)
    ax1.set_ylabel("loss")
    if ax1.has_data():
        ax1.legend(loc="upper right", fontsize=8)
    tasks = sorted({str(e.get("task")) for e in events})
    window = max(3, len(events) // 30)
    for ax, key in ((ax2, "raw_reward"), (ax3, "normalized_reward")):
        for k, task in enumerate(tasks):
            pts = [(s, e[key]) for s, e in zip(steps, events, strict=True)
                   if e.get(key) is not None and str(e.get("task")) == task]
            if pts:
                xs, ys = zip(*pts, strict=True)
                color = f"C{k % 10}"
                ax.plot(xs, ys, ".", ms=3, color=color, alpha=0.5)
                ax.plot(xs, _rolling(list(ys), window), "-", lw=1.2, color=color, label=task)
        ax.set_ylabel(key.replace("_", " "))
        if ax.has_data():
            ax.legend(loc="upper right", fontsize=8)
    ax3.set_xlabel("step")
    for b in _iteration_bounds(events):
        for ax in (ax1, ax2, ax3):
            ax.axvline(b - 0.5, color="grey", ls="--", lw=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(accuracy: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> Path:
    """Greedy accuracy per iteration (0 = before training), one line per domain, one panel per split."""
    plt = _pyplot()
    splits = list(accuracy)
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.6), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits, strict=True):
        series = accuracy[split]
        for task in series[0]:
            ys = [a.get(task) for a in series]
            mean = task == "mean"
            ax.plot(range(len(series)), ys, "s--k" if mean else "o-", lw=1.5 if mean else 1, label=task)
        ax.set_title(split)
        ax.set_xlabel("iteration (0 = before training)")
        ax.set_xticks(range(len(series)))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(run_path: str | Path, *, metrics: Mapping[str, Any] | None = None) -> list[Path]:
    """Draw every plot a run folder's events and metrics allow; returns the files written."""
    run = RunDir(run_path)
    events = run.events()
    metrics = metrics if metrics is not None else (run.metrics() or {})
    out = []
    if events:
        out.append(plot_rm_choice(events, metrics.get("rms") or [], run.file(RM_CHOICE_PNG)))
        out.append(plot_curves(events, run.file(CURVES_PNG)))
    if metrics.get("accuracy"):
        out.append(plot_accuracy(metrics["accuracy"], run.file(ACCURACY_PNG)))
    return out
