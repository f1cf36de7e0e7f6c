"""Running the planned runs: one at a time in this process, or in spawned worker processes with one torch
and one BLAS thread each. A run that fails is an outcome, never an exception.

>>> execute_runs([], jobs=2)
{}
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from laser_app.compare.plan import PlannedRun, RunKey
from laser_app.config import RunConfig, format_validation_error
from laser_app.errors import LaserError, RunDirError

#: One run's outcome: ``{"status": "complete" | "failed" | "user_error", "error": str | None, "seconds"}``.
Outcome = dict[str, Any]

_WORKER_LIMITS: list[Any] = []


def execute_run(config: dict[str, Any], log_path: str, resume: bool = False) -> Outcome:
    """Run one configuration (in a worker process or in-process); never raises for a failed run. With
    ``resume``, continue the stopped run in its folder (``config["out"]``) from its checkpoint; a checkpoint
    that cannot be restored runs it from the start.

    Returns ``{"status": "complete" | "failed" | "user_error", "error": str | None, "seconds": float}``;
    the run's console output and warnings go to ``log_path`` (appended to when resuming).
    """
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app.loop import resume_laser, run_laser

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a" if resume else "w", encoding="utf-8") as log, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        status, error = "complete", None
        console = Console(file=log, width=120, no_color=True)
        try:
            cfg = RunConfig.model_validate(config)
            if resume:
                try:
                    log.write(f"resuming {cfg.out} from its checkpoint\n")
                    resume_laser(Path(str(cfg.out)), progress=False, console=console)
                except RunDirError as err:  # a damaged checkpoint, or other batches: start over
                    log.write(f"cannot resume ({err}); running it from the start\n")
                    resume = False
            if not resume:
                run_laser(cfg, progress=False, console=console)
        except (LaserError, ValidationError) as err:
            status = "user_error"
            error = str(err) if isinstance(err, LaserError) else "; ".join(format_validation_error(err))
        except Exception as err:
            status, error = "failed", f"{type(err).__name__}: {' '.join(str(err).split())}"
            log.write(traceback.format_exc())
        for w in caught:
            log.write(f"warning: {w.category.__name__}: {w.message}\n")
    return {"status": status, "error": error, "seconds": time.perf_counter() - t0}


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


def execute_runs(runs: Sequence[PlannedRun], *, jobs: int, resume: Collection[RunKey] = (),
                 on_start: Callable[[PlannedRun], None] = lambda run: None,
                 on_done: Callable[[PlannedRun, Outcome], None] = lambda run, out: None) -> dict[RunKey, Outcome]:
    """Run ``runs``: in this process when ``jobs`` is 1, else in ``jobs`` spawned worker processes; those whose
    keys are in ``resume`` continue from their checkpoints.

    A user error (bad data, missing model, ...) stops the remaining runs, since every run would hit it.
    """
    if not runs:
        return {}
    payload = [(r.config.model_dump(mode="json"), str(r.path.with_suffix(".log")), r.key in resume) for r in runs]
    if jobs == 1:
        return _in_process(runs, payload, on_start, on_done)
    return _in_workers(runs, payload, jobs, on_start, on_done)


def _in_process(runs: Sequence[PlannedRun], payload: Sequence[tuple[dict[str, Any], str, bool]],
                on_start: Callable[[PlannedRun], None],
                on_done: Callable[[PlannedRun, Outcome], None]) -> dict[RunKey, Outcome]:
    outcomes: dict[RunKey, Outcome] = {}
    with _one_thread():
        for run, args in zip(runs, payload, strict=True):
            on_start(run)
            outcomes[run.key] = out = execute_run(*args)
            on_done(run, out)
            if out["status"] == "user_error":
                break
    return outcomes


def _in_workers(runs: Sequence[PlannedRun], payload: Sequence[tuple[dict[str, Any], str, bool]], jobs: int,
                on_start: Callable[[PlannedRun], None],
                on_done: Callable[[PlannedRun, Outcome], None]) -> dict[RunKey, Outcome]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    outcomes: dict[RunKey, Outcome] = {}
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
