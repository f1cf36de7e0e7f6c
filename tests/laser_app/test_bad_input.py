"""Bad input to ``laser run``: one clear line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from laser_app.commands import app
from tests.laser_app.tiny_setup import build_tiny_setup, run_args

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def _case(name: str, tmp: Path, tiny: dict[str, Path]) -> tuple[list[str], str, Path]:
    """(extra arguments, expected message, where --out points) for one bad input."""
    out = tmp / "out"
    if name == "non-utf8 data":
        bad = tmp / "latin1.jsonl"
        bad.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
        return ["--data", str(bad)], f"data file {bad} line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8", out
    if name == "registry without RMs":
        empty = tmp / "empty.toml"
        empty.write_text("[rms]\n")
        return ["--rm-registry", str(empty)], f"RM registry {empty} defines no reward models", out
    if name == "registry with a bad kind":
        bad = tmp / "kind.toml"
        bad.write_text('[rms.x]\nkind = "nope"\n')
        return ["--rm-registry", str(bad)], f"RM registry {bad}: x.kind: Input should be", out
    if name == "registry is a folder":
        return ["--rm-registry", str(tmp)], f"RM registry {tmp} is a folder; pass a TOML or YAML file", out
    if name == "config is a folder":
        return ["--config", str(tmp)], f"config file {tmp} is a folder; pass a TOML, YAML or JSON file", out
    if name == "out under a file":
        (tmp / "afile").write_text("x")
        return [], f"--out {tmp / 'afile' / 'run'}: {tmp / 'afile'} is a file, not a folder", tmp / "afile" / "run"
    if name == "cuda without cuda":
        return ["--device", "cuda"], "--device cuda: this torch build sees no CUDA GPU; use --device cpu", out
    raise AssertionError(name)


CASES = ["non-utf8 data", "registry without RMs", "registry with a bad kind", "registry is a folder",
         "config is a folder", "out under a file", "cuda without cuda"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_writes_nothing(name: str, tiny: dict[str, Path], tmp_path: Path) -> None:
    if name == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    extra, message, out = _case(name, tmp_path, tiny)
    args = run_args(tiny, out, "--policy", "random")
    for flag in ("--data", "--rm-registry"):  # a case's own file replaces the tiny setup's
        if flag in extra:
            at = args.index(flag)
            del args[at:at + 2]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_out_in_a_folder_without_write_permission(tiny: dict[str, Path], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.mkdir()
        except PermissionError:
            pass
        else:  # running as root: permissions do not stop us, so neither can the check
            probe.rmdir()
            pytest.skip("this user can write in a read-only folder (root); /proc below stands in")
        result = runner.invoke(app, run_args(tiny, locked / "run", "--policy", "random"))
        assert result.exit_code == 2 and f"--out {locked / 'run'}: cannot create folders in {locked}" in result.stderr
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
def test_out_under_proc_fails_before_loading_anything(tiny: dict[str, Path]) -> None:
    result = runner.invoke(app, run_args(tiny, Path("/proc/laser-run"), "--policy", "random"))
    assert result.exit_code == 2 and "--out /proc/laser-run: cannot create folders in /proc" in result.stderr


def test_events_with_a_torn_line(tmp_path: Path) -> None:
    import json
    import warnings

    from laser_app.errors import RunDirError
    from laser_app.run_dir import RunDir

    run = RunDir.create(tmp_path / "run")
    for step in range(3):
        run.append_event({"step": step})
    events = run.path / "events.jsonl"
    text = events.read_text()
    events.write_text(text + '{"step": 3, "lo')  # killed mid-write: the last line is torn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [e["step"] for e in run.events()] == [0, 1, 2]
    assert any("dropped its torn last line 4" in str(w.message) for w in caught)
    lines = text.splitlines()
    events.write_text("\n".join([lines[0], lines[1][:5], lines[2]]) + "\n")  # damaged before the end
    with pytest.raises(RunDirError, match=r"events.jsonl line 2 is not valid JSON, and more steps follow it"):
        run.events()
    assert json.loads(lines[2]) == {"step": 2}


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_stops_a_run_with_one_line_and_marks_it_interrupted(tiny: dict[str, Path], tmp_path: Path,
                                                                    sig: str, code: int, word: str) -> None:
    import json
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = run_args(tiny, out, "--policy", "random")
    args[args.index("--iterations") + 1] = "200"  # long enough to be stopped mid-way
    proc = subprocess.Popen([sys.executable, "-m", "laser_app.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "events.jsonl").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert f"laser: {word}; a run folder it started is marked interrupted" in stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    from laser_app.run_dir import RunDir

    assert RunDir(out).state() == "interrupted"


def test_a_running_status_whose_process_is_gone_reads_as_crashed(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from laser_app.errors import RunDirError
    from laser_app.run_dir import RunDir

    run = RunDir.create(tmp_path / "run")
    run.append_event({"step": 0})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    status = json.loads((run.path / "status.json").read_text())
    (run.path / "status.json").write_text(json.dumps({**status, "pid": int(gone.stdout)}))
    assert RunDir(run.path).state() == "crashed"
    with pytest.raises(RunDirError, match=r"already exists \(state: crashed\); pass --overwrite"):
        RunDir.check_creatable(run.path)
    RunDir.check_creatable(run.path, overwrite=True)  # a crashed run may be replaced
    (run.path / "status.json").write_text(json.dumps({**status, "pid": os.getppid()}))  # alive, not us
    assert RunDir(run.path).state() == "running"
    with pytest.raises(RunDirError, match=r"belongs to a run that is still running \(pid \d+\); stop it first"):
        RunDir.check_creatable(run.path, overwrite=True)


def test_partial_report_of_a_failed_run_shows_its_error_text(tiny: dict[str, Path], tmp_path: Path) -> None:
    import json

    out = tmp_path / "run"
    assert runner.invoke(app, run_args(tiny, out, "--policy", "random")).exit_code == 0
    status = json.loads((out / "status.json").read_text())
    (out / "status.json").write_text(json.dumps({**status, "state": "failed",
                                                 "error": "ValueError: scores [nan, 0.5] are not finite"}))
    result = runner.invoke(app, ["report", str(out), "--partial"])
    assert result.exit_code == 0, result.output
    assert "scores [nan, 0.5] are not finite" in " ".join(result.output.split())  # not eaten as markup


def test_a_folder_that_is_not_a_model(tiny: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "notamodel"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    args = run_args(tiny, tmp_path / "out", "--policy", "random")
    args[args.index("--model") + 1] = str(folder)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert f"model folder {folder} has no config.json, so it is not a saved model" in result.stderr
