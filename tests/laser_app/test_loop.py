"""End-to-end ``laser run`` on a tiny user setup (policy, RMs, registry and data files), the run folder,
``laser report``, and the loop's handling of steps with no pair and of a failing RM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from laser_app.batching import derive_seed, make_batches
from laser_app.commands import app
from laser_app.config import resolve_config
from laser_app.errors import RunDirError
from laser_app.evaluation import cap_per_task
from laser_app.run_dir import RunDir
from laser_app.world.tasks import Example
from tests.laser_app.tiny_setup import RMS, build_tiny_setup, run_args

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def finished_run(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("runs") / "linucb"
    result = runner.invoke(app, run_args(tiny, out, "--policy", "linucb", "--rms", ",".join(RMS), "--seed",
                                         "3", "--set", "rm_for_task=math=rm-a,yesno=rm-b,mcq=rm-c",
                                         "--diagnostics", "--mab-reward", "dpo+nll"))
    assert result.exit_code == 0, (result.output, result.exception)
    return out, result.stdout


def test_run_folder_holds_everything(finished_run: tuple[Path, str]) -> None:
    out, stdout = finished_run
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    for name in ("config.json", "resolved.json", "events.jsonl", "metrics.json", "bandit.json", "bandit.npz",
                 "pairs.jsonl",
                 "policy/config.json", "policy/model.safetensors", "policy/tokenizer.json",
                 "rm_choice.png", "curves.png", "accuracy.png"):
        assert (out / name).is_file(), name
    assert f"run folder: {out}" in stdout
    assert "accuracy per domain" in stdout and "time breakdown" in stdout and "in-domain" in stdout

    config = json.loads((out / "config.json").read_text())
    assert config["policy"] == "linucb" and config["seed"] == 3
    assert resolve_config(out / "config.json").model_dump(mode="json") == config  # repeatable with --config
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["rms"] == list(RMS) and resolved["max_new_tokens"] == 4

    events = RunDir(out).events()
    per_prompt = config["pairs_per_prompt"]
    assert len(events) == 6  # 2 iterations x 3 batches
    assert [e["iteration"] for e in events] == [0, 0, 0, 1, 1, 1]
    for e in events:
        assert len(e["tasks"]) == 1 and e["task"] in ("math", "yesno", "mcq")  # task-homogeneous batches
        assert e["rm"] in RMS and e["choice_counts"] == {e["task"]: {e["rm"]: 3}}
        assert e["pairs_kept"] == sum(g["pairs"] for g in e["groups"]) <= e["n_prompts"] * per_prompt
        assert e["skipped"] == (e["pairs_kept"] == 0)
        assert set(e["seconds"]) >= {"select", "generate", "score", "train"}
        if not e["skipped"]:
            assert e["loss"] > 0 and e["dpo_loss"] > 0 and e["nll_loss"] > 0
            feedback = e["groups"][0]["feedback"]
            assert e["raw_reward"] == pytest.approx(-e["loss"])  # --mab-reward dpo+nll: the paper's reward
            assert feedback["policy_reward"] == pytest.approx(e["normalized_reward"] - 0.75)  # LinUCB's shift
            assert len(e["arm_scores"]) == 3  # LinUCB exposes its upper confidence bounds
        assert set(e["counterfactual_loss"]) == set(RMS)  # --diagnostics: every RM's loss at this policy
        assert set(e["counterfactual_reward"]) == set(RMS)  # and the reward each would have earned
        if not e["skipped"]:  # the chosen RM's counterfactual is what the step earned (same pairs, same policy)
            assert e["counterfactual_reward"][e["rm"]] == pytest.approx(e["raw_reward"], rel=1e-4)
            assert e["counterfactual_loss"][e["rm"]] == pytest.approx(e["loss"], rel=1e-4)
        assert e["seconds"]["diagnostics"] > 0

    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == sum(e["pairs_kept"] for e in events) > 0
    assert all(isinstance(p[k], str) for p in pairs for k in ("prompt", "chosen", "rejected"))
    assert all(p["chosen"] != p["rejected"] for p in pairs)


def test_metrics_summary(finished_run: tuple[Path, str]) -> None:
    out, _ = finished_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 6 and m["iterations"] == 2 and m["rms"] == list(RMS)
    assert set(m["accuracy"]) == {"eval"} and len(m["accuracy"]["eval"]) == 3  # before + after each iteration
    assert set(m["accuracy"]["eval"][0]) == {"math", "yesno", "mcq", "mean"}
    for shares in m["choice_share"]["per_iteration"]:
        for by_rm in shares.values():
            assert sum(by_rm.values()) == pytest.approx(1.0)
    assert set(m["in_domain_share"]["per_task"]) <= {"math", "yesno", "mcq"}
    assert set(m["lock_in"]) == {"per_task", "locked", "threshold"}
    t = m["timings"]
    for key in ("total", "setup", "eval", "generate", "score", "train", "select", "bandit_share_of_step"):
        assert t[key] is not None and t[key] >= 0, key
    assert t["bandit_share_of_step"] < 0.5
    # --diagnostics and rm_for_task: the regret against the oracle routing, from the events
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    gaps = [e["counterfactual_reward"][m["rm_for_task"][e["task"]]] - e["counterfactual_reward"][e["rm"]]
            for e in events if None not in (e["counterfactual_reward"][m["rm_for_task"][e["task"]]],
                                            e["counterfactual_reward"][e["rm"]])]
    assert m["oracle_regret"]["steps"] == len(gaps) > 0
    assert m["oracle_regret"]["total"] == pytest.approx(sum(gaps), abs=1e-5)


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Nested dicts, lists and arrays hold equal values (arrays compared elementwise)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple) and not isinstance(b, np.ndarray):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


def test_bandit_state_reloads(finished_run: tuple[Path, str]) -> None:
    out, _ = finished_run
    from laser_adapters.encoders import HashingEncoder
    from laser_adapters.methods import make_selector

    state = RunDir(out).load_bandit()
    selector = make_selector("linucb", list(RMS), encoder=HashingEncoder(dim=64, seed=3), seed=3)
    selector.load_state_dict(state)
    assert_same_state(selector.state_dict(), state)


def test_report_redraws_and_summarizes(finished_run: tuple[Path, str]) -> None:
    out, _ = finished_run
    (out / "curves.png").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "curves.png").is_file()
    text = " ".join(result.stdout.split())
    assert "accuracy per domain" in text and "RM choice share per domain" in text
    assert "bandit's own share of a step" in result.stdout


@pytest.mark.parametrize("extra, label", [
    (("--policy", "egreedy", "--granularity", "instance", "--batching", "mixed", "--scope", "per-context"),
     None),
    (("--policy", "ensemble-agree",), "ensemble-agree"),
    (("--policy", "sequential", "--mab-reward", "nll"), "rm-a"),
])
def test_other_selectors_run_through_the_same_loop(tiny: dict[str, Path], tmp_path: Path,
                                                   extra: tuple[str, ...], label: str | None) -> None:
    out = tmp_path / "run"
    args = run_args(tiny, out, *extra, "--iterations", "1", "--batches-per-iteration", "2",
                    "--eval-size", "1")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    events = RunDir(out).events()
    assert len(events) == 2
    for e in events:
        if label is not None:
            assert e["rm"] == label
        if "instance" in extra:  # one group (one DPO step) per RM chosen in the batch
            assert len(e["groups"]) == len({rm for c in e["choice_counts"].values() for rm in c})
    m = json.loads((out / "metrics.json").read_text())
    assert m["in_domain_share"] is None  # no task->RM mapping given


def test_identical_responses_are_skipped_counted_warned_and_not_rewarded(tiny: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "flat"
    # near-zero temperature: every sample of a prompt is the same text, so no pair can form
    result = runner.invoke(app, [*run_args(tiny, out, "--policy", "egreedy", "--temperature", "1e-6",
                                           "--iterations", "1", "--eval-size", "1")])
    assert result.exit_code == 0, result.output
    assert "3 of 3 steps formed no preference pair" in " ".join(result.stderr.split())
    events = RunDir(out).events()
    assert all(e["skipped"] and e["pairs_kept"] == 0 and e["dropped_duplicates"] == 9 for e in events)
    assert all("feedback" not in g for e in events for g in e["groups"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["skipped_steps"] == 3 and m["pairs"]["pairs_kept"] == 0
    state = RunDir(out).load_bandit()
    assert state["normalization"]["normalizers"] == {}  # no reward was ever normalized
    assert np.all(np.asarray(state["policy"]["state"]["counts"]) == 0)  # and no arm was ever updated


def test_a_failing_rm_marks_the_run_failed_and_report_refuses(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "broken"
    args = run_args(tiny, out, "--policy", "fixed:broken", "--rms", "broken,rm-a")
    args[args.index("--rm-registry") + 1] = str(tiny["odd_registry"])
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "broken" in err[0]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and "broken" in status["error"]
    assert not (out / "metrics.json").exists()

    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 2
    assert "is not complete (state: failed" in result.stderr and "--partial" in result.stderr
    result = runner.invoke(app, ["report", str(out), "--partial"])
    assert result.exit_code == 2 and "logged no steps yet" in result.stderr


def test_partial_report_of_an_interrupted_run(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    src, _ = finished_run
    out = tmp_path / "interrupted"
    run = RunDir.create(out)
    for line in (src / "events.jsonl").read_text().splitlines()[:4]:
        run.append_event(json.loads(line))
    result = runner.invoke(app, ["report", str(out), "--partial", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "INCOMPLETE run (state: running)" in " ".join(result.stdout.split())
    assert "INCOMPLETE: RM choice share" in " ".join(result.stdout.split())


def test_existing_run_folder_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    RunDir.create(out).mark_complete()
    with pytest.raises(RunDirError, match=r"already exists \(state: complete\); pass --overwrite"):
        RunDir.create(out)
    assert RunDir.create(out, overwrite=True).status()["state"] == "running"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a run folder"):
        RunDir.create(other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_batches() -> None:
    rows = [Example(f"p{i}", task="abc"[i % 3]) for i in range(20)]
    homo = make_batches(rows, 3, homogeneous=True, rng=np.random.default_rng(0))
    assert all(len({ex.task for ex in b}) == 1 for b in homo)
    assert sorted(ex.prompt for b in homo for ex in b) == sorted(ex.prompt for ex in rows)
    assert len({b[0].task for b in homo[:4]}) > 1  # batch order is shuffled across tasks
    mixed = make_batches(rows, 4, homogeneous=False, rng=np.random.default_rng(0), limit=3)
    assert [len(b) for b in mixed] == [4, 4, 4] and any(len({ex.task for ex in b}) > 1 for b in mixed)
    again = make_batches(rows, 4, homogeneous=False, rng=np.random.default_rng(0), limit=3)
    assert [[ex.prompt for ex in b] for b in again] == [[ex.prompt for ex in b] for b in mixed]
    assert [ex.prompt for ex in cap_per_task(rows, 2)] == ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 1, 3)


@pytest.mark.slow
def test_lora_run_saves_the_adapter(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "lora"
    args = run_args(tiny, out, "--policy", "random", "--lora", "--set", "lora_r=4", "--iterations", "2",
                    "--batches-per-iteration", "2", "--eval-size", "1", "--lr", "1e-3")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / "policy").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
