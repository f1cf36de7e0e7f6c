"""The ``laser`` CLI: help without torch, the missing-extra message, each bad input -> one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from laser_app.cli import INSTALL_HINT, main
from laser_app.commands import app
from laser_app.run_dir import RunDir
from tests.laser_app.tiny_setup import build_tiny_setup, run_args

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "report", "world"):
        assert command in result.output
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for flag in ("--policy", "--rms", "--n-responses", "--mab-reward", "--lora", "--config", "--set"):
        assert flag in result.output
    assert "(default: linucb)" in result.output


def test_help_does_not_import_torch() -> None:
    code = ("import sys\nfrom laser_app.cli import main\n"
            "for args in (['--help'], ['run', '--help'], ['report', '--help'], ['world', '--help']):\n"
            "    assert main(args) == 0, args\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: laser" in proc.stdout


def test_missing_llm_extra_prints_one_line(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # find_spec reports a None entry as missing
    assert main(["--help"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and INSTALL_HINT in lines[0] and "transformers" in lines[0]
    assert "pip install 'laser-bandits[llm]'" in lines[0]  # names the package and extra to install


def run_cli(args: list[str]) -> tuple[int, list[str]]:
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr.strip().splitlines()


def test_unknown_policy_lists_valid_names() -> None:
    code, err = run_cli(["run", "--policy", "greedy"])
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("error: invalid configuration: policy (--policy): unknown policy 'greedy'; "
                             "valid: ")
    assert "linucb" in err[0] and "fixed:NAME" in err[0] and "ensemble-agree" in err[0]


def test_n_responses_below_two() -> None:
    code, err = run_cli(["run", "--n-responses", "1"])
    assert code == 2
    assert err == ["error: invalid configuration: n_responses (--n-responses): n_responses must be >= 2 to "
                   "form a preference pair, got 1"]


def test_malformed_config_file_gives_one_line_per_field(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('alpha = "high"\niterations = 0\ncolour = "red"\n')
    code, err = run_cli(["run", "--config", str(cfg)])
    assert code == 2
    assert len(err) == 3
    assert any("alpha (--alpha): Input should be a valid number" in line for line in err)
    assert any("iterations (--iterations): Input should be greater than or equal to 1" in line
               for line in err)
    assert any("colour: Extra inputs are not permitted" in line for line in err)
    cfg.write_text("alpha = [\n")
    code, err = run_cli(["run", "--config", str(cfg)])
    assert code == 2 and len(err) == 1 and "is not valid TOML" in err[0]


def test_flags_win_over_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("n_responses: 1\n")
    code, err = run_cli(["run", "--config", str(cfg), "--n-responses", "1", "--set", "pairs_per_prompt=3"])
    assert code == 2 and "pairs_per_prompt" not in " ".join(err)  # n_responses fails first, on its own
    code, err = run_cli(["run", "--config", str(cfg), "--n-responses", "4", "--set", "pairs_per_prompt=3"])
    assert code == 2 and len(err) == 1 and "pairs_per_prompt=3 needs at least 6 responses" in err[0]


def test_bad_data_files(tiny: dict[str, Path], tmp_path: Path) -> None:
    missing_field = tmp_path / "d.jsonl"
    missing_field.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    args = run_args(tiny, tmp_path / "run")
    args[args.index("--data") + 1] = str(missing_field)
    code, err = run_cli(args)
    assert code == 2
    assert err == [f"error: data file {missing_field} line 2: missing field \"prompt\" (fields present: "
                   "question)"]
    missing_field.write_text("\n")
    code, err = run_cli(args)
    assert code == 2
    assert err == [f"error: data file {missing_field} has no rows; write one JSON object per line with at "
                   "least a \"prompt\""]
    assert not (tmp_path / "run").exists()  # nothing was started, so no run folder


def test_unknown_rm_name_lists_valid_names(tiny: dict[str, Path], tmp_path: Path) -> None:
    code, err = run_cli([*run_args(tiny, tmp_path / "run"), "--rms", "rm-a,rm-x"])
    assert code == 2
    assert err == ["error: unknown RM 'rm-x'; valid names: rm-a, rm-b, rm-c"]
    code, err = run_cli([*run_args(tiny, tmp_path / "run"), "--policy", "fixed:rm-q"])
    assert code == 2
    assert err == ["error: --policy fixed:rm-q: RM 'rm-q' is not among the RMs in use; valid names: rm-a, "
                   "rm-b, rm-c"]
    assert not (tmp_path / "run").exists()


def test_model_path_that_does_not_exist(tiny: dict[str, Path], tmp_path: Path) -> None:
    args = run_args(tiny, tmp_path / "run")
    for bad in (str(tmp_path / "no-model"), "./no/such/model", str(tmp_path / "m.gguf")):
        args[args.index("--model") + 1] = bad
        code, err = run_cli(args)
        assert code == 2
        assert err == [f"error: model path {bad} does not exist; pass an existing folder, a .gguf file or a "
                       "hub id"]
    assert not (tmp_path / "run").exists()


def test_missing_registry_and_eval_data(tiny: dict[str, Path], tmp_path: Path) -> None:
    args = run_args(tiny, tmp_path / "run")
    args[args.index("--rm-registry") + 1] = str(tmp_path / "none.toml")
    code, err = run_cli(args)
    assert code == 2 and "RM registry" in err[0] and "does not exist" in err[0]
    bad_eval = tmp_path / "e.jsonl"
    bad_eval.write_text('{"prompt": "q"}\n')
    args = run_args(tiny, tmp_path / "run")
    args[args.index("--eval-data") + 1] = str(bad_eval)
    code, err = run_cli(args)
    assert code == 2
    assert err == [f"error: eval data file {bad_eval} line 1: missing field \"answer\" (evaluation data "
                   "needs a reference answer per row)"]


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    code, err = run_cli(["report", str(tmp_path)])
    assert code == 2
    assert err == [f"error: {tmp_path} is not a run folder (no status.json); pass the --out of a laser run"]
    code, err = run_cli(["report", str(tmp_path / "nope")])
    assert code == 2 and err == [f"error: run folder {tmp_path / 'nope'} does not exist"]


# ------------------------------------------------------------------------------- the built-in world
SCALE = "0.005"


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from laser_app.world import build_world

    cache = tmp_path_factory.mktemp("cache")
    build_world(cache, seed=0, scale=float(SCALE), progress=False, threads=1)
    return cache


def test_world_info_prints_the_rm_quality_matrix(small_world: Path) -> None:
    result = runner.invoke(app, ["world", "info", "--cache-dir", str(small_world), "--scale", SCALE])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "RM quality" in text and "rm-a" in text and "rm-c" in text
    empty = str(small_world / "empty")
    result = runner.invoke(app, ["world", "info", "--cache-dir", empty, "--scale", SCALE])
    assert result.exit_code == 2 and "laser world build" in result.stderr


def test_default_run_on_a_small_built_world(small_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--policy", "linucb", "--rms", "rm-a,rm-b,rm-c", "--cache-dir",
                                 str(small_world), "--set", f"world_scale={SCALE}", "--iterations", "2",
                                 "--batches-per-iteration", "3", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["accuracy"]) == {"dev", "test"} and len(m["accuracy"]["test"]) == 3
    assert set(m["accuracy"]["test"][0]) == {"math", "yesno", "mcq", "mean"}
    assert m["rm_for_task"] == {"math": "rm-a", "yesno": "rm-b", "mcq": "rm-c"}
    assert m["in_domain_share"] is not None and m["lock_in"] is not None
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["stop"] == "\n" and resolved["threads"] == 1
    assert resolved["mab_reward"] == "consistency"  # auto never reads training labels
    assert resolved["labels"] == {"budget": "none", "labelled_prompts": 0,
                                  "source": "none: the RMs and the policy only"}
    assert resolved["world"].startswith(str(small_world))
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    texts = [p[k] for p in pairs for k in ("chosen", "rejected")]
    # trained as sampled: a text ends at the stop string, kept, or runs to max_new_tokens without one
    assert texts and all("\n" not in t[:-1] for t in texts)
    assert any(t.endswith("\n") for t in texts)
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0 and "in-domain" in report.stdout


def test_oracle_run_routes_each_task_to_its_rm(small_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "oracle"
    result = runner.invoke(app, ["run", "--policy", "oracle", "--cache-dir", str(small_world), "--set",
                                 f"world_scale={SCALE}", "--iterations", "1", "--batches-per-iteration", "3",
                                 "--batching", "mixed", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["in_domain_share"]["per_task"].values()) == {1.0} and m["lock_in"]["locked"] == []


def test_bon_on_a_small_built_world(small_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "bon"
    args = ["bon", "--policy", "linucb", "--cache-dir", str(small_world), "--set", f"world_scale={SCALE}",
            "--n-responses", "3", "--mab-reward", "gold", "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "best-of-3 with linucb" in result.stdout and f"run folder: {out}" in result.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "best-of-n" and set(m["tasks"]) == {"math", "yesno", "mcq"}
    assert m["prompts"] == sum(len(e["tasks"]) for e in RunDir(out).events()) > 0
    assert all(0.0 <= m["accuracy"][t] <= 1.0 for t in m["tasks"])
    assert m["in_domain_share"] is not None and m["timings"]["bandit_share"] < 0.5
    events = RunDir(out).events()
    assert all(len(e["answers"]) == len(e["tasks"]) == len(e["rms"]) for e in events)
    assert all(rm in ("rm-a", "rm-b", "rm-c") for e in events for rm in e["rms"])
    assert (out / "bandit.json").is_file()
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0 and "best-of-3 with linucb" in report.stdout

    again = runner.invoke(app, [*args[:-3], "--out", str(tmp_path / "bon2"), "--no-progress"])
    assert again.exit_code == 0
    assert RunDir(tmp_path / "bon2").events()[0]["answers"] == events[0]["answers"]  # seeded

    ens = runner.invoke(app, ["bon", "--policy", "ensemble-score", "--cache-dir", str(small_world), "--set",
                              f"world_scale={SCALE}", "--n-responses", "2", "--out", str(tmp_path / "ens"),
                              "--no-progress"])
    assert ens.exit_code == 0, ens.output
    assert {rm for e in RunDir(tmp_path / "ens").events() for rm in e["rms"]} == {"ensemble-score"}


def test_bon_rejects_a_training_reward(small_world: Path, tmp_path: Path) -> None:
    code, err = run_cli(["bon", "--cache-dir", str(small_world), "--set", f"world_scale={SCALE}",
                         "--mab-reward", "dpo", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2 and len(err) == 1 and "needs a training step" in err[0]
    assert not (tmp_path / "x").exists()
