"""The catalogue of bad input: every row is one invocation (a ``laser`` command, or a library call where the
input is a saved file) and a piece of its one-line error. Each must fail with a non-zero exit (or the
project's ``ValueError``), print no traceback, say it in one line, and write nothing.

Rows build their own files under a fresh folder; models load only where the error needs them (the long
prompt), and then the tiny ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from laser_app.commands import app
from laser_app.run_dir import RunDir
from tests.laser_app.tiny_setup import build_tiny_setup, run_args

runner = CliRunner()


@dataclass
class Case:
    """One invocation: ``args`` for the ``laser`` app, or ``call`` (a library call that must raise
    ``ValueError``); the piece of the error line expected; ``skip``: why this machine cannot show it."""

    expected: str
    args: list[str] = field(default_factory=list)
    call: Callable[[], Any] | None = None
    skip: str | None = None


Paths = dict[str, Path]


def _run(tiny: Paths, tmp: Path, *extra: str, **replace: str) -> list[str]:
    """``laser run`` on the tiny setup into ``tmp/out``, flags in ``replace`` (``data=...``) swapped in."""
    args = run_args(tiny, tmp / "out", "--policy", "random")
    for name, value in replace.items():
        args[args.index("--" + name.replace("_", "-")) + 1] = value
    return [*args, *extra]


def _file(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def _run_folder(tmp: Path, state: str, *, events: list[str] | None = None, pid: int | None = None) -> Path:
    """A run folder in ``state`` with ``events`` lines (no models: what a stopped run leaves)."""
    run = RunDir.create(tmp / "run")
    run.write_config({"policy": "random"}, {"rms": ["rm-a"], "rm_for_task": None})
    if events is not None:
        (run.path / "events.jsonl").write_text("".join(line + "\n" for line in events))
    status = json.loads((run.path / "status.json").read_text())
    if state == "failed":
        run.mark_failed("ValueError: scores [nan] are not finite")
    elif state == "complete":
        run.mark_complete()
    elif state == "running":
        (run.path / "status.json").write_text(json.dumps({**status, "pid": pid}))
    elif state == "interrupted":
        run.mark_stopped(KeyboardInterrupt())
    return run.path


def _event(step: int) -> str:
    return json.dumps({"step": step, "iteration": 0, "tasks": ["math"], "choice_counts": {"math": {"rm-a": 1}},
                       "seconds": {}})


def _saved_policy(tmp: Path, damage: str) -> Callable[[], Any]:
    """A LinUCB saved by banditkit, then damaged; the call that loads it."""
    import banditkit
    from banditkit.persistence import STATE_FILE
    from banditkit.policies.linucb import LinUCB

    path = tmp / "policy"
    banditkit.save(LinUCB(3, 4, seed=0), path)
    npz = next(path.glob("*.npz"))
    if damage == "nan":
        with np.load(npz) as arrays:
            values = {k: arrays[k] for k in arrays.files}
        values = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in values.items()}
        with open(npz, "wb") as fh:
            np.savez(fh, **values)  # type: ignore[arg-type]
    elif damage == "relabel":
        doc = json.loads((path / STATE_FILE).read_text())
        doc["state"]["policy"] = "EXP3"
        (path / STATE_FILE).write_text(json.dumps(doc))
    else:
        npz.write_bytes(np.random.default_rng(0).bytes(300))
    return lambda: banditkit.load(path)


def _case(name: str, tiny: Paths, tmp: Path) -> Case:
    out = tmp / "out"
    # ------------------------------------------------------------------ data files
    if name == "non-UTF-8 data file":
        bad = _file(tmp / "latin1.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
        return Case("line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8", _run(tiny, tmp, data=bad))
    if name == "prompt longer than the window":
        rows = [{"prompt": "Q: 1 plus 1? Answer:"}, {"prompt": "x" * 423 + " Q: 2 plus 2? Answer:"}]
        data = _file(tmp / "long.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        return Case(f"data file {data} row 2: the prompt is 445 tokens, but the policy's window leaves 252 "
                    "(256 tokens minus 4 for the answer, --max-new-tokens); pass --long-prompts truncate",
                    _run(tiny, tmp, data=data))
    if name == "bad JSON in a data file":
        bad = _file(tmp / "torn.jsonl", '{"prompt": "ok"}\n{"prompt": "unterminated\n')
        return Case("line 2: not valid JSON (Unterminated string starting at column 12)", _run(tiny, tmp, data=bad))
    if name == "a folder given to --data":
        return Case(f"data file {tmp} is a folder but not a saved dataset", _run(tiny, tmp, data=str(tmp)))
    if name == "laser bon --data with a LongBench file":
        row = {"input": "Who?", "context": "Ann met Bo.", "answers": ["Ann"], "dataset": "hotpotqa"}
        bad = _file(tmp / "lb.jsonl", json.dumps(row) + "\n")
        return Case('missing field "prompt" (fields present: answers, context, dataset, input); a LongBench file '
                    "(input, context) goes to laser bon --longbench",
                    ["bon", "--model", str(tiny["policy"]), "--rm-registry", str(tiny["registry"]), "--data", bad,
                     "--out", str(out), "--no-progress"])
    # ------------------------------------------------------------------ RM registries
    if name == "registry holding only [rms]":
        empty = _file(tmp / "empty.toml", "[rms]\n")
        return Case(f"RM registry {empty} defines no reward models", _run(tiny, tmp, rm_registry=empty))
    if name == "registry with a bad kind":
        bad = _file(tmp / "kind.toml", '[rms.x]\nkind = "nope"\n')
        return Case(f"RM registry {bad}: x.kind: Input should be", _run(tiny, tmp, rm_registry=bad))
    if name == "laser compare with a malformed registry":
        bad = _file(tmp / "kind.toml", '[rms.x]\nkind = "nope"\n')
        return Case(f"error: RM registry {bad}: x.kind: Input should be",  # named once, not twice
                    ["compare", "--methods", "random", "--model", str(tiny["policy"]), "--rm-registry", bad,
                     "--data", str(tiny["train"]), "--out", str(out), "--no-progress"])
    if name == "a folder given to --rm-registry":
        return Case(f"RM registry {tmp} is a folder; pass a TOML or YAML file", _run(tiny, tmp, rm_registry=str(tmp)))
    if name == "unknown RM name":
        return Case("unknown RM 'rm-x'; valid names: rm-a, rm-b, rm-c", _run(tiny, tmp, "--rms", "rm-a,rm-x"))
    # ------------------------------------------------------------------ settings
    if name == "unknown policy":
        return Case("invalid configuration: policy (--policy): unknown policy 'greedy'",
                    ["run", "--policy", "greedy", "--out", str(out)])
    if name == "bad value":
        return Case("n_responses (--n-responses): n_responses must be >= 2 to form a preference pair, got 1",
                    ["run", "--n-responses", "1", "--out", str(out)])
    if name == "--set lora_r=abc":
        return Case("--set lora_r=abc: Input should be a valid integer",
                    ["run", "--set", "lora_r=abc", "--out", str(out)])
    if name == "--set of an unknown setting":
        return Case("--set nonsense=1: unknown setting 'nonsense'", ["run", "--set", "nonsense=1", "--out", str(out)])
    if name == "malformed config file":
        cfg = _file(tmp / "cfg.toml", "alpha = [\n")
        return Case(f"config file {cfg} is not valid TOML", ["run", "--config", cfg, "--out", str(out)])
    if name == "a folder given to --config":
        return Case(f"config file {tmp} is a folder; pass a TOML, YAML or JSON file",
                    ["run", "--config", str(tmp), "--out", str(out)])
    if name == "--device cuda without CUDA":
        import torch

        return Case("--device cuda: this torch build sees no CUDA GPU; use --device cpu",
                    _run(tiny, tmp, "--device", "cuda"), skip="this machine has CUDA" if torch.cuda.is_available()
                    else None)
    # ------------------------------------------------------------------ models
    if name == "--model on a folder that is not a model":
        folder = tmp / "notamodel"
        folder.mkdir()
        (folder / "notes.txt").write_text("x")
        return Case(f"model folder {folder} has no config.json, so it is not a saved model",
                    _run(tiny, tmp, model=str(folder)))
    # ------------------------------------------------------------------ --out
    if name == "--out under a file":
        _file(tmp / "afile", "x")
        return Case(f"{tmp / 'afile'} is a file, not a folder", _run(tiny, tmp, out=str(tmp / "afile" / "run")))
    if name == "--out in a read-only folder":
        locked = tmp / "locked"
        locked.mkdir(mode=0o500)
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        return Case(f"cannot create folders in {locked}", _run(tiny, tmp, out=str(locked / "run")),
                    skip="root writes in read-only folders (--out under /proc stands in)" if root else None)
    if name == "--out under /proc":
        return Case("--out /proc/laser-run: cannot create folders in /proc", _run(tiny, tmp, out="/proc/laser-run"),
                    skip=None if Path("/proc/self").is_dir() else "no /proc on this system")
    if name == "refusing an existing run folder":
        done = _run_folder(tmp, "complete")
        return Case(f"run folder {done} already exists (state: complete); pass --overwrite",
                    _run(tiny, tmp, out=str(done)))
    # ------------------------------------------------------------------ laser report
    if name == "report on a run with a torn middle events line":
        run = _run_folder(tmp, "interrupted", events=[_event(0), _event(1)[:9], _event(2)])
        return Case("events.jsonl line 2 is not valid JSON, and more steps follow it",
                    ["report", str(run), "--partial"])
    if name == "report on a failed run without --partial":
        run = _run_folder(tmp, "failed", events=[_event(0)])
        return Case("is not complete (state: failed: ValueError: scores [nan] are not finite); pass --partial",
                    ["report", str(run), "--no-plots"])
    if name == "report --partial on a failed run that logged no steps":
        run = _run_folder(tmp, "failed")
        return Case("logged no steps yet; nothing to report", ["report", str(run), "--partial", "--no-plots"])
    if name == "report on a folder that is not a run":
        return Case(f"{tmp} is not a run folder (no status.json)", ["report", str(tmp)])
    # ------------------------------------------------------------------ --resume
    if name == "--resume of a folder that is not a run":
        return Case(f"{tmp} is not a run folder (no status.json)", ["run", "--resume", str(tmp)])
    if name == "--resume of a complete run":
        return Case("holds a complete run; nothing to resume", ["run", "--resume", str(_run_folder(tmp, "complete"))])
    if name == "--resume of a run still running":
        run = _run_folder(tmp, "running", pid=os.getppid())
        return Case("belongs to a run that is still running", ["run", "--resume", str(run)])
    if name == "--resume of a run without a checkpoint":
        run = _run_folder(tmp, "failed", events=[_event(0)])
        return Case("has no checkpoint (it stopped before writing one); rerun it with --overwrite",
                    ["run", "--resume", str(run)])
    if name == "--resume with other settings":
        return Case("--resume continues a run with the settings saved in its folder; drop --set, --seed",
                    ["run", "--resume", str(_run_folder(tmp, "failed")), "--seed", "1", "--set", "lr=1e-3"])
    # ------------------------------------------------------------------ banditkit.load
    if name == "banditkit.load of NaN arrays":
        return Case("holds NaN or inf: the saved state is corrupt", call=_saved_policy(tmp, "nan"))
    if name == "banditkit.load of a relabelled class":
        return Case("does not fit EXP3", call=_saved_policy(tmp, "relabel"))
    if name == "banditkit.load of a random-bytes npz":
        return Case("corrupt saved policy", call=_saved_policy(tmp, "bytes"))
    raise AssertionError(name)


CATALOGUE = [
    "non-UTF-8 data file", "prompt longer than the window", "bad JSON in a data file", "a folder given to --data",
    "laser bon --data with a LongBench file", "registry holding only [rms]", "registry with a bad kind",
    "laser compare with a malformed registry",
    "a folder given to --rm-registry", "unknown RM name", "unknown policy", "bad value", "--set lora_r=abc",
    "--set of an unknown setting", "malformed config file", "a folder given to --config",
    "--device cuda without CUDA", "--model on a folder that is not a model", "--out under a file",
    "--out in a read-only folder", "--out under /proc", "refusing an existing run folder",
    "report on a run with a torn middle events line", "report on a failed run without --partial",
    "report --partial on a failed run that logged no steps", "report on a folder that is not a run",
    "--resume of a folder that is not a run", "--resume of a complete run", "--resume of a run still running",
    "--resume of a run without a checkpoint", "--resume with other settings", "banditkit.load of NaN arrays",
    "banditkit.load of a relabelled class", "banditkit.load of a random-bytes npz",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", CATALOGUE)
def test_bad_input_fails_in_one_line_and_writes_nothing(name: str, tiny: Paths, tmp_path: Path) -> None:
    case = _case(name, tiny, tmp_path)
    if case.skip:
        pytest.skip(case.skip)
    before = _snapshot(tmp_path)
    try:
        if case.call is not None:
            with pytest.raises(ValueError) as caught:
                case.call()
            lines = [str(caught.value)]
        else:
            result = runner.invoke(app, case.args)
            assert result.exit_code != 0, result.output
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            assert "Traceback" not in result.output, result.output
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert all(line.startswith("error: ") for line in lines), result.stderr
    finally:
        for locked in tmp_path.glob("locked"):
            locked.chmod(0o700)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert case.expected in lines[0], lines[0]
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed
    assert not (tmp_path / "out").exists()


def test_long_prompts_truncate_keeps_the_end_of_each_prompt(tiny: Paths, tmp_path: Path) -> None:
    """The fix the long-prompt row names: ``--long-prompts truncate`` keeps each prompt's last tokens."""
    from rich.console import Console

    from laser_app.config import RunConfig
    from laser_app.run_setup import prepare

    question = " Q: 2 plus 2? Answer:"
    turns = [{"role": "system", "content": "y" * 300}, {"role": "user", "content": "z" * 100 + question}]
    rows = [{"prompt": "Q: 1 plus 1? Answer:"}, {"prompt": "x" * 423 + question}, {"messages": turns}]
    data = _file(tmp_path / "long.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    config = RunConfig(model=str(tiny["policy"]), rm_registry=tiny["registry"], data=data, eval_data=tiny["eval"],
                       max_new_tokens=4, long_prompts="truncate")
    console = Console(record=True, width=80)
    setup = prepare(config, progress=False, console=console)
    prompts = [ex.prompt for ex in setup.train]
    assert prompts[0] == rows[0]["prompt"]  # short prompts stay as they are
    assert prompts[1].endswith(question) and len(setup.tokenizer(prompts[1])["input_ids"]) <= 252
    assert prompts[2].endswith(question) and len(setup.tokenizer(prompts[2])["input_ids"]) <= 252
    kept = getattr(setup.train[2], "messages", None)
    assert kept is not None and kept[-1] == turns[-1]  # the earliest turn's text goes first
    assert kept[0]["role"] == "system" and 0 < len(kept[0]["content"]) < 300 and set(kept[0]["content"]) == {"y"}
    assert setup.resolved["long_prompts"] == {"mode": "truncate", "window": 256, "room": 252,
                                              "truncated": {"train": 2, "eval": 0}}
    notes = [line for line in console.export_text().splitlines() if "--long-prompts truncate" in line]
    assert len(notes) == 1 and "2 in train" in notes[0]
