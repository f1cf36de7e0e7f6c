"""Run summaries: turn a run's step events and evaluations into ``metrics.json``, and print it as tables.

``laser report RUN_DIR`` redraws a run's plots and prints the same closing tables as ``laser run``.

Choice shares count prompts: under batch granularity with task-homogeneous batches of equal size that is
the share of batches; under instance granularity each prompt's own RM counts. The in-domain share of a
task is the share of its last-iteration prompts routed to the RM built for it (``rm_for_task``); a task is
*locked in* when one wrong RM got at least :data:`LOCK_IN_SHARE` of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_app.errors import RunDirError
from laser_app.events import BON_PARTS, STEP_PARTS
from laser_app.run_dir import RunDir

if TYPE_CHECKING:
    from rich.console import Console

#: A domain is locked in when one wrong RM got at least this share of its last-iteration choices.
LOCK_IN_SHARE = 0.8
#: Best-of-n: the share of the stream (its end) over which RM choice shares, in-domain share and lock-in
#: are read.
TAIL_SHARE = 0.5


def _shares(counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, float]]:
    out = {}
    for task, by_rm in counts.items():
        total = sum(by_rm.values())
        out[task] = {rm: n / total for rm, n in sorted(by_rm.items())} if total else {}
    return out


def _add_counts(into: dict[str, dict[str, int]], counts: Mapping[str, Mapping[str, int]]) -> None:
    for task, by_rm in counts.items():
        slot = into.setdefault(task, {})
        for rm, n in by_rm.items():
            slot[rm] = slot.get(rm, 0) + int(n)


def _mean_of(values: Sequence[float | bool | None]) -> float | None:
    """The mean of the values given (None skipped), or None when there are none."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def summarize_run(events: Sequence[Mapping[str, Any]], *,
                  accuracy: Sequence[Mapping[str, Mapping[str, float]]], tasks: Sequence[str],
                  rm_names: Sequence[str], rm_for_task: Mapping[str, str] | None, policy: str,
                  timings: Mapping[str, float]) -> dict[str, Any]:
    """The run summary written to ``metrics.json``.

    ``accuracy[i]`` maps split -> task -> accuracy after iteration ``i`` (0 = before training).

    >>> ev = [{"iteration": 0, "choice_counts": {"math": {"rm-b": 8}}, "loss": 1.0, "skipped": False,
    ...        "seconds": {"select": 0.01, "generate": 0.5, "score": 0.2, "train": 0.29}}]
    >>> m = summarize_run(ev, accuracy=[], tasks=["math"], rm_names=["rm-a", "rm-b"],
    ...                   rm_for_task={"math": "rm-a"}, policy="linucb", timings={})
    >>> m["in_domain_share"]["per_task"], m["lock_in"]["locked"], m["timings"]["bandit_share_of_step"]
    ({'math': 0.0}, ['math'], 0.01)
    """
    iterations = sorted({int(e["iteration"]) for e in events})
    per_iter_counts: list[dict[str, dict[str, int]]] = []
    total_counts: dict[str, dict[str, int]] = {}
    loss_per_iter, reward_per_iter = [], []
    for m in iterations:
        evs = [e for e in events if e["iteration"] == m]
        counts: dict[str, dict[str, int]] = {}
        for e in evs:
            _add_counts(counts, e.get("choice_counts", {}))
        per_iter_counts.append(counts)
        _add_counts(total_counts, counts)
        loss_per_iter.append({k: _mean([e.get(k) for e in evs]) for k in ("loss", "dpo_loss", "nll_loss")})
        reward_per_iter.append({"raw": _mean([e.get("raw_reward") for e in evs]),
                                "normalized": _mean([e.get("normalized_reward") for e in evs])})
    last = per_iter_counts[-1] if per_iter_counts else {}
    last_shares = _shares(last)

    in_domain: dict[str, Any] | None = None
    lock_in: dict[str, Any] | None = None
    routed = all(rm in rm_names for shares in last_shares.values() for rm in shares)
    if rm_for_task and routed and last_shares:
        per_task = {t: last_shares[t].get(rm, 0.0)
                    for t, rm in sorted(rm_for_task.items()) if t in last_shares}
        in_domain = {"per_task": per_task, "mean": _mean(list(per_task.values()))}
        locked = {t: any(rm != rm_for_task[t] and s >= LOCK_IN_SHARE for rm, s in last_shares[t].items())
                  for t in per_task}
        lock_in = {"per_task": locked, "locked": sorted(t for t, v in locked.items() if v),
                   "threshold": LOCK_IN_SHARE}

    step_secs = {k: float(sum(e.get("seconds", {}).get(k, 0.0) for e in events)) for k in STEP_PARTS}
    step_total = sum(v for k, v in step_secs.items() if k != "diagnostics")
    n = len(events)
    bandit = step_secs["encode"] + step_secs["select"]
    time_summary: dict[str, Any] = {
        **{k: round(float(v), 3) for k, v in timings.items()},
        **{k: round(v, 3) for k, v in step_secs.items()},
        "per_step": {k: (v / n if n else None) for k, v in step_secs.items()},
        "bandit_share_of_step": bandit / step_total if step_total else None,
        "select_update_share_of_step": step_secs["select"] / step_total if step_total else None,
    }

    return {
        "policy": policy, "rms": list(rm_names), "tasks": list(tasks),
        "rm_for_task": dict(rm_for_task) if rm_for_task else None,
        "iterations": len(iterations), "steps": n,
        "skipped_steps": int(sum(bool(e.get("skipped")) for e in events)),
        "accuracy": {split: [dict(a[split]) for a in accuracy]
                     for split in (accuracy[0] if accuracy else {})},
        "choice_counts": {"per_iteration": per_iter_counts, "total": total_counts},
        "choice_share": {"per_iteration": [_shares(c) for c in per_iter_counts],
                         "total": _shares(total_counts)},
        "in_domain_share": in_domain, "lock_in": lock_in,
        "loss": {"per_iteration": loss_per_iter}, "reward": {"per_iteration": reward_per_iter},
        "pairs": {k: int(sum(e.get(k, 0) for e in events))
                  for k in ("pairs_kept", "dropped_ties", "dropped_duplicates")},
        "timings": time_summary,
        "oracle_regret": oracle_regret(events, rm_for_task),
    }


