"""``laser run`` under ``accelerate launch`` with two CPU processes (gloo) on the tiny setup.

With ``shard_generation=false`` a launched run is the one-process run over the same global batches: the same
RM choices, pairs and accuracies, and losses, rewards, bandit state and final weights equal to float rounding.
With ``shard_generation=true`` (each process samples its own share; here under LoRA, in two micro-batches
per step) the processes still agree with each other on every choice, the bandit state and the weights. A run
stopped in one process resumes under a launch. And the refusals: a launch with more processes than prompts per
batch, and ``--diagnostics``.

On a machine without GPUs ``accelerate launch --multi_gpu`` starts one CPU process per rank through torch's
launcher (accelerate's ``--cpu`` alone runs one process unless given an MPI host file).
"""

from __future__ import annotations

import json
import os
import socket
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
from laser_adapters.generation_backends import HFBackend
from laser_app import data_parallel, distributed
from laser_app.commands import app
from laser_app.config import RunConfig
from laser_app.errors import LaserError
from laser_app.run_dir import RunDir
from tests.laser_app.tiny_setup import build_tiny_setup, run_args

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

#: LinUCB on the policy's own hidden states (read from the sampling pass: contexts gathered over processes),
#: rewarded by the loss decrease of its step (the step's losses and the losses after it, both gathered).
SETTINGS = ("--policy", "linucb", "--context", "policy", "--mab-reward", "loss-decrease", "--seed", "3",
            "--threads", "1", "--checkpoint-every", "2")
STEP_NUMBERS = ("loss", "dpo_loss", "nll_loss", "margin", "raw_reward", "normalized_reward")

#: Runs ``laser run`` (argv) as the ``laser`` command does, then writes this process's view of the run to
#: $LASER_TEST_RECORD/rank<r>.json: its step records' RMs and losses, its bandit state and its final weights.
DRIVER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from laser_app import cli, loop

    steps, held = [], {}
    step_event, selector_for, prepare = loop.step_event, loop.selector_for, loop.dp.prepare

    def recording_step_event(*args, **kwargs):
        event = step_event(*args, **kwargs)
        steps.append({"rm": event["rm"], "loss": event["loss"], "raw_reward": event["raw_reward"]})
        return event

    def holding_selector_for(*args, **kwargs):
        out = selector_for(*args, **kwargs)
        held["selector"] = out[0]
        return out

    def holding_prepare(dpo):
        held["model"] = dpo.model
        prepare(dpo)

    def numbers(state, path=""):
        if isinstance(state, dict):
            return {k: v for key in sorted(state) for k, v in numbers(state[key], f"{path}.{key}").items()}
        if isinstance(state, list | tuple):
            return {k: v for i, x in enumerate(state) for k, v in numbers(x, f"{path}[{i}]").items()}
        if isinstance(state, np.ndarray) or isinstance(state, int | float) and not isinstance(state, bool):
            return {path: np.asarray(state, dtype=np.float64).ravel().tolist()}
        return {path: str(state)}

    loop.step_event, loop.selector_for, loop.dp.prepare = recording_step_event, holding_selector_for, holding_prepare
    code = cli.main(sys.argv[1:])
    weights = {k: v.double().ravel().tolist() for k, v in held["model"].state_dict().items()}
    with open(os.path.join(os.environ["LASER_TEST_RECORD"], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"steps": steps, "bandit": numbers(held["selector"].state_dict()), "weights": weights}, f)
    sys.exit(code)
