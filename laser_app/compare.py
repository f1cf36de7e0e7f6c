"""``laser compare``: every method through the same loop with the same seeds (the paper's Table 1).

A *method* is ``sft`` (the starting policy: the "before training" accuracy every run records, no run of
its own), a selector name (``linucb``, ``random``, ``fixed:rm-a``, ``ensemble-score``, ...), a LASeR alias
from :data:`METHOD_ALIASES`, or any of these with ``RunConfig`` overrides in brackets:
``linucb[scope=global,mab_reward=dpo+nll]``. Each method runs once per seed (and per out-of-domain kind
of the built-in RMs) into its own run folder under the compare folder; complete runs are reused when the
command is repeated, failed or interrupted ones run again. The summary holds accuracy per domain (mean and
std over seeds), a paired t-test of the reference LASeR variant against every other method, wall time
relative to it, the time per step, and each LASeR variant's in-domain share and lock-ins.

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

import csv
import difflib
import hashlib
import json
import os
import re
import time
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from pydantic import ValidationError

from laser_app.config import (
    BASELINE_POLICIES,
    LEARNING_POLICIES,
    RunConfig,
    format_validation_error,
    load_config_file,
)
from laser_app.errors import LaserError, RunDirError
from laser_app.run_dir import CONFIG, METRICS, RunDir, default_out, read_json, write_json_atomic

if TYPE_CHECKING:
    from rich.console import Console

SFT = "sft"
#: The default LASeR variant: the reference of the paired tests and of relative wall time.
LASER = "laser"
#: LinUCB's alpha in the paper's reference code (``LinUCB(d, K, alpha=0.1)``, rewards in [0, 1]).
PAPER_ALPHA = 0.1

#: LASeR variants by name: ``RunConfig`` settings over the shared ones (``policy`` defaults to RunConfig's).
METHOD_ALIASES: dict[str, dict[str, Any]] = {
    # the default LASeR variant: RunConfig's defaults, whatever they are
    "laser": {},
    # the paper's bandit: LinUCB (ridge 1, no discount), one RM per batch, reward = -(DPO + NLL loss)
    # normalized by global 20/80 quantiles and learned as is (no baseline). The loop's own settings
    # (context encoder, beta, NLL weight, ...) stay shared; their defaults are the paper's.
    "laser-paper": {"policy": "linucb", "alpha": PAPER_ALPHA, "ridge": 1.0, "discount": 1.0,
                    "granularity": "batch", "mab_reward": "dpo+nll", "scope": "global",
                    "normalizer": "quantile", "quantile_low": 0.2, "quantile_high": 0.8,
                    "reward_baseline": 0.0},
    "laser-percontext": {"scope": "per-context"},
    "laser-dpo": {"mab_reward": "dpo"},
    "laser-instance": {"granularity": "instance"},
}
#: One line per alias, for help texts.
ALIAS_HELP: dict[str, str] = {
    "laser": "the default LASeR variant (RunConfig's defaults)",
    "laser-paper": f"the paper's settings (dpo+nll reward, global quantiles, raw normalized reward, "
                   f"alpha {PAPER_ALPHA})",
    "laser-percontext": "default LASeR with per-context (per-task) reward normalization",
    "laser-dpo": "default LASeR with the DPO term alone as the bandit reward",
    "laser-instance": "default LASeR choosing an RM per prompt (instance granularity)",
}
#: Alias settings applied only when RunConfig has the field.
_OPTIONAL_FIELDS = frozenset({"reward_baseline"})
#: RunConfig fields that compare sets per run; a method or shared setting may not set them.
RESERVED_FIELDS: dict[str, str] = {
    "policy": "each method is its own policy; name it in --methods (e.g. lints or lints[alpha=0.5])",
    "seed": "compare runs seeds 0..N-1; use --seeds N",
    "ood": "use compare's --ood (e.g. --ood bias,noise)",
    "out": "use compare's --out for the compare folder",
    "overwrite": "use compare's --rerun to run complete runs again",
}
OOD_KINDS = ("bias", "noise")
#: Baselines in the default method list (with sft, fixed:<each RM> and the LASeR aliases).
DEFAULT_BASELINES = ("random", "sequential", "ensemble-score", "ensemble-agree", "oracle")
#: Parts of a step's time shown in the time breakdown (seconds per step).
TIME_PARTS = ("generate", "score", "train", "select", "encode")

PLAN_JSON = "plan.json"
COMPARE_JSON = "compare.json"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare.png"
CSV_FIELDS = ("ood", "method", "seed", "domain", "accuracy", "before", "in_domain_share", "locked_in",
              "wall_seconds", "run_dir")


class MethodError(LaserError):
    """Bad ``--methods``: one message line per problem (``lines``)."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


