"""``laser compare``: every method through the same loop with the same seeds (the paper's Table 1), and the
evidence table: methods grouped and compared by label budget, with bootstrap intervals.

A *method* is ``sft`` (the starting policy: the "before training" accuracy every run records, no run of
its own), a selector name (``linucb``, ``random``, ``fixed:rm-a``, ``ensemble-score``, ``dev-pick``, ...), a
LASeR alias from :data:`METHOD_ALIASES`, or any of these with ``RunConfig`` overrides in brackets:
``linucb[scope=global,mab_reward=dpo+nll]``. Each method runs once per ood kind of the built-in RMs, world
seed and run seed (a *unit* is a world seed x run seed pair) into its own run folder under the compare
folder; complete runs are reused when the command is repeated, failed or interrupted ones continue from
their checkpoints (or run again when they have none).
``--preset`` fills the methods and options of a named table (:data:`PRESETS`).

The summary orders methods by the label budget their runs recorded (none, dev-N, all, oracle; DESIGN.md,
"Information budgets") and holds accuracy per domain (mean and a 95% bootstrap interval over units and
evaluation prompts), a paired bootstrap test of each method against the reference of its own budget
(Holm-corrected over the table), wall time relative to the reference, the time per step, and each LASeR
variant's in-domain share and lock-ins.

The parts: :mod:`~laser_app.compare.methods` (``--methods``, presets), :mod:`~laser_app.compare.plan`
(configs and run folders), :mod:`~laser_app.compare.execute` (running them),
:mod:`~laser_app.compare.stats` (records and the summary) with :mod:`~laser_app.compare.bootstrap` and
:mod:`~laser_app.compare.budgets`, :mod:`~laser_app.compare.render` (CSV, PNG, tables) and
:mod:`~laser_app.compare.curve` (the label-budget curve); this module runs them in order.

Layout of a compare folder::

    <out>/plan.json                                  what was asked (methods, seeds, settings)
    <out>/runs/<ood>/world<w>/<method>/seed<k>/      one run folder per ood kind, world seed, method and
                                                     seed (+ seed<k>.log)
    <out>/compare.json                               everything: settings, per-run records, failures, summary
    <out>/compare.csv                                one row per ood x world seed x method x seed x domain
    <out>/compare.md                                 the tables as Markdown, one per ood kind
    <out>/compare.png                                accuracy per method, in-domain share per LASeR variant
    <out>/label_budget.png                           accuracy against labelled prompts per task

>>> [m.label for m in parse_methods("sft, fixed:rm-a, linucb[alpha=0.2,scope=per-context], laser-dpo")]
['sft', 'fixed:rm-a', 'linucb[alpha=0.2,scope=per-context]', 'laser-dpo']
>>> dict(parse_methods("laser-dpo")[0].settings)
{'policy': 'linucb', 'mab_reward': 'dpo'}
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from laser_app.compare.bootstrap import bootstrap_mean, holm, paired_bootstrap
from laser_app.compare.budgets import budget_rank, class_references, labelled_per_task, order_by_budget
from laser_app.compare.curve import LABEL_BUDGET_PNG, plot_label_budget
from laser_app.compare.execute import Outcome, execute_run, execute_runs
from laser_app.compare.markdown import COMPARE_MD, markdown_tables
from laser_app.compare.methods import (
    ALIAS_HELP,
    DEFAULT_BASELINES,
    LASER,
    METHOD_ALIASES,
    PAPER_ALPHA,
    PRESETS,
    RESERVED_FIELDS,
    SFT,
    Method,
    MethodError,
    Preset,
    check_setting,
    default_methods,
    evidence_methods,
    get_preset,
    method_names,
    parse_method,
    parse_methods,
    pick_reference,
    split_top_level,
)
from laser_app.compare.plan import (
    PlannedRun,
    RunKey,
    SharedSettings,
    base_config,
    check_method_configs,
    compare_world,
    config_diff,
    method_config,
    parse_oods,
    parse_world_seeds,
    plan_runs,
    rm_names_for,
    run_state,
    shared_settings,
)
from laser_app.compare.render import CSV_FIELDS, TIME_PARTS, csv_rows, plot_compare, render_compare, write_csv
from laser_app.compare.stats import (
    HITS_KEYS,
    mean_std,
    paired_test,
    record_from_metrics,
    sft_records,
    summarize,
)
from laser_app.config import RunConfig
from laser_app.errors import LaserError, RunDirError
from laser_app.progress import RunsBar, runs_bar
from laser_app.run_dir import METRICS, RunDir, default_out, read_json, write_json_atomic, write_text_atomic
from laser_app.world import OOD_KINDS

if TYPE_CHECKING:
    from rich.console import Console

    from laser_app.world import World

PLAN_JSON = "plan.json"
COMPARE_JSON = "compare.json"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare.png"
#: Run seeds per method when neither ``--seeds`` nor a preset says.
DEFAULT_SEEDS = 3

__all__ = [
    "ALIAS_HELP",
    "COMPARE_CSV",
    "COMPARE_JSON",
    "COMPARE_MD",
    "COMPARE_PNG",
    "CSV_FIELDS",
    "DEFAULT_BASELINES",
    "DEFAULT_SEEDS",
    "LABEL_BUDGET_PNG",
    "LASER",
    "METHOD_ALIASES",
    "OOD_KINDS",
    "PAPER_ALPHA",
    "PLAN_JSON",
    "PRESETS",
    "RESERVED_FIELDS",
    "SFT",
    "TIME_PARTS",
    "CompareResult",
    "Method",
    "MethodError",
    "Outcome",
    "PlannedRun",
    "Preset",
    "SharedSettings",
    "bootstrap_mean",
    "budget_rank",
    "check_method_configs",
    "check_setting",
    "class_references",
    "config_diff",
    "csv_rows",
    "default_methods",
    "evidence_methods",
    "execute_run",
    "execute_runs",
    "get_preset",
    "holm",
    "labelled_per_task",
    "mean_std",
    "method_config",
    "method_names",
    "order_by_budget",
    "paired_bootstrap",
    "paired_test",
    "parse_method",
    "parse_methods",
    "parse_oods",
    "parse_world_seeds",
    "pick_reference",
    "plan_runs",
    "plot_compare",
    "plot_label_budget",
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


def run_compare(methods: Sequence[Method] | None, *, seeds: int | None = None,
                shared: Mapping[str, Any] | None = None, oods: Sequence[str] | None = None, jobs: int = 2,
                out: str | Path | None = None, reference: str | None = None, split: str | None = None,
                rerun: bool = False, progress: bool = True, console: Console | None = None,
                world_seeds: Sequence[int] | None = None, preset: str | Preset | None = None) -> CompareResult:
    """Run every method for each ood kind, world seed and run seed ``0..seeds-1`` through ``run_laser``;
    write ``compare.json``, ``compare.csv``, ``compare.png`` and ``label_budget.png`` into ``out``.

    ``methods`` default to the preset's, else :func:`default_methods`; ``shared`` holds RunConfig settings
    every run gets (method settings win; a preset's settings lose to them). ``oods`` default to the preset's,
    else every kind of the built-in RMs; they do not apply to an ``rm_registry`` of the user's.
    ``world_seeds`` default to the preset's, else the shared ``world_seed``. ``seeds`` default to the
    preset's, else :data:`DEFAULT_SEEDS`. Complete runs already in ``out`` are reused and stopped ones with a
    checkpoint continue from it (``rerun`` runs them all again). Bad input raises
    :class:`~laser_app.errors.LaserError` before anything runs; a run that fails is recorded in ``failures``
    and the others go on.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    chosen = get_preset(preset) if isinstance(preset, str) else preset
    given = dict(shared or {})
    shared = {**(chosen.settings if chosen else {}), **given}
    seeds = seeds if seeds is not None else (chosen.seeds if chosen and chosen.seeds else DEFAULT_SEEDS)
    _check_count(seeds, "--seeds")
    _check_count(jobs, "--jobs")
    base = base_config(shared)
    builtin_rms = base.rm_registry is None
    if oods is not None and not builtin_rms:
        raise LaserError("--ood sets how the built-in RMs judge other domains; it does not apply to "
                         f"--rm-registry {base.rm_registry}: drop one of them")
    if oods is None and chosen is not None and chosen.oods and builtin_rms:
        oods = list(chosen.oods)
    ood_list = list(oods) if oods is not None else (list(OOD_KINDS) if builtin_rms else [base.ood])
    worlds, world = _worlds(base, world_seeds, chosen if "world_seed" not in given else None, progress)
    rm_names = rm_names_for(base, world)
    if methods is None:
        methods = chosen.method_list(rm_names) if chosen is not None else default_methods(rm_names)
    methods = list(methods)
    if all(m.is_sft for m in methods):
        raise MethodError(["sft alone runs nothing: its numbers come from the other methods' runs; add at "
                           "least one method that trains"])
    check_method_configs(methods, shared, rm_names)
    ref = pick_reference(methods, reference)
    root = Path(out) if out is not None else default_out("compare")
    _prepare_out(root)
    plans = plan_runs(methods, shared, seeds=seeds, oods=ood_list, root=root, world_seeds=worlds)
    unique = [p for p in plans if p.shares is None]
    states = {p.key: ("pending" if rerun else run_state(p)) for p in unique}
    ood_labels = {o: (f"out-of-domain {o}" if builtin_rms else f"RMs from {base.rm_registry}")
                  for o in ood_list}
    rm_for_task = dict(world.rm_for_task) if world is not None and builtin_rms else base.rm_for_task
    settings = {"methods": [{"label": m.label, "base": m.base, "settings": dict(m.settings)}
                            for m in methods],
                "preset": chosen.name if chosen else None, "seeds": seeds, "world_seeds": worlds,
                "oods": ood_list, "jobs": jobs, "reference": ref, "split": split,
                "shared": base.model_dump(mode="json", exclude_unset=True), "rms": rm_names,
                "rm_for_task": rm_for_task}
    write_json_atomic(root / PLAN_JSON, {"created": _now(), **settings})

    pending = [p for p in unique if states[p.key] != "complete"]
    reused = len(unique) - len(pending)
    t0 = time.perf_counter()
    with runs_bar(console, total=len(unique), done=reused, enabled=progress) as bar:
        failures = _run_pending(pending, root, jobs=jobs, bar=bar, show_ood=len(ood_list) > 1,
                                show_world=len(worlds) > 1, console=console,
                                resume={key for key, state in states.items() if state == "resumable"})
    user_errors = [f for f in failures if f["status"] == "user_error"]
    if user_errors:
        f = user_errors[0]
        raise LaserError(f"{f['method']} world {f['world_seed']} seed {f['seed']} ({f['ood']}): {f['error']}")

    records = _records(plans, root, split)
    labels = [m.label for m in methods]
    learners = [m.label for m in methods if m.learns]
    summary = summarize(records, methods=labels, reference=ref, learners=learners)
    all_records = [{k: v for k, v in r.items() if k not in HITS_KEYS}
                   for r in [*records, *(sft_records(records, ref) if SFT in labels else [])]]
    data = {"created": _now(), "out": str(root), **settings, "ood_labels": ood_labels,
            "runs_total": len(unique), "runs_reused": reused, "runs_done": len(pending) - len(failures),
            "seconds": round(time.perf_counter() - t0, 3),
            "shared_runs": [{"method": p.method, "world_seed": p.world_seed, "seed": p.seed, "ood": p.ood,
                             "same_as": p.shares} for p in plans if p.shares],
            "failures": failures, "records": all_records, "summary": summary}
    files = [root / COMPARE_JSON, write_csv(all_records, root / COMPARE_CSV)]
    write_json_atomic(root / COMPARE_JSON, data)
    if summary:
        files += [_write_markdown(data, root), *_draw(data, root)]
    return CompareResult(out=root, data=data, files=files)


def _worlds(base: RunConfig, world_seeds: Sequence[int] | None, preset: Preset | None,
            progress: bool) -> tuple[list[int], World | None]:
    """The world seeds to run (given, else the preset's, else the shared ``world_seed``) and the first
    one's built-in world; every world is built here, before any run needs it."""
    worlds = list(world_seeds) if world_seeds is not None else (
        list(preset.world_seeds) if preset is not None and preset.world_seeds else [base.world_seed])
    if not worlds or any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in worlds):
        raise LaserError(f"--world-seeds must be integers >= 0, got {worlds!r}")
    world = compare_world(base.model_copy(update={"world_seed": worlds[0]}), progress=progress)
    if world is None and len(worlds) > 1:
        if world_seeds is not None:
            raise LaserError("--world-seeds picks built-in worlds, but these runs use none (--model, --data and "
                             "--rm-registry are all given); drop --world-seeds")
        worlds = [base.world_seed]  # a preset's world seeds do not apply without a built-in world
    for w in worlds[1:]:
        compare_world(base.model_copy(update={"world_seed": w}), progress=progress)
    return worlds, world


