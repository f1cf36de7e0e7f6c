"""``laser compare``: every method through the same loop with the same seeds (the paper's Table 1).

A *method* is ``sft`` (the starting policy: the "before training" accuracy every run records, no run of
its own), a selector name (``linucb``, ``random``, ``fixed:rm-a``, ``ensemble-score``, ...), a LASeR alias
from :data:`METHOD_ALIASES`, or any of these with ``RunConfig`` overrides in brackets:
``linucb[scope=global,mab_reward=dpo+nll]``. Each method runs once per seed (and per out-of-domain kind
of the built-in RMs) into its own run folder under the compare folder; complete runs are reused when the
command is repeated, failed or interrupted ones run again. The summary holds accuracy per domain (mean and
std over seeds), a paired t-test of the reference LASeR variant against every other method, wall time
relative to it, the time per step, and each LASeR variant's in-domain share and lock-ins.

The parts: :mod:`~laser_app.compare.methods` (``--methods``), :mod:`~laser_app.compare.plan` (configs
and run folders), :mod:`~laser_app.compare.execute` (running them), :mod:`~laser_app.compare.stats`
(records and the summary), :mod:`~laser_app.compare.render` (CSV, PNG, tables); this module runs them in
order.

Layout of a compare folder::

    <out>/plan.json                    what was asked (methods, seeds, settings)
    <out>/runs/<ood>/<method>/seed<k>/ one run folder per method, seed and ood kind (+ seed<k>.log)
    <out>/compare.json                 everything: settings, per-run records, failures, the summary
    <out>/compare.csv                  one row per ood x method x seed x domain (domain "mean" too)
    <out>/compare.png                  average accuracy per method, in-domain share per LASeR variant

>>> [m.label for m in parse_methods("sft, fixed:rm-a, linucb[alpha=0.2,scope=per-context], laser-dpo")]
['sft', 'fixed:rm-a', 'linucb[alpha=0.2,scope=per-context]', 'laser-dpo']
>>> dict(parse_methods("laser-dpo")[0].settings)
{'policy': 'linucb', 'mab_reward': 'dpo'}
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from laser_app.compare.execute import Outcome, execute_run, execute_runs
from laser_app.compare.methods import (
    ALIAS_HELP,
    DEFAULT_BASELINES,
    LASER,
    METHOD_ALIASES,
    PAPER_ALPHA,
    RESERVED_FIELDS,
    SFT,
    Method,
    MethodError,
    check_setting,
    default_methods,
    method_names,
    parse_method,
    parse_methods,
    pick_reference,
    split_top_level,
)
from laser_app.compare.plan import (
    PlannedRun,
    SharedSettings,
    base_config,
    check_method_configs,
    compare_world,
    config_diff,
    method_config,
    parse_oods,
    plan_runs,
    rm_names_for,
    run_state,
    shared_settings,
)
from laser_app.compare.render import CSV_FIELDS, TIME_PARTS, csv_rows, plot_compare, render_compare, write_csv
from laser_app.compare.stats import mean_std, paired_test, record_from_metrics, sft_records, summarize
from laser_app.errors import LaserError, RunDirError
from laser_app.progress import RunsBar, runs_bar
from laser_app.run_dir import METRICS, RunDir, default_out, read_json, write_json_atomic
from laser_app.world import OOD_KINDS

if TYPE_CHECKING:
    from rich.console import Console

PLAN_JSON = "plan.json"
COMPARE_JSON = "compare.json"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare.png"

__all__ = [
    "ALIAS_HELP",
    "COMPARE_CSV",
    "COMPARE_JSON",
    "COMPARE_PNG",
    "CSV_FIELDS",
    "DEFAULT_BASELINES",
    "LASER",
    "METHOD_ALIASES",
    "OOD_KINDS",
    "PAPER_ALPHA",
    "PLAN_JSON",
    "RESERVED_FIELDS",
    "SFT",
    "TIME_PARTS",
    "CompareResult",
    "Method",
    "MethodError",
    "Outcome",
    "PlannedRun",
    "SharedSettings",
    "check_method_configs",
    "check_setting",
    "config_diff",
    "csv_rows",
    "default_methods",
    "execute_run",
    "execute_runs",
    "mean_std",
    "method_config",
    "method_names",
    "paired_test",
    "parse_method",
    "parse_methods",
    "parse_oods",
    "pick_reference",
    "plan_runs",
    "plot_compare",
    "record_from_metrics",
    "render_compare",
    "report_compare",
    "rm_names_for",
    "run_compare",
    "run_state",
    "sft_records",
    "shared_settings",
    "split_top_level",
    "summarize",
    "write_csv",
]


@dataclass
class CompareResult:
    """What :func:`run_compare` returns: the compare folder, the ``compare.json`` document, the files."""

    out: Path
    data: dict[str, Any]
    files: list[Path]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The runs that failed (``data["failures"]``)."""
        return list(self.data.get("failures", []))