# ======================================================================================= methods
@dataclass(frozen=True)
class Method:
    """One row of the comparison: ``settings`` are the RunConfig values it sets (its policy included)."""

    label: str
    base: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_sft(self) -> bool:
        """Whether this is the starting policy (no run of its own)."""
        return self.base == SFT

    @property
    def policy(self) -> str | None:
        """The ``--policy`` its runs use (``None`` for sft)."""
        return None if self.is_sft else str(self.settings["policy"])

    @property
    def learns(self) -> bool:
        """Whether a bandit chooses the RM (a LASeR variant), so in-domain share and lock-in apply."""
        return self.policy in LEARNING_POLICIES

    @property
    def slug(self) -> str:
        """A folder name: the label made file-safe, plus a short hash when the label has overrides."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-")
        if "[" in self.label:
            slug += "-" + hashlib.sha1(self.label.encode()).hexdigest()[:6]
        return slug


def method_names() -> list[str]:
    """Every valid method name (``fixed:NAME`` with an RM name); overrides go in brackets after any but sft.

    >>> method_names()[:3]
    ['sft', 'laser', 'laser-paper']
    """
    return [SFT, *METHOD_ALIASES, *LEARNING_POLICIES, *BASELINE_POLICIES, "fixed:NAME"]


def split_top_level(text: str) -> list[str]:
    """Split ``text`` on commas outside brackets.

    >>> split_top_level("sft,linucb[alpha=0.2,scope=global],random")
    ['sft', 'linucb[alpha=0.2,scope=global]', 'random']
    """
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise MethodError([f"--methods {text!r}: brackets cannot nest (at position {i})"])
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise MethodError([f"--methods {text!r}: ']' without '[' (at position {i})"])
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise MethodError([f"--methods {text!r}: '[' is never closed; write NAME[key=value,...]"])
    items.append(text[start:])
    return [s.strip() for s in items]


def parse_value(raw: str) -> Any:
    """A setting's value read as a YAML scalar (``3``, ``0.5``, ``true``, ``null``), else the text.

    >>> parse_value("0.5"), parse_value("dpo+nll"), parse_value("true"), parse_value("rm-a,rm-b")
    (0.5, 'dpo+nll', True, 'rm-a,rm-b')
    """
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw
    return value if value is None or isinstance(value, str | int | float | bool) else raw


def check_setting(key: str, where: str, *, flag: bool = False) -> str:
    """``key`` as a RunConfig field name (dashes become underscores); raises for unknown or reserved keys
    (suggesting close names, as flags when ``flag``)."""
    name = key.strip().replace("-", "_")
    if name in RESERVED_FIELDS:
        raise MethodError([f"{where}: {name!r} cannot be set here: {RESERVED_FIELDS[name]}"])
    if name not in RunConfig.model_fields:
        close = difflib.get_close_matches(name, list(RunConfig.model_fields), n=3)
        shown = ["--" + c.replace("_", "-") for c in close] if flag else close
        hint = f"did you mean {', '.join(shown)}? " if close else ""
        raise MethodError([f"{where}: unknown setting {key.strip()!r}; {hint}valid settings are the "
                           "fields of laser run (see laser run --help)"])
    return name


def _parse_overrides(name: str, body: str, spec: str) -> tuple[dict[str, Any], list[str]]:
    """``key=value,key=value`` -> ({field: value}, ["key=raw", ...]); a part without ``=`` continues the
    previous value (``rms=rm-a,rm-b``)."""
    raw: dict[str, str] = {}
    last: str | None = None
    for part in body.split(","):
        part = part.strip()
        if "=" in part:
            key, _, value = part.partition("=")
            last = check_setting(key, f"method {spec!r}")
            if last in raw:
                raise MethodError([f"method {spec!r}: {last} is set twice"])
            raw[last] = value.strip()
        elif last is not None and part:
            raw[last] += "," + part
        else:
            raise MethodError([f"method {spec!r}: expected key=value inside the brackets, got {part!r}; "
                               f"e.g. {name}[alpha=0.2,scope=per-context]"])
    return {k: parse_value(v) for k, v in raw.items()}, [f"{k}={v}" for k, v in raw.items()]


def parse_method(spec: str) -> Method:
    """Parse one method: ``NAME`` or ``NAME[key=value,...]`` (see :func:`method_names`).

    >>> m = parse_method("linucb[scope=global, mab-reward=dpo+nll]")
    >>> m.label
    'linucb[scope=global,mab_reward=dpo+nll]'
    >>> dict(m.settings)
    {'policy': 'linucb', 'scope': 'global', 'mab_reward': 'dpo+nll'}
    """
    match = re.fullmatch(r"\s*([^\[\]]*?)\s*(?:\[(.*)\])?\s*", spec)
    name = match.group(1) if match else ""
    if not name:
        raise MethodError([f"empty method name in {spec!r}; valid: {', '.join(method_names())}"])
    valid = name in (SFT, *METHOD_ALIASES, *LEARNING_POLICIES, *BASELINE_POLICIES)
    if name.startswith("fixed:"):
        if not name[len("fixed:"):].strip():
            raise MethodError([f"method {spec!r}: fixed:NAME needs an RM name after the colon, "
                               "e.g. fixed:rm-a"])
        valid = True
    if not valid:
        raise MethodError([f"unknown method {name!r}; valid: {', '.join(method_names())}"])
    body = match.group(2) if match else None
    if name == SFT:
        if body is not None:
            raise MethodError([f"method {spec!r}: sft is the starting policy and takes no settings"])
        return Method(label=SFT, base=SFT)
    overrides, shown = _parse_overrides(name, body, spec) if body is not None and body.strip() else ({}, [])
    if name in METHOD_ALIASES:
        alias = {k: v for k, v in METHOD_ALIASES[name].items()
                 if k not in _OPTIONAL_FIELDS or k in RunConfig.model_fields}
        settings = {"policy": alias.pop("policy", RunConfig.model_fields["policy"].default), **alias}
    else:
        settings = {"policy": name}
    settings.update(overrides)
    label = f"{name}[{','.join(shown)}]" if shown else name
    return Method(label=label, base=name, overrides=overrides, settings=settings)


def parse_methods(text: str | Sequence[str]) -> list[Method]:
    """Parse ``--methods``: methods separated by commas outside brackets (see :func:`parse_method`)."""
    items = split_top_level(text) if isinstance(text, str) else [s.strip() for s in text]
    if not any(items):
        raise MethodError([f"--methods is empty; valid: {', '.join(method_names())}"])
    methods = [parse_method(item) for item in items if item]
    seen: set[str] = set()
    for m in methods:
        if m.label in seen:
            raise MethodError([f"method {m.label!r} is listed twice in --methods"])
        seen.add(m.label)
    return methods


def default_methods(rm_names: Sequence[str]) -> list[Method]:
    """sft, each single RM, the baselines and every LASeR alias.

    >>> [m.label for m in default_methods(["rm-a", "rm-b"])][:4]
    ['sft', 'fixed:rm-a', 'fixed:rm-b', 'random']
    """
    names = [SFT, *(f"fixed:{rm}" for rm in rm_names), *DEFAULT_BASELINES, *METHOD_ALIASES]
    return [parse_method(n) for n in names]


def pick_reference(methods: Sequence[Method], reference: str | None = None) -> str | None:
    """The method the others are tested against: ``reference``, else ``laser``, else the first learner."""
    labels = [m.label for m in methods]
    if reference is not None:
        if reference not in labels:
            raise MethodError([f"--reference {reference!r} is not among the methods ({', '.join(labels)})"])
        return reference
    if LASER in labels:
        return LASER
    return next((m.label for m in methods if m.learns), None)


# ======================================================================================= configs
class SharedSettings(NamedTuple):
    """What :func:`shared_settings` returns."""

    values: dict[str, Any]
    dropped: list[str]
    ood: str | None


def shared_settings(config_file: str | Path | None, overrides: Mapping[str, Any]) -> SharedSettings:
    """The settings every run shares: ``--config`` file values overridden by flags. The file's ``policy``,
    ``seed``, ``out`` and ``overwrite`` are dropped (compare sets them per run; their names are returned)
    and its ``ood``, if any, is returned apart (compare's ``--ood`` default).

    >>> shared_settings(None, {"iterations": "2", "batch-size": 4}).values
    {'iterations': '2', 'batch_size': 4}
    """
    values = load_config_file(config_file) if config_file is not None else {}
    ood = values.pop("ood", None)
    dropped = sorted(k for k in values if k in RESERVED_FIELDS)
    values = {k: v for k, v in values.items() if k not in RESERVED_FIELDS}
    for key, value in overrides.items():
        if value is not None:
            values[check_setting(key, "compare")] = value
    return SharedSettings(values, dropped, None if ood is None else str(ood))


def method_config(method: Method, shared: Mapping[str, Any], **per_run: Any) -> RunConfig:
    """One run's RunConfig: ``method``'s settings over the shared ones, ``per_run`` over both."""
    return RunConfig.model_validate({**shared, **method.settings, **per_run})


def check_method_configs(methods: Sequence[Method], shared: Mapping[str, Any],
                         rm_names: Sequence[str]) -> None:
    """Validate every method's settings before anything runs: one error line per field and method."""
    try:
        RunConfig.model_validate(dict(shared))
    except ValidationError as err:
        raise MethodError(["invalid configuration: " + line
                           for line in format_validation_error(err)]) from None
    lines: list[str] = []
    for m in methods:
        if m.is_sft:
            continue
        fixed = m.base[len("fixed:"):] if m.base.startswith("fixed:") else None
        if fixed is not None and fixed not in rm_names:
            lines.append(f"method {m.label}: RM {fixed!r} is not among the RMs in use; valid names: "
                         f"{', '.join(rm_names)}")
            continue
        try:
            method_config(m, shared)
        except ValidationError as err:
            lines += [f"method {m.label}: {line}" for line in format_validation_error(err)]
    if lines:
        raise MethodError(lines)


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("out", "overwrite")}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The settings that differ between two config dumps (``out`` and ``overwrite`` ignored).

    >>> config_diff({"iterations": 2, "out": "a"}, {"iterations": 3, "out": "b"})
    ['iterations: 2 -> 3']
    """
    a, b = _comparable(old), _comparable(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}".replace("'", "") for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


# ======================================================================================= planning
@dataclass
class PlannedRun:
    """One run of one method for one seed and ood kind; ``shares`` names the method whose identical run
    (same settings) it reuses."""

    ood: str
    method: str
    seed: int
    path: Path
    config: RunConfig
    shares: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return self.ood, self.method, self.seed

    def describe(self, show_ood: bool) -> str:
        return f"{self.method} seed {self.seed}" + (f" ({self.ood})" if show_ood else "")


def plan_runs(methods: Sequence[Method], shared: Mapping[str, Any], *, seeds: int, oods: Sequence[str],
              root: Path) -> list[PlannedRun]:
    """Every run to do, ordered ood -> seed -> method, so a partial compare has whole seeds."""
    plans: list[PlannedRun] = []
    for ood in oods:
        for seed in range(seeds):
            seen: dict[str, PlannedRun] = {}
            for m in methods:
                if m.is_sft:
                    continue
                path = root / "runs" / ood / m.slug / f"seed{seed}"
                cfg = method_config(m, shared, seed=seed, ood=ood, out=path, overwrite=True)
                key = json.dumps(_comparable(cfg.model_dump(mode="json")), sort_keys=True)
                first = seen.get(key)
                if first is not None:
                    plans.append(PlannedRun(ood, m.label, seed, first.path, first.config,
                                            shares=first.method))
                    continue
                seen[key] = run = PlannedRun(ood, m.label, seed, path, cfg)
                plans.append(run)
    return plans


def run_state(run: PlannedRun) -> str:
    """``complete`` (reusable), ``pending`` (missing, failed or interrupted) or raises when the folder holds
    a complete run made with other settings, or something that is not a run folder."""
    path = run.path
    if not path.exists():
        return "pending"
    try:
        status = RunDir.open(path).status()
    except RunDirError:
        if path.is_dir() and not any(path.iterdir()):
            return "pending"
        raise RunDirError(f"{path} exists but is not a run folder; move it away or choose another "
                          "--out") from None
    if status["state"] != "complete" or not (path / METRICS).is_file():
        return "pending"
    old = read_json(path / CONFIG) if (path / CONFIG).is_file() else {}
    diff = config_diff(old, run.config.model_dump(mode="json"))
    if diff:
        raise RunDirError(f"run folder {path} was made with other settings ({'; '.join(diff[:5])}); pass "
                          "--rerun to replace the compare's runs, or choose another --out")
    return "complete"


# ======================================================================================= execution
def execute_run(config: dict[str, Any], log_path: str) -> dict[str, Any]:
    """Run one configuration (in a worker process or in-process); never raises for a failed run.

    Returns ``{"status": "complete" | "failed" | "user_error", "error": str | None, "seconds": float}``;
    the run's console output and warnings go to ``log_path``.
    """
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app.loop import run_laser

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        status, error = "complete", None
        try:
            cfg = RunConfig.model_validate(config)
            run_laser(cfg, progress=False, console=Console(file=log, width=120, no_color=True))
        except (LaserError, ValidationError) as err:
            status = "user_error"
            error = str(err) if isinstance(err, LaserError) else "; ".join(format_validation_error(err))
        except Exception as err:
            status, error = "failed", f"{type(err).__name__}: {' '.join(str(err).split())}"
            log.write(traceback.format_exc())
        for w in caught:
            log.write(f"warning: {w.category.__name__}: {w.message}\n")
    return {"status": status, "error": error, "seconds": time.perf_counter() - t0}


_WORKER_LIMITS: list[Any] = []


def _init_worker() -> None:
    """One torch thread and one BLAS thread per worker: on 2 shared cores more threads are slower."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        _WORKER_LIMITS.append(threadpool_limits(1))
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before any parallel work
        pass