""")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def one_process(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    result = runner.invoke(app, run_args(tiny, out, *SETTINGS))
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(*args: str, record: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``accelerate launch --multi_gpu --num_processes 2`` of ``args`` on CPUs (two gloo processes)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           **({"LASER_TEST_RECORD": str(record)} if record is not None else {})}
    for name in distributed.SIZE_VARIABLES:
        env.pop(name, None)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def events(run: Path) -> list[dict[str, Any]]:
    return RunDir(run).events()


def assert_same_run(run: Path, reference: Path) -> None:
    """``run`` took the steps ``reference`` took: the same choices and pairs, numbers to float rounding."""
    got, expected = events(run), events(reference)
    assert [e["rm"] for e in got] == [e["rm"] for e in expected]
    assert [e["choice_counts"] for e in got] == [e["choice_counts"] for e in expected]
    assert [e["pairs_kept"] for e in got] == [e["pairs_kept"] for e in expected]
    for key in STEP_NUMBERS:
        np.testing.assert_allclose([e[key] for e in got], [e[key] for e in expected], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    np.testing.assert_allclose([e["arm_scores"] for e in got], [e["arm_scores"] for e in expected], rtol=1e-5,
                               atol=1e-6)
    assert (run / "pairs.jsonl").read_text() == (reference / "pairs.jsonl").read_text()
    metrics, expected_metrics = RunDir(run).metrics(), RunDir(reference).metrics()
    assert metrics is not None and expected_metrics is not None
    assert metrics["accuracy"] == expected_metrics["accuracy"]
    bandit, expected_bandit = RunDir(run).load_bandit(), RunDir(reference).load_bandit()
    assert_close_state(bandit, expected_bandit)
    weights, expected_weights = (load_file(p / "policy" / "model.safetensors") for p in (run, reference))
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, expected_weights[name], rtol=1e-5, atol=1e-6, msg=name)


def assert_close_state(a: Any, b: Any, where: str = "bandit") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_close_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple) and not isinstance(a, str):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_state(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray | float):
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-5,
                                   atol=1e-6, err_msg=where)
    else:
        assert a == b, where


def test_a_launch_without_sharded_sampling_is_the_one_process_run(tiny: dict[str, Path], one_process: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "launched"
    done = launch("-m", "laser_app.cli", *run_args(tiny, out, *SETTINGS, "--set", "shard_generation=false"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # process 0 alone prints the summary
    assert RunDir(out).state() == "complete"
    assert json.loads((out / "config.json").read_text())["shard_generation"] is False
    assert_same_run(out, one_process)


def test_with_sharded_sampling_the_processes_agree(tiny: dict[str, Path], tmp_path: Path) -> None:
    out, record = tmp_path / "sharded", tmp_path / "record"
    record.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # LoRA (a reference adapter added mid-run) in two micro-batches per step, one RM resident at a time
    done = launch(str(driver), *run_args(tiny, out, *SETTINGS, "--lora", "--grad-accum", "2", "--max-loaded-rms", "1"),
                  record=record)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"]  # the same RM, loss and reward at every step
    assert [s["rm"] for s in ranks[0]["steps"]] == [e["rm"] for e in events(out)]
    # the same bandit state, RNG included (its float sums may round apart in the last bit: BLAS kernels
    # depend on memory alignment) and the same weights (each step averages the processes' gradients)
    assert_close_numbers(ranks[0]["bandit"], ranks[1]["bandit"], rtol=1e-12)
    assert_close_numbers(ranks[0]["weights"], ranks[1]["weights"], rtol=1e-6)
    loaded = [e for e in events(out) if e.get("rm_moves")]  # one RM resident: a switch loads another
    assert loaded and all(e["rm"] in e["rm_moves"]["loaded"] for e in loaded)


def assert_close_numbers(a: dict[str, Any], b: dict[str, Any], *, rtol: float) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, str):
            assert value == b[key], key
        else:
            np.testing.assert_allclose(value, b[key], rtol=rtol, atol=rtol * 1e-3, err_msg=key)


def test_a_run_stopped_in_one_process_resumes_under_a_launch(tiny: dict[str, Path], one_process: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stopped"
    append, calls = RunDir.append_event, []

    def interrupting(self: RunDir, event: dict[str, Any]) -> None:
        append(self, event)
        calls.append(event["step"])
        if len(calls) == 5:  # step 4's record written; the last checkpoint is step 3's: steps 4 and 5 run again
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "append_event", interrupting)
        result = runner.invoke(app, run_args(tiny, out, *SETTINGS, "--set", "shard_generation=false"))
    assert result.exit_code == 130 and RunDir(out).state() == "interrupted", result.output
    done = launch("-m", "laser_app.cli", "run", "--resume", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [e["step"] for e in events(out)] == list(range(6))
    assert_same_run(out, one_process)


def test_launch_refusals_are_one_line_before_the_run_folder(tiny: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # what a launcher tells each process; refused before any group forms
    out = tmp_path / "refused"
    result = runner.invoke(app, run_args(tiny, out, "--batch-size", "1"))
    assert result.exit_code == 2
    assert "error: 2 processes share a batch of 1 prompt, so some would get none: launch with at most 1 process " \
           "or raise --batch-size" in result.output
    result = runner.invoke(app, run_args(tiny, out, "--diagnostics"))
    assert result.exit_code == 2 and "error: --diagnostics does not run under accelerate launch" in result.output
    assert not out.exists()
    with pytest.raises(LaserError, match="2 processes share a batch of 1 prompt"):
        data_parallel.check_plan([[["a", "b"], ["c"]]])  # a task's last batch can be the smallest


def test_one_process_needs_no_launch() -> None:
    assert data_parallel.check_launch(RunConfig(batch_size=1, diagnostics=True)) is None
    data_parallel.check_plan([[["only"]]])


def test_sampling_goes_through_the_backend_which_counts_the_optimizer_steps(
        tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    class Recording(HFBackend):
        captures_prefill = False  # as vLLM's: the bandit then encodes the contexts with the policy itself

        def sample(self, prompts: Any, **kwargs: Any) -> list[list[str]]:
            self.seen.append(self.version)
            return super().sample(prompts, **kwargs)

    def backend(config: RunConfig, model: Any, tokenizer: Any, model_ref: str) -> Recording:
        made.append(Recording(model, tokenizer))
        made[-1].seen = []
        return made[-1]

    monkeypatch.setattr(laser_app.loop, "generation_backend", backend)
    out = tmp_path / "run"
    result = runner.invoke(app, run_args(tiny, out, *SETTINGS))
    assert result.exit_code == 0, (result.output, result.exception)
    trained = [0 if e["skipped"] else len(e["groups"]) for e in events(out)]
    assert made[0].seen == list(np.cumsum([0, *trained[:-1]]))  # each batch sampled after the steps before it
    assert made[0].version == sum(trained) > 0
    assert all(e["seconds"]["encode"] > 0 for e in events(out))  # contexts encoded, not read from sampling
