"""``laser run --resume``: a run killed at any moment (mid-step, mid-checkpoint write, mid-evaluation) and
resumed ends exactly as the uninterrupted run does: the same events, metrics, bandit state, RM choices,
pairs and policy weights. And the refusals: not a run folder, complete, still running, no checkpoint, and
settings given with ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import laser_app.loop
from laser_app.checkpoint import CHECKPOINT, PREVIOUS, find_checkpoint
from laser_app.commands import app
from laser_app.config import RunConfig
from laser_app.errors import RunDirError
from laser_app.loop import resume_laser, run_laser
from laser_app.run_dir import RunDir
from tests.laser_app.tiny_setup import RMS, build_tiny_setup

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

#: Run in a subprocess: the run of the config file argv[1], killed (SIGKILL, so nothing is cleaned up)
#: right after the argv[3]-th call of the function argv[2] names: appending an event (mid-step: the step's
#: record is written, its checkpoint not), writing a checkpoint piece (mid-write), or evaluating.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    import laser_app.checkpoint
    import laser_app.loop
    from laser_app.config import RunConfig
    from laser_app.run_dir import RunDir

    config = RunConfig.model_validate_json(Path(sys.argv[1]).read_text())
    where, after = sys.argv[2], int(sys.argv[3])
    calls = 0

    def killing(fn):
        def wrapped(*args, **kwargs):
            global calls
            out = fn(*args, **kwargs)
            calls += 1
            if calls == after:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapped

    if where == "event":
        RunDir.append_event = killing(RunDir.append_event)
    elif where == "piece":
        laser_app.checkpoint._piece = killing(laser_app.checkpoint._piece)
    else:
        laser_app.loop.evaluate_examples = killing(laser_app.loop.evaluate_examples)
    laser_app.loop.run_laser(config, progress=False)
""")
#: Two iterations of three steps, a checkpoint every two steps: checkpoints after the first evaluation
#: (step 0), at steps 2, 3 (iteration end), 4, 6 and 6 (iteration end); eight pieces each.
PIECES = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def config_for(tiny: dict[str, Path], out: Path, **extra: Any) -> RunConfig:
    """A few seconds' run on the tiny setup, with a bandit that draws from its own generator (lints),
    counterfactual diagnostics (the DPO step's cached reference log-probs) and one torch thread (the same
    float sums in every process)."""
    settings: dict[str, Any] = {
        "model": str(tiny["policy"]), "rm_registry": tiny["registry"], "data": tiny["train"],
        "eval_data": tiny["eval"], "out": out, "iterations": 2, "batch_size": 3, "batches_per_iteration": 3,
        "n_responses": 4, "max_new_tokens": 4, "context": "hash", "policy": "lints", "rms": RMS,
        "eval_size": 1, "threads": 1, "seed": 3, "checkpoint_every": 2, "diagnostics": True, **extra}
    return RunConfig(**settings)