@contextmanager
def _one_thread() -> Iterator[None]:
    """In-process runs get the same thread limits as workers; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = None
    else:
        limits = threadpool_limits(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if limits is not None:
            limits.restore_original_limits()


Outcome = dict[str, Any]


def execute_runs(runs: Sequence[PlannedRun], *, jobs: int,
                 on_start: Callable[[PlannedRun], None] = lambda run: None,
                 on_done: Callable[[PlannedRun, Outcome], None] = lambda run, out: None) -> dict[
                     tuple[str, str, int], Outcome]:
    """Run ``runs``: in this process when ``jobs`` is 1, else in ``jobs`` spawned worker processes.

    A user error (bad data, missing model, ...) stops the remaining runs, since every run would hit it.
    """
    outcomes: dict[tuple[str, str, int], Outcome] = {}
    if not runs:
        return outcomes
    payload = [(r.config.model_dump(mode="json"), str(r.path.with_suffix(".log"))) for r in runs]
    if jobs == 1:
        with _one_thread():
            for run, args in zip(runs, payload, strict=True):
                on_start(run)
                outcomes[run.key] = out = execute_run(*args)
                on_done(run, out)
                if out["status"] == "user_error":
                    break
        return outcomes

    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(runs)), mp_context=ctx,
                             initializer=_init_worker) as pool:
        futures: dict[Future[Outcome], PlannedRun] = {}
        for run, args in zip(runs, payload, strict=True):
            futures[pool.submit(execute_run, *args)] = run
        order = list(futures)
        started: set[Future[Outcome]] = set()
        stop = False
        try:
            while futures and not stop:
                for f in order[:]:  # the pool takes work in submission order: the first undone are running
                    if f in futures and f not in started and len(started) < jobs:
                        started.add(f)
                        on_start(futures[f])
                done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for f in done:
                    run = futures.pop(f)
                    started.discard(f)
                    order.remove(f)
                    if f.cancelled():
                        continue
                    try:
                        out = f.result()
                    except Exception as err:  # a worker that died (out of memory, killed)
                        out = {"status": "failed", "error": f"worker process failed: {type(err).__name__}: "
                                                            f"{err}", "seconds": None}
                    outcomes[run.key] = out
                    on_done(run, out)
                    stop = stop or out["status"] == "user_error"
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        if stop:
            for f in futures:
                f.cancel()
    return outcomes


# ======================================================================================= records
def record_from_metrics(metrics: Mapping[str, Any], *, ood: str, method: str, seed: int, split: str | None,
                        run_dir: str | None = None) -> dict[str, Any]:
    """One run's row: final and before-training accuracy on ``split`` (default: test, else the first),
    in-domain share and lock-in per domain (last iteration), and timings.

    >>> m = {"accuracy": {"test": [{"math": 0.5, "mean": 0.5}, {"math": 0.7, "mean": 0.7}]},
    ...      "in_domain_share": None, "lock_in": None, "steps": 4,
    ...      "timings": {"total": 9.0,
    ...                  "per_step": {"generate": 1.0, "score": 0.5, "train": 0.4, "select": 0.1}}}
    >>> r = record_from_metrics(m, ood="bias", method="random", seed=0, split=None)
    >>> r["accuracy"], r["before"], r["timings"]["loop"]
    ({'math': 0.7, 'mean': 0.7}, {'math': 0.5, 'mean': 0.5}, 8.0)
    """
    acc = metrics.get("accuracy") or {}
    if not acc:
        raise LaserError(f"run {run_dir or method} recorded no accuracy; compare needs evaluation data "
                         "(the built-in dev/test splits, or --eval-data FILE)")
    chosen = split or ("test" if "test" in acc else next(iter(acc)))
    if chosen not in acc:
        raise LaserError(f"--split {chosen!r}: the runs evaluated on {', '.join(acc)}; pick one of those")
    series = acc[chosen]
    t = metrics.get("timings") or {}
    per_step = {k: v for k, v in (t.get("per_step") or {}).items() if v is not None}
    steps = int(metrics.get("steps") or 0)
    in_domain = metrics.get("in_domain_share")
    lock = metrics.get("lock_in")
    return {
        "ood": ood, "method": method, "seed": int(seed), "split": chosen, "run_dir": run_dir,
        "accuracy": dict(series[-1]), "before": dict(series[0]), "iterations": len(series) - 1,
        "skipped_steps": metrics.get("skipped_steps"),
        "in_domain_share": dict(in_domain["per_task"]) if in_domain else None,
        "lock_in": {k: bool(v) for k, v in lock["per_task"].items()} if lock else None,
        "timings": {"total": t.get("total"), "setup": t.get("setup"), "eval": t.get("eval"),
                    "loop": sum(v for k, v in per_step.items() if k != "diagnostics") * steps,
                    "steps": steps, "per_step": per_step, "bandit_share": t.get("bandit_share_of_step")},
    }


def sft_records(records: Sequence[Mapping[str, Any]], reference: str | None = None) -> list[dict[str, Any]]:
    """The starting policy's rows: per (ood, seed), the before-training accuracy of the reference method's
    run (else the first run of that seed), which every method's run shares."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r["method"] != reference):
        key = (r["ood"], int(r["seed"]))
        if key not in out:
            out[key] = {"ood": r["ood"], "method": SFT, "seed": int(r["seed"]), "split": r.get("split"),
                        "run_dir": None, "accuracy": dict(r["before"]), "before": dict(r["before"]),
                        "iterations": 0, "in_domain_share": None, "lock_in": None, "timings": None,
                        "source": r["method"]}
    return list(out.values())


