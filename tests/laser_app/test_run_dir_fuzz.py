"""Damaged run folders: random bytes and mutated valid files in place of what a run writes, read through the
public readers (:class:`RunDir`, the checkpoint loader, ``laser report``'s loader). Each either reads (a
flipped digit can still be a valid number in a plain JSON file) or fails with the project's errors; a
checkpoint is never restored from a damaged file (its manifest holds every file's CRC-32)."""

from __future__ import annotations

import functools
import io
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import laser_app.loop
from laser_app.checkpoint import CHECKPOINT, FILES, MANIFEST, Parts, load_checkpoint, plan_digest
from laser_app.config import RunConfig
from laser_app.errors import LaserError
from laser_app.report import report_run
from laser_app.run_dir import RunDir
from laser_app.run_setup import prepare
from tests.laser_app.tiny_setup import RMS, build_tiny_setup

#: The errors a damaged file may raise: the project's own (RunDirError is a LaserError) and ValueError.
CLEAN = (LaserError, ValueError)
RUN_FILES = ("status.json", "config.json", "resolved.json", "metrics.json", "events.jsonl", "bandit.json",
             "bandit.npz")
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
damage = st.one_of(st.tuples(st.just("bytes"), st.binary(max_size=400)),
                   st.tuples(st.just("flips"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                        min_size=1, max_size=4)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Parts, str]]:
    """A finished tiny run that kept its checkpoint, the parts a resumed run restores into, and its plan."""
    root = tmp_path_factory.mktemp("fuzz")
    tiny = build_tiny_setup(root / "tiny")
    config = RunConfig(model=str(tiny["policy"]), rm_registry=tiny["registry"], data=tiny["train"],
                       eval_data=tiny["eval"], out=root / "run", iterations=1, batch_size=3, batches_per_iteration=2,
                       n_responses=4, max_new_tokens=4, context="hash", policy="lints", rms=RMS, eval_size=1,
                       threads=1, checkpoint_every=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(laser_app.loop, "remove_checkpoint", lambda run: None)
        laser_app.loop.run_laser(config, progress=False)
    job = laser_app.loop._assemble(config, prepare(config, progress=False))
    yield root / "run", job.parts, plan_digest(job.plan)


def damaged(path: Path, how: tuple[str, Any]) -> None:
    """Overwrite ``path`` with random bytes, or set a few of its bytes."""
    kind, value = how
    if kind == "bytes":
        path.write_bytes(value)
        return
    raw = bytearray(path.read_bytes())
    for where, byte in value:
        raw[min(int(where * len(raw)), len(raw) - 1)] = byte
    path.write_bytes(bytes(raw))


def read_cleanly(read: Callable[[], Any]) -> bool:
    """Whether ``read()`` succeeded; any error other than the project's fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last events line is dropped with a warning
        try:
            read()
        except CLEAN:
            return False
    return True


@FUZZ
@given(name=st.sampled_from(RUN_FILES), how=damage, state=st.sampled_from(["complete", "failed"]))
def test_damaged_run_folder_files(finished: tuple[Path, Parts, str], name: str, how: tuple[str, Any],
                                  state: str) -> None:
    source, _, _ = finished
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        run.mkdir()
        for file in RUN_FILES:
            shutil.copy(source / file, run / file)
        if state == "failed":
            RunDir(run).mark_failed("ValueError: scores [nan] are not finite")
        damaged(run / name, how)
        folder = RunDir(run)
        for read in (folder.status, folder.state, folder.config, folder.resolved, folder.metrics, folder.events,
                     folder.load_bandit, lambda: folder.truncate_events(1)):
            read_cleanly(read)
        for partial in (False, True):
            read_cleanly(functools.partial(report_run, run, Console(file=io.StringIO()), partial=partial, plots=False))


@FUZZ
@given(name=st.sampled_from([MANIFEST, *FILES]), how=damage)
def test_a_damaged_checkpoint_is_never_restored(finished: tuple[Path, Parts, str], name: str,
                                                how: tuple[str, Any]) -> None:
    source, parts, plan = finished
    with tempfile.TemporaryDirectory() as d:
        run = Path(d)
        shutil.copytree(source / CHECKPOINT, run / CHECKPOINT)
        target = run / CHECKPOINT / name
        before = target.read_bytes()
        damaged(target, how)
        after = target.read_bytes()
        if read_cleanly(lambda: load_checkpoint(run, parts, plan=plan)):
            # restored: only when nothing changed but the manifest's layout
            assert after == before or (name == MANIFEST and json.loads(after) == json.loads(before)), name


def test_the_undamaged_checkpoint_restores(finished: tuple[Path, Parts, str]) -> None:
    source, parts, plan = finished
    state = load_checkpoint(source, parts, plan=plan)
    assert state.step == 2 and len(state.per_example) == 2
    assert RunDir(source).state() == "complete" and len(RunDir(source).events()) == 2
