"""``laser bon --resume``: a best-of-n run killed with SIGKILL, interrupted or failed, then resumed, ends as
the uninterrupted run does (events and metrics timings aside, the bandit state exactly). And the refusals: not
a run folder, a training run, complete, still running, no checkpoint, other prompts, other settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import laser_app.bon
from laser_app.checkpoint import CHECKPOINT, PREVIOUS, find_checkpoint
from laser_app.commands import app
from laser_app.config import RunConfig
from laser_app.run_dir import RunDir
from tests.laser_app.tiny_setup import build_tiny_setup

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
#: Six LongBench-like prompts in batches of two: three batches.
BATCHES = 3

#: Run in a subprocess: ``laser`` with argv[2:], killed (SIGKILL, so nothing is cleaned up) right after the
#: argv[1]-th event is appended, before its batch's checkpoint.
DRIVER = textwrap.dedent("""
    import os, signal, sys

    from laser_app.cli import main
    from laser_app.run_dir import RunDir

    after, real, calls = int(sys.argv[1]), RunDir.append_event, []

    def killing(self, event):
        real(self, event)
        calls.append(event)
        if len(calls) == after:
            os.kill(os.getpid(), signal.SIGKILL)

    RunDir.append_event = killing
    sys.exit(main(sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bon-resume")
    tiny = build_tiny_setup(root / "tiny")
    facts = " ".join(f"Fact {i}: Ada lives in city {i}." for i in range(40))  # cut to the tiny window
    rows = [{"_id": f"h{i}", "dataset": "hotpotqa", "context": facts, "input": f"Where is fact {i}?",
             "answers": [f"city {i}"], "length": 400, "language": "en", "all_classes": None} for i in range(4)]
    rows += [{"_id": f"t{i}", "dataset": "trec", "context": "Q: Who? Type: Human", "input": f"What is {i}+2?",
              "answers": ["Number"], "length": 10, "language": "en", "all_classes": ["Human", "Number"]}
             for i in range(2)]
    longbench = root / "lb.jsonl"
    longbench.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {**tiny, "longbench": longbench}


def bon_args(setup: dict[str, Path], out: Path) -> list[str]:
    """A few seconds' run: a bandit that draws from its own generator (lints), one torch thread (the same
    float sums in every process)."""
    return ["bon", "--model", str(setup["policy"]), "--rm-registry", str(setup["registry"]), "--longbench",
            str(setup["longbench"]), "--policy", "lints", "--context", "hash", "--n-responses", "3",
            "--max-new-tokens", "4", "--batch-size", "2", "--threads", "1", "--seed", "5", "--out", str(out),
            "--no-progress"]


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def reference(setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    invoke(*bon_args(setup, out))
    return out


def without_seconds(obj: Any) -> Any:
    """``obj`` without its timing fields (``seconds`` of a batch, ``timings`` of the summary)."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k not in ("seconds", "timings")}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Nested states hold the same values, arrays exactly."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run(out: Path, reference: Path) -> None:
    """``out`` finished as the uninterrupted ``reference`` run did, timings aside."""
    run, ref = RunDir(out), RunDir(reference)
    assert run.state() == "complete"
    assert find_checkpoint(out) is None and not list(out.glob(".checkpoint-*"))
    events = run.events()
    assert [e["batch"] for e in events] == list(range(BATCHES))
    assert without_seconds(events) == without_seconds(ref.events())
    assert without_seconds(run.metrics()) == without_seconds(ref.metrics())
    assert run.resolved() == ref.resolved()
    assert_same_state(run.load_bandit(), ref.load_bandit())


def test_a_single_run_leaves_no_checkpoint_and_records_its_prompts(reference: Path, setup: dict[str, Path]) -> None:
    assert RunDir(reference).state() == "complete" and find_checkpoint(reference) is None
    assert RunDir(reference).resolved()["source"] == {"suite": None, "longbench": str(setup["longbench"]),
                                                      "datasets": None, "split": "test"}


@pytest.mark.parametrize("crash_between_renames", [False, True], ids=["killed", "killed-mid-swap"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(setup: dict[str, Path], reference: Path, tmp_path: Path,
                                                          crash_between_renames: bool) -> None:
    out = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(driver), "2", *bon_args(setup, out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert RunDir(out).state() == "crashed" and len(RunDir(out).events()) == 2
    checkpoint = find_checkpoint(out)
    assert checkpoint is not None  # batch 1's event is written, its checkpoint not: it runs again
    assert json.loads((checkpoint / "state.json").read_text())["batch"] == 1
    if crash_between_renames:  # only the previous checkpoint is left
        (out / CHECKPOINT).rename(out / PREVIOUS)
    result = invoke("bon", "--resume", str(out), "--no-progress")
    assert f"run folder: {out}" in result.stdout
    assert_same_run(out, reference)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError], ids=["interrupted", "failed"])
def test_an_interrupted_or_failed_run_resumes(setup: dict[str, Path], reference: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, stop: type[BaseException]) -> None:
    out = tmp_path / "run"
    real, calls = laser_app.bon._bon_batch, []

    def stopping(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise stop("stopped")
        return real(*args, **kwargs)

    monkeypatch.setattr(laser_app.bon, "_bon_batch", stopping)
    result = runner.invoke(app, bon_args(setup, out))
    monkeypatch.undo()
    if stop is KeyboardInterrupt:
        assert result.exit_code == 130
        assert result.stderr.strip() == (f"laser: interrupted; a run folder it started is marked interrupted; "
                                         f"resume with laser bon --resume {out}")
        assert RunDir(out).state() == "interrupted"
    else:
        assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
        assert RunDir(out).state() == "failed"
    invoke("bon", "--resume", str(out), "--no-progress")
    assert_same_run(out, reference)


# ------------------------------------------------------------------------------- refusals
def resume_error(path: Path, *extra: str) -> str:
    """The one ``error:`` line ``laser bon --resume path`` prints (exit code 2)."""
    result = runner.invoke(app, ["bon", "--resume", str(path), "--no-progress", *extra])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def stopped_run(path: Path, resolved: dict[str, Any]) -> RunDir:
    run = RunDir.create(path)
    run.write_config(RunConfig().model_dump(mode="json"), resolved)
    run.mark_stopped(KeyboardInterrupt())
    return run


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    assert "does not exist" in resume_error(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    assert "is not a run folder" in resume_error(tmp_path / "notes")


def test_resume_refuses_a_training_run(tmp_path: Path) -> None:
    run = stopped_run(tmp_path / "run", {"model": "m", "batches_per_iteration": 3})
    assert f"holds a training run, not a best-of-n one; resume it with laser run --resume {run.path}" in \
        resume_error(run.path)
    greedy = stopped_run(tmp_path / "greedy", {"mode": "greedy"})
    assert "is not a best-of-n run (its mode is 'greedy')" in resume_error(greedy.path)


def test_laser_run_resume_sends_a_best_of_n_run_to_laser_bon(tmp_path: Path) -> None:
    run = stopped_run(tmp_path / "bon", {"mode": "best-of-n"})
    result = runner.invoke(app, ["run", "--resume", str(run.path), "--no-progress"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"is a laser bon run; continue it with laser bon --resume {run.path}" in lines[0]


def test_resume_refuses_a_complete_run(reference: Path) -> None:
    assert "holds a complete run; nothing to resume" in resume_error(reference)


def test_resume_refuses_a_run_that_is_still_running(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            (run.path / "status.json").write_text(json.dumps({"state": "running", "pid": alive.pid}))
            assert f"still running (pid {alive.pid})" in resume_error(run.path)
        finally:
            alive.kill()


def test_resume_refuses_a_run_without_a_checkpoint(tmp_path: Path) -> None:
    run = stopped_run(tmp_path / "run", {"mode": "best-of-n"})
    line = resume_error(run.path)
    assert "has no checkpoint" in line and "rerun it with --overwrite" in line


def test_resume_refuses_other_prompts(setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(laser_app.bon, "_bon_batch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert runner.invoke(app, bon_args(setup, out)).exit_code == 130
    monkeypatch.undo()
    changed = tmp_path / "lb.jsonl"
    shutil.copy(setup["longbench"], changed)
    changed.write_text("".join(reversed(changed.read_text().splitlines(keepends=True))))
    resolved = RunDir(out).resolved()
    (out / "resolved.json").write_text(json.dumps({**resolved, "source": {**resolved["source"],
                                                                          "longbench": str(changed)}}))
    assert "the prompts differ from when the run" in resume_error(out)
    assert RunDir(out).state() == "failed"  # a refusal after loading marks the run stopped again


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    line = resume_error(tmp_path, "--seed", "1", "--set", "alpha=1", "--suite", "longbench", "--split", "test")
    assert "--resume continues a run with the settings saved in its folder; drop --set, --seed, --suite, " \
           "--split" in line