def _check_count(value: Any, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LaserError(f"{flag} must be an integer >= 1, got {value!r}")


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / PLAN_JSON).is_file():
        raise RunDirError(f"--out {out} is a non-empty folder that is not a compare folder (no {PLAN_JSON}); "
                          "choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def run_compare(methods: Sequence[Method] | None, *, seeds: int, shared: Mapping[str, Any] | None = None,
                oods: Sequence[str] | None = None, jobs: int = 2, out: str | Path | None = None,
                reference: str | None = None, split: str | None = None, rerun: bool = False,
                progress: bool = True, console: Console | None = None) -> CompareResult:
    """Run every method for seeds ``0..seeds-1`` (and each ood kind) through ``run_laser``; write
    ``compare.json``, ``compare.csv`` and ``compare.png`` into the compare folder ``out``.

    ``methods`` default to :func:`default_methods`; ``shared`` holds RunConfig settings every run gets
    (method settings win). ``oods`` default to both kinds for the built-in RMs; they do not apply to an
    ``rm_registry`` of the user's. Complete runs already in ``out`` are reused (``rerun`` runs them again).
    Bad input raises :class:`~laser_app.errors.LaserError` before anything runs; a run that fails is
    recorded in ``failures`` and the others go on.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    _check_count(seeds, "--seeds")
    _check_count(jobs, "--jobs")
    shared = dict(shared or {})
    base = base_config(shared)
    builtin_rms = base.rm_registry is None
    if oods is not None and not builtin_rms:
        raise LaserError("--ood sets how the built-in RMs judge other domains; it does not apply to "
                         f"--rm-registry {base.rm_registry}: drop one of them")
    ood_list = list(oods) if oods is not None else (list(OOD_KINDS) if builtin_rms else [base.ood])
    world = compare_world(base, progress=progress)
    rm_names = rm_names_for(base, world)
    methods = list(methods) if methods is not None else default_methods(rm_names)
    if all(m.is_sft for m in methods):
        raise MethodError(["sft alone runs nothing: its numbers come from the other methods' runs; add at "
                           "least one method that trains"])
    check_method_configs(methods, shared, rm_names)
    ref = pick_reference(methods, reference)
    root = Path(out) if out is not None else default_out("compare")
    _prepare_out(root)
    plans = plan_runs(methods, shared, seeds=seeds, oods=ood_list, root=root)
    unique = [p for p in plans if p.shares is None]
    states = {p.key: ("pending" if rerun else run_state(p)) for p in unique}
    ood_labels = {o: (f"out-of-domain {o}" if builtin_rms else f"RMs from {base.rm_registry}")
                  for o in ood_list}
    rm_for_task = dict(world.rm_for_task) if world is not None and builtin_rms else base.rm_for_task
    settings = {"methods": [{"label": m.label, "base": m.base, "settings": dict(m.settings)}
                            for m in methods],
                "seeds": seeds, "oods": ood_list, "jobs": jobs, "reference": ref, "split": split,
                "shared": base.model_dump(mode="json", exclude_unset=True), "rms": rm_names,
                "rm_for_task": rm_for_task}
    write_json_atomic(root / PLAN_JSON, {"created": _now(), **settings})

    pending = [p for p in unique if states[p.key] != "complete"]
    reused = len(unique) - len(pending)
    t0 = time.perf_counter()
    with runs_bar(console, total=len(unique), done=reused, enabled=progress) as bar:
        failures = _run_pending(pending, root, jobs=jobs, bar=bar, show_ood=len(ood_list) > 1, console=console)
    user_errors = [f for f in failures if f["status"] == "user_error"]
    if user_errors:
        f = user_errors[0]
        raise LaserError(f"{f['method']} seed {f['seed']} ({f['ood']}): {f['error']}")

    records = _records(plans, root, split)
    labels = [m.label for m in methods]
    learners = [m.label for m in methods if m.learns]
    summary = summarize(records, methods=labels, reference=ref, learners=learners)
    all_records = [*records, *(sft_records(records, ref) if SFT in labels else [])]
    data = {"created": _now(), "out": str(root), **settings, "ood_labels": ood_labels,
            "runs_total": len(unique), "runs_reused": reused, "runs_done": len(pending) - len(failures),
            "seconds": round(time.perf_counter() - t0, 3),
            "shared_runs": [{"method": p.method, "seed": p.seed, "ood": p.ood, "same_as": p.shares}
                            for p in plans if p.shares],
            "failures": failures, "records": all_records, "summary": summary}
    files = [root / COMPARE_JSON, write_csv(all_records, root / COMPARE_CSV)]
    write_json_atomic(root / COMPARE_JSON, data)
    if summary:
        try:
            files.append(plot_compare(data, root / COMPARE_PNG))
        except Exception as err:  # a plot must never lose the numbers
            warnings.warn(f"could not draw {root / COMPARE_PNG}: {err}", RuntimeWarning, stacklevel=2)
    return CompareResult(out=root, data=data, files=files)


def _run_pending(pending: Sequence[PlannedRun], root: Path, *, jobs: int, bar: RunsBar, show_ood: bool,
                 console: Console) -> list[dict[str, Any]]:
    """Run ``pending`` with progress on ``bar``; returns one entry per run that did not complete."""
    failures: list[dict[str, Any]] = []

    def started(run: PlannedRun) -> None:
        bar.start(run.describe(show_ood))

    def finished(run: PlannedRun, outcome: Outcome) -> None:
        bar.finish(run.describe(show_ood), ok=outcome["status"] == "complete")
        if outcome["status"] != "complete":
            failures.append({"ood": run.ood, "method": run.method, "seed": run.seed,
                             "status": outcome["status"], "error": outcome["error"],
                             "run_dir": _rel(run.path, root), "log": _rel(run.path.with_suffix(".log"), root)})

    try:
        execute_runs(pending, jobs=jobs, on_start=started, on_done=finished)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted;[/] run the same command with --out {root} to resume "
                      "(complete runs are kept)")
        raise
    return failures


def _records(plans: Sequence[PlannedRun], root: Path, split: str | None) -> list[dict[str, Any]]:
    """One record per planned run that is complete (a shared run gives a record per method)."""
    records = []
    for p in plans:
        metrics_path = p.path / METRICS
        state = RunDir(p.path).status()["state"] if (p.path / "status.json").is_file() else "missing"
        if state != "complete" or not metrics_path.is_file():
            continue
        records.append(record_from_metrics(read_json(metrics_path), ood=p.ood, method=p.method, seed=p.seed,
                                           split=split, run_dir=_rel(p.path, root)))
    return records


def report_compare(path: str | Path, console: Console, *, plots: bool = True) -> list[Path]:
    """``laser report COMPARE_DIR``: print the tables of a compare folder and redraw its PNG."""
    root = Path(path)
    if not (root / COMPARE_JSON).is_file():
        state = "has not finished yet" if (root / PLAN_JSON).is_file() else "is not a compare folder"
        raise RunDirError(f"{root} {state} (no {COMPARE_JSON}); run laser compare --out {root}")
    data = read_json(root / COMPARE_JSON)
    render_compare(data, console)
    drawn = [plot_compare(data, root / COMPARE_PNG)] if plots and data.get("summary") else []
    if drawn:
        console.print("plot: " + ", ".join(str(p) for p in drawn))
    return drawn


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