def _draw(data: Mapping[str, Any], root: Path) -> list[Path]:
    """compare.png and label_budget.png; a plot that fails is a warning (it must never lose the numbers)."""
    drawn = []
    for draw, path in ((plot_compare, root / COMPARE_PNG), (plot_label_budget, root / LABEL_BUDGET_PNG)):
        try:
            drawn.append(draw(data, path))
        except Exception as err:
            warnings.warn(f"could not draw {path}: {err}", RuntimeWarning, stacklevel=3)
    return drawn


def _run_pending(pending: Sequence[PlannedRun], root: Path, *, jobs: int, bar: RunsBar, show_ood: bool,
                 show_world: bool, console: Console, resume: Collection[RunKey] = ()) -> list[dict[str, Any]]:
    """Run ``pending`` with progress on ``bar`` (those in ``resume`` from their checkpoints); returns one entry
    per run that did not complete."""
    failures: list[dict[str, Any]] = []

    def started(run: PlannedRun) -> None:
        bar.start(run.describe(show_ood, show_world))

    def finished(run: PlannedRun, outcome: Outcome) -> None:
        bar.finish(run.describe(show_ood, show_world), ok=outcome["status"] == "complete")
        if outcome["status"] != "complete":
            failures.append({"ood": run.ood, "world_seed": run.world_seed, "method": run.method, "seed": run.seed,
                             "status": outcome["status"], "error": outcome["error"],
                             "run_dir": _rel(run.path, root), "log": _rel(run.path.with_suffix(".log"), root)})

    try:
        execute_runs(pending, jobs=jobs, resume=resume, on_start=started, on_done=finished)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted;[/] run the same command with --out {root} to resume "
                      "(complete runs are kept, stopped ones continue from their checkpoints)")
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
                                           split=split, run_dir=_rel(p.path, root), world_seed=p.world_seed))
    return records


def report_compare(path: str | Path, console: Console, *, plots: bool = True) -> list[Path]:
    """``laser report COMPARE_DIR``: print the tables of a compare folder and redraw its PNGs."""
    root = Path(path)
    if not (root / COMPARE_JSON).is_file():
        state = "has not finished yet" if (root / PLAN_JSON).is_file() else "is not a compare folder"
        raise RunDirError(f"{root} {state} (no {COMPARE_JSON}); run laser compare --out {root}")
    data = read_json(root / COMPARE_JSON)
    render_compare(data, console)
    drawn = _draw(data, root) if plots and data.get("summary") else []
    if drawn:
        console.print(f"plot: {', '.join(str(p) for p in drawn)}; tables: {_write_markdown(data, root)}")
    return drawn


def _write_markdown(data: Mapping[str, Any], root: Path) -> Path:
    """``compare.md``: the tables as Markdown, written atomically."""
    path = root / COMPARE_MD
    write_text_atomic(path, markdown_tables(data))
    return path


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