def oracle_regret(events: Sequence[Mapping[str, Any]], rm_for_task: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The bandit's regret against the oracle routing, in raw reward: over the steps that routed a one-task
    batch to one RM and logged ``counterfactual_reward`` (``--diagnostics``), the reward the task's own RM
    would have earned minus the chosen RM's. ``total`` (cumulative), ``per_step`` (mean), ``steps`` counted;
    ``None`` without diagnostics or a known RM per task. Negative when the reward prefers a wrong RM.

    >>> ev = [{"task": "math", "rm": "b", "counterfactual_reward": {"a": 0.9, "b": 0.4}},
    ...       {"task": "math", "rm": "a", "counterfactual_reward": {"a": 0.8, "b": 0.1}}]
    >>> oracle_regret(ev, {"math": "a"})
    {'total': 0.5, 'per_step': 0.25, 'steps': 2}
    """
    if not rm_for_task:
        return None
    gaps = []
    for e in events:
        cf, task = e.get("counterfactual_reward"), e.get("task")
        best = rm_for_task.get(task) if isinstance(task, str) else None
        if not cf or best is None or cf.get(best) is None or cf.get(e.get("rm")) is None:
            continue
        gaps.append(float(cf[best]) - float(cf[e["rm"]]))
    if not gaps:
        return None
    return {"total": round(sum(gaps), 6), "per_step": round(sum(gaps) / len(gaps), 6), "steps": len(gaps)}


# ------------------------------------------------------------------------------- rendering
def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def render_summary(metrics: Mapping[str, Any], console: Console, *, title: str = "") -> None:
    """Print the closing tables: accuracy per domain, RM choice share per domain, time breakdown."""
    from rich.table import Table

    acc = metrics.get("accuracy") or {}
    if acc:
        labels = metrics.get("labels")
        read = f"; labels read: {labels['source']}" if labels else ""
        table = Table(title=f"{title}accuracy per domain (greedy){read}")
        table.add_column("domain")
        for split in acc:
            table.add_column(f"{split} before", justify="right")
            table.add_column(f"{split} after", justify="right")
        domains = [d for d in next(iter(acc.values()))[0] if d != "mean"] + ["mean"]
        for d in domains:
            row = [d]
            for series in acc.values():
                row += [_fmt(series[0].get(d), pct=True), _fmt(series[-1].get(d), pct=True)]
            table.add_row(*row, style="bold" if d == "mean" else None)
        console.print(table)

    shares = metrics["choice_share"]["per_iteration"]
    if shares:
        last = shares[-1]
        seen = {rm for s in last.values() for rm in s}
        rms = list(metrics.get("rms", []))
        labels = rms if seen <= set(rms) else sorted(seen)  # an ensemble's label names all its RMs
        table = Table(title=f"{title}RM choice share per domain (last iteration)")
        table.add_column("domain")
        for rm in labels:
            table.add_column(rm, justify="right")
        in_domain, lock = metrics.get("in_domain_share"), metrics.get("lock_in")
        if in_domain:
            table.add_column("in-domain", justify="right")
            table.add_column("lock-in", justify="center")
        for task, by_rm in sorted(last.items()):
            row = [task] + [_fmt(by_rm.get(rm, 0.0), pct=True) for rm in labels]
            if in_domain:
                row += [_fmt(in_domain["per_task"].get(task), pct=True),
                        "yes" if lock and lock["per_task"].get(task) else "no"]
            table.add_row(*row)
        if in_domain:
            table.add_row("mean", *[""] * len(labels), _fmt(in_domain["mean"], pct=True), "", style="bold")
        console.print(table)

    t = metrics["timings"]
    table = Table(title=f"{title}time breakdown")
    table.add_column("part")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    total = t.get("total")
    parts = [("setup (load models, data)", "setup"), ("evaluation", "eval"), ("generate", "generate"),
             ("score (RMs + pairs)", "score"), ("train (DPO steps)", "train"),
             ("bandit: encode contexts", "encode"), ("bandit: select + update", "select"),
             ("diagnostics", "diagnostics")]
    for name, key in parts:
        if key in t and (key != "diagnostics" or t[key]):
            share = t[key] / total if total else None
            table.add_row(name, f"{t[key]:.1f}", _fmt(share, pct=True))
    if total:
        table.add_row("total", f"{total:.1f}", "100%", style="bold")
    console.print(table)
    share = t.get("bandit_share_of_step")
    per_step = t.get("per_step", {})
    step_mean = sum(v for k, v in per_step.items() if v and k != "diagnostics")
    decide = t.get("select_update_share_of_step")
    console.print(f"{metrics['steps']} steps, {step_mean:.3f} s per step; the bandit's own share of a step: "
                  f"{_fmt(share, pct=True)} (select + update alone: {_fmt(decide, pct=True)}); "
                  f"{metrics['skipped_steps']} skipped (no pair formed); "
                  f"{metrics['pairs']['pairs_kept']} pairs trained on")
    regret = metrics.get("oracle_regret")
    if regret:
        console.print(f"regret against the oracle routing (raw bandit reward, diagnostics): {regret['total']:.3f} "
                      f"over {regret['steps']} steps ({regret['per_step']:.4f} per step)")


# ------------------------------------------------------------------------------- laser report
def report_run(path: str | Path, console: Console, *, partial: bool = False,
               plots: bool = True) -> list[Path]:
    """Redraw a run folder's plots and print its summary tables; returns the PNGs drawn.

    An incomplete run (``running`` or ``failed``) is refused unless ``partial``; with ``partial`` the
    summary is rebuilt from its events and marked INCOMPLETE. Files that do not hold what a run writes
    (edited or damaged) are a :class:`RunDirError`.
    """
    from rich.errors import MarkupError

    run = RunDir.open(path)
    try:
        return _report(run, console, partial=partial, plots=plots)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, MarkupError) as err:
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise RunDirError(f"run folder {run.path} does not hold what a run writes ({detail}); its files were "
                          "edited or damaged") from None


def _report(run: RunDir, console: Console, *, partial: bool, plots: bool) -> list[Path]:
    status = run.status()
    state = run.state()  # a running run whose process is gone reads as crashed
    metrics = run.metrics()
    if run.resolved().get("mode") == "best-of-n":
        return _report_bon(run, state, metrics, console, partial=partial)
    title = ""
    if state != "complete":
        why = f": {status['error']}" if status.get("error") else ""
        if not partial:
            raise RunDirError(f"run {run.path} is not complete (state: {state}{why}); pass --partial to "
                              "report what it holds")
        from rich.markup import escape  # an error message may hold "[...]", which is not markup

        console.print(f"[bold yellow]INCOMPLETE run[/] (state: {state}{escape(why)}); numbers cover only the "
                      "steps it logged")
        title = "INCOMPLETE: "
        events = run.events()
        if not events:
            raise RunDirError(f"run {run.path} logged no steps yet; nothing to report")
        cfg, resolved = run.config(), run.resolved()
        tasks = sorted({t for e in events for t in e.get("tasks", [])})
        metrics = summarize_run(events, accuracy=[], tasks=tasks, rm_names=resolved.get("rms", []),
                                rm_for_task=resolved.get("rm_for_task"), policy=str(cfg.get("policy")),
                                timings={})
    elif metrics is None:
        raise RunDirError(f"run {run.path} is marked complete but has no metrics.json; it was modified "
                          "after the run")
    drawn: list[Path] = []
    if plots:
        from laser_app.plots import draw_all

        drawn = draw_all(run.path, metrics=metrics)
    render_summary(metrics, console, title=title)
    if drawn:
        console.print("plots: " + ", ".join(str(p) for p in drawn))
    return drawn


def _report_bon(run: RunDir, state: str, metrics: Mapping[str, Any] | None, console: Console, *,
                partial: bool) -> list[Path]:
    """Print a ``laser bon`` run's summary (rebuilt from its events when incomplete and ``partial``)."""
    if state != "complete" or metrics is None:
        if not partial:
            raise RunDirError(f"run {run.path} is not complete (state: {state}); pass --partial to report "
                              "what it holds")
        events = run.events()
        if not events:
            raise RunDirError(f"run {run.path} logged no prompts yet; nothing to report")
        cfg, resolved = run.config(), run.resolved()
        console.print(f"[bold yellow]INCOMPLETE run[/] (state: {state}); numbers cover only the prompts it "
                      "answered")
        metrics = summarize_bon(events, rm_names=resolved.get("rms", []), rm_for_task=resolved.get("rm_for_task"),
                                policy=str(cfg.get("policy")), n_responses=int(cfg.get("n_responses", 0)),
                                seconds=0.0)
    render_bon(metrics, console)
    return []


# ----------------------------------------------------------------------------- best-of-n runs
def summarize_bon(events: Sequence[Mapping[str, Any]], *, rm_names: Sequence[str],
                  rm_for_task: Mapping[str, str] | None, policy: str, n_responses: int,
                  seconds: float) -> dict[str, Any]:
    """The ``metrics.json`` of a best-of-n run: accuracy and F1 per task, the samples' own accuracy (a
    random pick), RM choice shares over the stream's last half, in-domain share and lock-in, timings.

    >>> ev = [{"tasks": ["math"] * 4, "rms": ["rm-b", "rm-a", "rm-a", "rm-a"], "correct": [False, True] * 2,
    ...        "f1": [0.0, 1.0] * 2, "sample_accuracy": [0.5] * 4, "seconds": {"select": 0.001, "generate": 0.1}}]
    >>> m = summarize_bon(ev, rm_names=["rm-a", "rm-b"], rm_for_task={"math": "rm-a"}, policy="linucb",
    ...                   n_responses=4, seconds=1.0)
    >>> m["accuracy"]["math"], m["in_domain_share"]["per_task"]["math"]  # shares: the last half only
    (0.5, 1.0)
    """
    flat = [(t, rm, c, f, s) for e in events for t, rm, c, f, s in zip(
        e["tasks"], e["rms"], e["correct"], e["f1"], e["sample_accuracy"], strict=True)]
    def logged(key: str) -> list[tuple[str, Any]]:  # (task, value) over every prompt; None where not logged
        return [(t, v) for e in events for t, v in zip(e["tasks"], e.get(key) or [None] * len(e["tasks"]),
                                                       strict=True)]

    ems, passes, oracle = logged("em"), logged("rm_passes"), logged("oracle_f1")
    tasks = sorted({t for t, *_ in flat})
    accuracy = {t: _mean_of([c for tt, _, c, _, _ in flat if tt == t]) for t in tasks}
    f1 = {t: _mean_of([f for tt, _, _, f, _ in flat if tt == t]) for t in tasks}
    em = {t: _mean_of([m for tt, m in ems if tt == t]) for t in tasks}
    oracle_f1 = {t: _mean_of([m for tt, m in oracle if tt == t]) for t in tasks}
    sampled = {t: _mean_of([s for tt, _, _, _, s in flat if tt == t]) for t in tasks}
    for table in (accuracy, f1, em, oracle_f1, sampled):
        table["mean"] = _mean_of([table[t] for t in tasks])
    tail = flat[int(len(flat) * (1 - TAIL_SHARE)):]
    shares: dict[str, dict[str, float]] = {}
    for t in tasks:
        routed = Counter(rm for tt, rm, *_ in tail if tt == t)
        total = sum(routed.values())
        shares[t] = {rm: n / total for rm, n in sorted(routed.items())} if total else {}
    in_domain = lock_in = None
    if rm_for_task and all(rm in rm_names for s in shares.values() for rm in s):
        per_task = {t: shares[t].get(rm_for_task[t], 0.0) for t in tasks if t in rm_for_task}
        in_domain = {"per_task": per_task, "mean": _mean_of(list(per_task.values()))}
        locked = sorted(t for t in per_task if any(rm != rm_for_task[t] and s >= LOCK_IN_SHARE
                                                  for rm, s in shares[t].items()))
        lock_in = {"locked": locked, "threshold": LOCK_IN_SHARE}
    secs = {k: float(sum(e.get("seconds", {}).get(k, 0.0) for e in events))
            for k in BON_PARTS}
    per_prompt = sum(secs.values())
    return {"mode": "best-of-n", "policy": policy, "rms": list(rm_names), "n_responses": n_responses,
            "prompts": len(flat), "tasks": tasks, "accuracy": accuracy, "f1": f1, "em": em,
            "oracle_f1": oracle_f1, "rm_passes_per_prompt": _mean_of([m for _, m in passes]),
            "sample_accuracy": sampled,
            "choice_share_tail": shares, "in_domain_share": in_domain, "lock_in": lock_in,
            "timings": {"total": round(seconds, 3), **{k: round(v, 3) for k, v in secs.items()},
                        "bandit_share": (secs["encode"] + secs["select"]) / per_prompt if per_prompt else None}}


def render_bon(metrics: Mapping[str, Any], console: Console) -> None:
    """Print a best-of-n run's summary: accuracy, F1, exact match and the samples' accuracy per task (a
    LongBench dataset is a task); RM shares."""
    from rich.table import Table

    table = Table(title=f"best-of-{metrics['n_responses']} with {metrics['policy']}")
    for col in ("task", "accuracy", "token F1", "exact match", "a random sample", "in-domain RM (last half)"):
        table.add_column(col, justify="left" if col == "task" else "right")
    in_domain = (metrics.get("in_domain_share") or {}).get("per_task", {})
    for t in [*metrics["tasks"], "mean"]:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}%"
        share = in_domain.get(t) if t != "mean" else (metrics.get("in_domain_share") or {}).get("mean")
        table.add_row(t, pct(metrics["accuracy"].get(t)), pct(metrics["f1"].get(t)),
                      pct(metrics.get("em", {}).get(t)), pct(metrics["sample_accuracy"].get(t)), pct(share))
    console.print(table)
    locked = (metrics.get("lock_in") or {}).get("locked")
    if locked:
        console.print(f"[yellow]locked onto a wrong RM:[/] {', '.join(locked)}")
    share = metrics["timings"].get("bandit_share")
    console.print(f"{metrics['prompts']} prompts in {metrics['timings']['total']:.1f} s; the bandit's share "
                  f"of the per-prompt work: {'-' if share is None else f'{100 * share:.1f}%'}")
    passes, oracle = metrics.get("rm_passes_per_prompt"), (metrics.get("oracle_f1") or {}).get("mean")
    if passes is not None:
        console.print(f"RM forward passes per prompt: {passes:.1f}; the best of the samples (pass@n) would "
                      f"reach token F1 {'-' if oracle is None else f'{100 * oracle:.1f}%'}")