@pytest.fixture(scope="module")
def reference(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    run_laser(config_for(tiny, out), progress=False)
    return out


def killed_run(tiny: dict[str, Path], out: Path, where: str, after: int) -> None:
    """Run the test config in a subprocess killed right after the ``after``-th call of ``where``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.parent / "config.json"
    config.write_text(config_for(tiny, out).model_dump_json())
    driver = out.parent / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(driver), str(config), where, str(after)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert RunDir(out).state() == "crashed"


def without_timings(obj: Any) -> Any:
    """``obj`` without its timing fields (``seconds`` of a step, ``timings`` of the summary)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in ("seconds", "timings")}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Nested states hold the same values; arrays equal to float precision."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                                   rtol=1e-12, atol=1e-12, err_msg=where)
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
    assert not (out / CHECKPOINT).exists() and not (out / PREVIOUS).exists()
    events, expected = run.events(), ref.events()
    assert [e["step"] for e in events] == list(range(6))
    assert [e["rm"] for e in events] == [e["rm"] for e in expected]
    assert without_timings(events) == without_timings(expected)
    assert without_timings(run.metrics()) == without_timings(ref.metrics())
    assert_same_state(run.load_bandit(), ref.load_bandit())
    assert (out / "pairs.jsonl").read_text() == (reference / "pairs.jsonl").read_text()
    weights, expected_weights = (load_file(p / "policy" / "model.safetensors") for p in (out, reference))
    assert weights.keys() == expected_weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, expected_weights[name], rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize(("where", "after", "resumes_at"), [
    ("event", 5, 4),  # mid-step: step 4's record written, step 5 under way, the last checkpoint at step 4
    ("piece", 3 * PIECES + 3, 3),  # mid-write of the step-4 checkpoint: the iteration-end one stays
    ("evaluate", 2, 2),  # evaluating after the first iteration: the last checkpoint at step 2
], ids=["mid-step", "mid-checkpoint", "mid-evaluation"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny: dict[str, Path], reference: Path, tmp_path: Path,
                                                          where: str, after: int, resumes_at: int) -> None:
    out = tmp_path / "run"
    killed_run(tiny, out, where, after)
    checkpoint = find_checkpoint(out)
    assert checkpoint is not None
    assert json.loads((checkpoint / "state.json").read_text())["step"] == resumes_at
    if where == "piece":
        assert list(out.glob(".checkpoint-*"))  # the unfinished write is left beside the complete one
    if where == "event":  # a crash between the swap's two renames leaves only the previous checkpoint
        (out / CHECKPOINT).rename(out / PREVIOUS)
    resume_laser(out, progress=False)
    assert_same_run(out, reference)
    assert not list(out.glob(".checkpoint-*"))


def test_ctrl_c_says_how_to_resume_and_the_cli_resumes(tiny: dict[str, Path], reference: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    args = ["run", "--config", str(tmp_path / "config.json"), "--no-progress"]
    (tmp_path / "config.json").write_text(config_for(tiny, out).model_dump_json())
    real = laser_app.loop.evaluate_examples
    calls = []

    def interrupted(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(laser_app.loop, "evaluate_examples", interrupted)
    result = runner.invoke(app, args)
    assert result.exit_code == 130
    assert result.stderr.strip() == (f"laser: interrupted; a run folder it started is marked interrupted; resume "
                                     f"with laser run --resume {out}")
    status = RunDir(out).status()
    assert status["state"] == "interrupted"
    monkeypatch.undo()

    result = runner.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"run folder: {out}" in result.stdout
    assert_same_run(out, reference)


def test_a_lora_run_resumes_with_its_adapters_and_moved_reference(tiny: dict[str, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lora = {"lora": True, "lora_r": 4, "lr": 1e-3, "policy": "egreedy", "diagnostics": False}
    reference = tmp_path / "reference"
    run_laser(config_for(tiny, reference, **lora), progress=False)
    out = tmp_path / "run"
    real = RunDir.append_event

    def interrupted(self: RunDir, event: dict[str, Any]) -> None:
        real(self, event)
        if event["step"] == 5:  # after the reference moved to the first iteration's adapter
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "append_event", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_laser(config_for(tiny, out, **lora), progress=False)
    monkeypatch.undo()
    state = json.loads((out / CHECKPOINT / "state.json").read_text())
    assert state["step"] == 4 and state["dpo"]["ref_adapter"]
    assert load_file(out / CHECKPOINT / "reference.safetensors")  # the reference adapter's weights
    resume_laser(out, progress=False)
    assert RunDir(out).state() == "complete"
    assert without_timings(RunDir(out).events()) == without_timings(RunDir(reference).events())
    assert_same_state(RunDir(out).load_bandit(), RunDir(reference).load_bandit())
    weights, expected = (load_file(p / "adapter" / "adapter_model.safetensors") for p in (out, reference))
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-7, atol=1e-9, msg=name)


# ------------------------------------------------------------------------------- refusals
def resume_error(path: Path, *extra: str) -> str:
    """The one ``error:`` line ``laser run --resume path`` prints (exit code 2)."""
    result = runner.invoke(app, ["run", "--resume", str(path), "--no-progress", *extra])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    assert "does not exist" in resume_error(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    assert "is not a run folder" in resume_error(tmp_path / "notes")


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
    run = RunDir.create(tmp_path / "run")
    run.write_config(RunConfig().model_dump(mode="json"), {})
    run.mark_stopped(KeyboardInterrupt())
    line = resume_error(run.path)
    assert "has no checkpoint" in line and "rerun it with --overwrite" in line


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    line = resume_error(tmp_path, "--seed", "1", "--set", "lr=1e-3")
    assert "--resume continues a run with the settings saved in its folder; drop --set, --seed" in line


def test_resume_marks_the_run_running_in_this_process(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run")
    (run.path / "status.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345, "started": "t0"}))
    assert run.state() == "crashed"
    resumed = RunDir.open_to_resume(run.path)
    resumed.mark_resumed()
    status = resumed.status()
    assert (status["state"], status["pid"], status["started"]) == ("running", os.getpid(), "t0")
    assert run.state() == "running"


def test_events_after_the_checkpoint_are_dropped(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run")
    for step in range(4):
        run.append_event({"step": step, "loss": 0.5})
    path = run.path / "events.jsonl"
    path.write_text(path.read_text() + '{"step": 4, "lo')  # killed mid-write
    kept = path.read_text().splitlines(keepends=True)[:2]
    run.truncate_events(2)
    assert path.read_text() == "".join(kept)
    with pytest.raises(RunDirError, match="holds 2 of the 3 steps its checkpoint has seen"):
        run.truncate_events(3)