# ======================================================================================= statistics
def _finite(x: Any) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; ``None`` below two values).

    >>> [round(x, 4) for x in mean_std([0.5, 0.7])]
    [0.6, 0.1414]
    >>> mean_std([0.5])
    (0.5, None)
    """
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return None, None
    mean = float(np.mean(vals))
    return round(mean, 12), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def paired_test(reference: Mapping[Any, float], other: Mapping[Any, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both have: mean difference (reference - other), per-seed wins,
    ties and losses of the reference, and ``scipy.stats.ttest_rel`` (two-sided; ``None`` when undefined).

    >>> r = paired_test({0: 0.60, 1: 0.70, 2: 0.65}, {0: 0.55, 1: 0.62, 2: 0.66})
    >>> r["n"], r["wins"], r["ties"], r["losses"], round(r["mean_diff"], 3), round(r["p"], 3)
    (3, 2, 0, 1, 0.04, 0.27)
    """
    from scipy import stats

    seeds = sorted(set(reference) & set(other), key=str)
    a = np.array([reference[s] for s in seeds], dtype=np.float64)
    b = np.array([other[s] for s in seeds], dtype=np.float64)
    diff = a - b
    t = p = None
    if len(seeds) >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = stats.ttest_rel(a, b)
        t, p = _finite(res.statistic), _finite(res.pvalue)
    eps = 1e-12
    return {"n": len(seeds), "mean_diff": float(diff.mean()) if len(seeds) else None,
            "wins": int((diff > eps).sum()), "ties": int((np.abs(diff) <= eps).sum()),
            "losses": int((diff < -eps).sum()), "t": t, "p": p}


def summarize(records: Sequence[Mapping[str, Any]], *, methods: Sequence[str], reference: str | None,
              learners: Collection[str] = ()) -> dict[str, Any]:
    """The comparison per ood kind, from run records (:func:`record_from_metrics`); ``sft`` in ``methods``
    gets its rows from the runs' before-training accuracy. ``learners`` are the LASeR variants (their
    in-domain share and lock-ins are reported).

    >>> runs = [("laser", 0, 0.7), ("laser", 1, 0.8), ("random", 0, 0.6), ("random", 1, 0.6)]
    >>> recs = [record_from_metrics({"accuracy": {"test": [{"a": 0.5, "mean": 0.5}, {"a": acc, "mean": acc}]},
    ...                              "timings": {"total": 10.0}}, ood="bias", method=m, seed=s, split=None)
    ...         for m, s, acc in runs]
    >>> out = summarize(recs, methods=["sft", "laser", "random"], reference="laser")["bias"]
    >>> out["accuracy"]["sft"]["mean"]["mean"], out["paired"]["random"]["wins"], out["paired"]["sft"]["n"]
    (0.5, 2, 2)
    """
    rows = [dict(r) for r in records if r["method"] in methods and r["method"] != SFT]
    if SFT in methods:
        rows += sft_records(rows, reference)
    out: dict[str, Any] = {}
    for ood in dict.fromkeys(r["ood"] for r in rows):
        here = [r for r in rows if r["ood"] == ood]
        domains = sorted({d for r in here for d in r["accuracy"] if d != "mean"})
        present = [m for m in methods if any(r["method"] == m for r in here)]
        by_method = {m: sorted((r for r in here if r["method"] == m), key=lambda r: r["seed"])
                     for m in present}
        out[ood] = {
            "split": here[0].get("split"),
            "domains": domains,
            "methods": present,
            "seeds": sorted({int(r["seed"]) for r in here}),
            "reference": reference if reference in present else None,
            "accuracy": {m: _accuracy_summary(rs, domains) for m, rs in by_method.items()},
            "paired": _paired(by_method, reference),
            "time": _time_summary(by_method, reference),
            "in_domain": {m: _in_domain_summary(rs, domains) for m, rs in by_method.items()
                          if m in learners and any(r.get("in_domain_share") for r in rs)},
        }
    return out


def _accuracy_summary(rows: Sequence[Mapping[str, Any]], domains: Sequence[str]) -> dict[str, Any]:
    per_seed = {str(r["seed"]): dict(r["accuracy"]) for r in rows}
    mean, std = {}, {}
    for d in [*domains, "mean"]:
        mean[d], std[d] = mean_std([r["accuracy"][d] for r in rows if r["accuracy"].get(d) is not None])
    return {"n": len(rows), "mean": mean, "std": std, "per_seed": per_seed}


def _paired(by_method: Mapping[str, Sequence[Mapping[str, Any]]], reference: str | None) -> dict[str, Any]:
    if reference is None or reference not in by_method:
        return {}
    ref = {r["seed"]: r["accuracy"]["mean"] for r in by_method[reference]}
    return {m: {**paired_test(ref, {r["seed"]: r["accuracy"]["mean"] for r in rs}), "reference": reference}
            for m, rs in by_method.items() if m != reference}


def _time_summary(by_method: Mapping[str, Sequence[Mapping[str, Any]]],
                  reference: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m, rs in by_method.items():
        timed = [r["timings"] for r in rs if r.get("timings")]
        if not timed:
            continue
        wall, wall_std = mean_std([t["total"] for t in timed if t.get("total") is not None])
        work, _ = mean_std([t["total"] - (t.get("setup") or 0.0) for t in timed
                            if t.get("total") is not None])
        loop, _ = mean_std([t["loop"] for t in timed])
        parts = sorted({k for t in timed for k in t["per_step"]})
        out[m] = {"wall": wall, "wall_std": wall_std, "work": work, "loop": loop,
                  "steps": mean_std([t["steps"] for t in timed])[0],
                  "per_step": {k: mean_std([t["per_step"][k] for t in timed if k in t["per_step"]])[0]
                               for k in parts},
                  "bandit_share": mean_std([t.get("bandit_share") for t in timed
                                            if t.get("bandit_share") is not None])[0]}
    ref = out.get(reference or "")
    for t in out.values():
        for key in ("wall", "work", "loop"):
            ok = ref is not None and ref[key] and t[key] is not None
            t[f"relative_{key}"] = t[key] / ref[key] if ok and ref is not None else None
    return out


def _in_domain_summary(rows: Sequence[Mapping[str, Any]], domains: Sequence[str]) -> dict[str, Any]:
    shares = [r for r in rows if r.get("in_domain_share")]
    per_domain = {d: mean_std([r["in_domain_share"][d] for r in shares if d in r["in_domain_share"]])[0]
                  for d in domains}
    per_seed_mean = [float(np.mean(list(r["in_domain_share"].values()))) for r in shares]
    locked = [[int(r["seed"]), d] for r in rows for d, v in sorted((r.get("lock_in") or {}).items()) if v]
    task_runs = sum(len(r.get("lock_in") or {}) for r in rows)
    return {"per_domain": per_domain, "mean": mean_std(per_seed_mean)[0], "std": mean_std(per_seed_mean)[1],
            "per_seed": {str(r["seed"]): dict(r["in_domain_share"]) for r in shares},
            "lock_ins": len(locked), "task_runs": task_runs, "locked": locked}


# ======================================================================================= outputs
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
        ax = row[0]
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
        ax.set_title(data.get("ood_labels", {}).get(ood, ood) + f" ({len(s['seeds'])} seeds)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncols=len(groups))
        if ncols == 2:
            ax2 = row[1]
            learners = list(s["in_domain"])
            if learners:
                width = 0.8 / len(s["domains"])
                x = np.arange(len(learners))
                for k, d in enumerate(s["domains"]):
                    ys = [s["in_domain"][m]["per_domain"].get(d) for m in learners]
                    ax2.bar(x + (k - (len(s["domains"]) - 1) / 2) * width,
                            [np.nan if v is None else v for v in ys], width, color=f"C{k % 10}", label=d)
                labels = [f"{m}\nlock-in {s['in_domain'][m]['lock_ins']}/{s['in_domain'][m]['task_runs']}"
                          for m in learners]
                ax2.set_xticks(x, labels, rotation=35, ha="right", fontsize=7)
                ax2.set_xlim(-0.6, max(len(learners), 3) - 0.4)  # keep bars narrow with few variants
                ax2.axhline(0.8, color="grey", ls="--", lw=0.8)
                ax2.legend(fontsize=7)
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("in-domain share (last iteration)")
            ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else _pct(mean) + ("" if std is None else f"±{_pct(std)}")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def render_compare(data: Mapping[str, Any], console: Console) -> None:
    """Print the comparison tables of a ``compare.json`` document, one block per ood kind: accuracy,
    the paired tests, time, and the LASeR variants' in-domain share and lock-ins."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    labels = data.get("ood_labels", {})
    for ood, s in data["summary"].items():
        ref = escape(s["reference"]) if s.get("reference") else None  # labels may hold [brackets]
        head = escape(f"{labels.get(ood, ood)}: ")
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
        console.print(table)

        if s["paired"]:
            table = Table(title=f"{head}paired test of {ref} vs each method")
            for col in ("method", "Δ", "W/T/L", "t", "p"):
                table.add_column(col, justify="left" if col == "method" else "right")
            for m, pair in s["paired"].items():
                delta = "-" if pair["mean_diff"] is None else f"{100 * pair['mean_diff']:+.1f}"
                table.add_row(Text(m), delta, f"{pair['wins']}/{pair['ties']}/{pair['losses']}",
                              _num(pair["t"]), _num(pair["p"], ".3f"))
            console.print(table)
            console.print(f"on each seed's average accuracy: Δ = {ref} minus the method, in points; W/T/L = "
                          f"seeds {ref} wins, ties, loses; t, p = scipy.stats.ttest_rel (two-sided)")

        if s["time"]:
            table = Table(title=f"{head}seconds per run and per step (mean over seeds)")
            cols = ("method", "wall", "loop", *TIME_PARTS, "bandit")
            for col in cols:
                table.add_column(col, justify="left" if col == "method" else "right")
            for m, t in s["time"].items():
                table.add_row(Text(m), _num(t["wall"], ".1f"), _num(t["loop"], ".1f"),
                              *[_num(t["per_step"].get(k), ".3f") for k in TIME_PARTS],
                              "-" if t["bandit_share"] is None else f"{100 * t['bandit_share']:.1f}%")
            console.print(table)
            console.print(f"time ×{ref}: run time without set-up (model loading) relative to {ref}; loop: "
                          "the training steps alone; bandit: encode + select + update as a share of a step")

        if s["in_domain"]:
            table = Table(title=f"{head}in-domain share % (last iteration) and lock-ins (>= 80% of a "
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
            console.print(table)
    shared = {(r["method"], r["same_as"]) for r in data.get("shared_runs", [])}
    for method, same_as in sorted(shared):
        console.print(Text(f"note: {method} has the same settings as {same_as}; it reuses that method's "
                           "runs"))
    for f in data.get("failures", []):
        console.print(Text(f"failed: {f['method']} seed {f['seed']} ({f['ood']}): {f['error']} "
                           f"(log: {f.get('log')})", style="red"))


# ======================================================================================= the command
@dataclass
class CompareResult:
    """What :func:`run_compare` returns: the compare folder, the ``compare.json`` document, the files."""

    out: Path
    data: dict[str, Any]
    files: list[Path]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.data.get("failures", []))


def _needs_world(cfg: RunConfig) -> bool:
    return cfg.model is None or cfg.data is None or cfg.rm_registry is None


def _load_world(cfg: RunConfig, progress: bool) -> Any:
    from laser_app.world import load_world

    try:
        return load_world(cfg.cache_dir, seed=cfg.world_seed, build=True, progress=progress)
    except (OSError, ValueError) as err:
        raise LaserError(f"could not load the built-in world: {err}") from err


def rm_names_for(cfg: RunConfig, world: Any) -> list[str]:
    """The RMs the runs use: ``rms``, else every RM in ``rm_registry``, else the built-in world's."""
    if cfg.rms is not None:
        return list(cfg.rms)
    if cfg.rm_registry is not None:
        from laser_adapters.reward_models.registry import RMRegistry

        if not Path(cfg.rm_registry).is_file():
            raise LaserError(f"RM registry {cfg.rm_registry} does not exist; pass a TOML or YAML file with a "
                             "table `rms` keyed by name")
        try:
            return list(RMRegistry.from_file(cfg.rm_registry).names)
        except (ValueError, TypeError, KeyError) as err:
            raise LaserError(f"RM registry {cfg.rm_registry}: {err}") from err
    return list(world.registry(ood=cfg.ood).names)


def parse_oods(text: str | Sequence[str] | None) -> list[str] | None:
    """``--ood bias,noise`` as a list (``None`` when not given).

    >>> parse_oods("noise, bias")
    ['noise', 'bias']
    """
    if text is None:
        return None
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    bad = [s for s in items if s not in OOD_KINDS]
    if bad or not items:
        raise LaserError(f"--ood {text!r}: unknown kind {', '.join(map(repr, bad)) or '(none)'}; valid: "
                         f"{', '.join(OOD_KINDS)} (comma-separated)")
    return list(dict.fromkeys(items))


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
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise LaserError(f"--seeds must be an integer >= 1, got {seeds!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise LaserError(f"--jobs must be an integer >= 1, got {jobs!r}")
    shared = dict(shared or {})
    for key in shared:
        check_setting(key, "compare")
    try:
        base = RunConfig.model_validate(shared)
    except ValidationError as err:
        raise MethodError(["invalid configuration: " + line
                           for line in format_validation_error(err)]) from None
    builtin_rms = base.rm_registry is None
    if oods is not None and not builtin_rms:
        raise LaserError("--ood sets how the built-in RMs judge other domains; it does not apply to "
                         f"--rm-registry {base.rm_registry}: drop one of them")
    ood_list = list(oods) if oods is not None else (list(OOD_KINDS) if builtin_rms else [base.ood])
    world = _load_world(base, progress) if _needs_world(base) else None
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
    failures: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with _progress(console, total=len(unique), done=reused, enabled=progress) as bar:
        show_ood = len(ood_list) > 1

        def started(run: PlannedRun) -> None:
            bar.start(run.describe(show_ood))

        def finished(run: PlannedRun, outcome: Outcome) -> None:
            bar.finish(run.describe(show_ood), ok=outcome["status"] == "complete")
            if outcome["status"] != "complete":
                failures.append({"ood": run.ood, "method": run.method, "seed": run.seed,
                                 "status": outcome["status"], "error": outcome["error"],
                                 "run_dir": _rel(run.path, root),
                                 "log": _rel(run.path.with_suffix(".log"), root)})

        try:
            execute_runs(pending, jobs=jobs, on_start=started, on_done=finished)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted;[/] run the same command with --out {root} to resume "
                          "(complete runs are kept)")
            raise
    user_errors = [f for f in failures if f["status"] == "user_error"]
    if user_errors:
        f = user_errors[0]
        raise LaserError(f"{f['method']} seed {f['seed']} ({f['ood']}): {f['error']}")

    records = []
    for p in plans:
        metrics_path = p.path / METRICS
        state = RunDir(p.path).status()["state"] if (p.path / "status.json").is_file() else "missing"
        if state != "complete" or not metrics_path.is_file():
            continue
        records.append(record_from_metrics(read_json(metrics_path), ood=p.ood, method=p.method, seed=p.seed,
                                           split=split, run_dir=_rel(p.path, root)))
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


class _Bar:
    """The runs' progress: done/remaining, the runs in progress, failures so far."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task
        self.running: list[str] = []
        self.failed = 0

    def _show(self) -> None:
        if self._progress is not None:
            running = ", ".join(self.running) or "-"
            self._progress.update(self._task, running=running, failed=self.failed)

    def start(self, name: str) -> None:
        self.running.append(name)
        self._show()

    def finish(self, name: str, *, ok: bool) -> None:
        if name in self.running:
            self.running.remove(name)
        self.failed += not ok
        if self._progress is not None:
            self._progress.advance(self._task)
        self._show()


@contextmanager
def _progress(console: Console, *, total: int, done: int, enabled: bool) -> Iterator[_Bar]:
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("runs"), BarColumn(), MofNCompleteColumn(),
               TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn(),
               TextColumn("running: {task.fields[running]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("runs", total=total, completed=done, running="-", failed=0)
        yield _Bar(progress, task)
