"""``laser compare`` end to end on the tiny setup: resume, re-run of a failed run, bad input, parallel
workers; and where the built-in world comes from."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import laser_app.world
import laser_app.world.build
from laser_app.commands.compare import register
from laser_app.compare import (
    COMPARE_CSV,
    COMPARE_JSON,
    COMPARE_MD,
    COMPARE_PNG,
    LABEL_BUDGET_PNG,
    parse_methods,
    report_compare,
    run_compare,
)
from laser_app.config import RunConfig
from laser_app.errors import LaserError
from laser_app.run_dir import RunDir
from tests.laser_app.tiny_setup import build_tiny_setup

runner = CliRunner()
#: The ood label of runs on the user's own RMs: RunConfig's default (compare runs that one kind).
OOD = RunConfig.model_fields["ood"].default
DOMAINS = ("math", "mcq", "yesno")


def test_run_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run setting is a flag of compare (generated from RunConfig), shared by every run."""
    import laser_app.compare

    seen: dict[str, Any] = {}

    def fake_run_compare(methods: Any, **kw: Any) -> Any:
        seen.update(kw["shared"])
        raise typer.Exit(code=0)

    monkeypatch.setattr(laser_app.compare, "run_compare", fake_run_compare)
    result = runner.invoke(cli(), ["compare", "--methods", "laser", "--iterations", "2", "--batch-size=4", "--lora",
                                   "--no-diagnostics", "--rm-for-task", "math=rm-a"])
    assert result.exit_code == 0, result.output
    assert seen == {"iterations": "2", "batch_size": "4", "lora": True, "diagnostics": False,
                    "rm_for_task": "math=rm-a"}

    def options(methods: Any, **kw: Any) -> Any:
        seen.clear()
        seen.update(kw)
        raise typer.Exit(code=0)

    # compare's own options: unset ones reach run_compare as None, so a preset can fill them
    monkeypatch.setattr(laser_app.compare, "run_compare", options)
    result = runner.invoke(cli(), ["compare", "--preset", "evidence-quick", "--world-seeds", "1, 0,1"])
    assert result.exit_code == 0, result.output
    assert seen["preset"].name == "evidence-quick" and seen["world_seeds"] == [1, 0]
    assert (seen["seeds"], seen["oods"], seen["shared"]) == (None, None, {})
    for args, message in ((["--itrations", "2"], "unknown setting 'itrations'; did you mean --iterations"),
                          (["--seed", "1"], "use --seeds N"), (["--policy", "lints"], "name it in --methods"),
                          (["--iterations"], "requires an argument"),
                          (["2"], "unexpected argument '2'")):
        result = runner.invoke(cli(), ["compare", "--methods", "laser", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def cli() -> typer.Typer:
    """The ``laser`` app when it has ``compare``; else an app holding ``compare`` alone."""
    from laser_app.commands import app

    if any(c.name == "compare" for c in app.registered_commands):
        return app
    group = typer.Typer()
    group.callback()(lambda: None)
    register(group)
    return group


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def compare_args(paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["compare", "--out", str(out), "--jobs", "1", "--seeds", "2", "--no-progress",
            "--model", str(paths["policy"]), "--rm-registry", str(paths["registry"]),
            "--data", str(paths["train"]), "--eval-data", str(paths["eval"]), "--iterations", "1",
            "--batch-size", "3", "--batches-per-iteration", "2", "--n-responses", "4",
            "--max-new-tokens", "4", "--context", "hash", "--eval-size", "2",
            "--set", "rm_for_task=math=rm-a,yesno=rm-b,mcq=rm-c", *extra]


def test_compare_end_to_end_resume_and_rerun(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = compare_args(tiny, out, "--methods", "sft,random,laser[alpha=0.5]")
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, (result.output, result.exception)
    text = " ".join(result.stdout.split())
    assert ("eval split: accuracy % after training, mean [95% interval] over 2 units (1 world seed x 2 run "
            "seeds); bootstrap over units and eval prompts") in text
    assert "eval split: paired bootstrap of each method vs the reference of its label budget" in text
    assert "in-domain share" in text and "label_budget.png" in text
    assert "4 runs: 4 run now, 0 reused, 0 failed" in text

    data = json.loads((out / COMPARE_JSON).read_text())
    assert [m["label"] for m in data["methods"]] == ["sft", "random", "laser[alpha=0.5]"]
    assert data["reference"] == "laser[alpha=0.5]" and data["oods"] == [OOD] and data["failures"] == []
    assert data["shared"]["iterations"] == 1 and "policy" not in data["shared"]
    s = data["summary"][OOD]
    assert s["split"] == "eval" and s["methods"] == ["sft", "random", "laser[alpha=0.5]"]
    assert set(s["paired"]) == {"sft", "random"} and s["paired"]["random"]["n"] == 2
    assert set(s["in_domain"]) == {"laser[alpha=0.5]"}
    assert s["in_domain"]["laser[alpha=0.5]"]["task_runs"] >= 2
    assert s["time"]["laser[alpha=0.5]"]["relative_wall"] == 1.0
    assert len(data["records"]) == 6  # 2 trained methods + sft, 2 seeds
    assert {(r["world_seed"], r["labels"]["budget"]) for r in data["records"]} == {(0, "none")}
    assert not any("hits" in r for r in data["records"])  # per-prompt results stay in the run folders
    assert s["accuracy"]["random"]["resampled"] == "seeds and prompts"
    assert s["references"] == {"none": "laser[alpha=0.5]"}
    assert data["world_seeds"] == [0] and s["units"] == [[0, 0], [0, 1]]
    rows = list(csv.DictReader((out / COMPARE_CSV).open()))
    assert len(rows) == 6 * 4 and {r["domain"] for r in rows} == {*DOMAINS, "mean"}
    assert {(r["world_seed"], r["labels"]) for r in rows} == {("0", "none")}
    assert (out / COMPARE_PNG).stat().st_size > 0 and (out / LABEL_BUDGET_PNG).stat().st_size > 0
    md = (out / COMPARE_MD).read_text().splitlines()  # the same tables as Markdown
    assert md[0].startswith(f"`--ood {OOD}` (eval accuracy %, mean [95% bootstrap interval over 2 units")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md if line.startswith("| ")}
    assert set(rows) == {"method", "sft", "random", "laser[alpha=0.5]"}
    random_mean = 100 * s["accuracy"]["random"]["mean"]["mean"]
    assert f"**{random_mean:.1f}**" in rows["random"] and "vs laser[alpha=0.5]" in rows["random"]
    assert rows["laser[alpha=0.5]"].split(" | ")[6] == "reference"

    runs = sorted((out / "runs" / OOD / "world0").glob("*/seed*/status.json"))
    assert len(runs) == 4
    for status in runs:
        assert json.loads(status.read_text())["state"] == "complete"
    config = json.loads((runs[0].parent / "config.json").read_text())
    assert config["iterations"] == 1 and config["batch_size"] == 3 and config["ood"] == OOD
    laser_dir = next((out / "runs" / OOD / "world0").glob("laser-alpha-0.5-*"))
    laser_cfg = json.loads((laser_dir / "seed1" / "config.json").read_text())
    assert (laser_cfg["policy"], laser_cfg["alpha"], laser_cfg["seed"]) == ("linucb", 0.5, 1)

    # the same command again reuses every run; a failed run is run again
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0
    assert "4 runs: 0 run now, 4 reused, 0 failed" in " ".join(result.stdout.split())
    RunDir(out / "runs" / OOD / "world0" / "random" / "seed1").mark_failed("killed")
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0
    assert "4 runs: 1 run now, 3 reused, 0 failed" in " ".join(result.stdout.split())
    assert json.loads((out / COMPARE_JSON).read_text())["summary"][OOD]["accuracy"] == s["accuracy"]

    # other shared settings in the same folder: refused, not mixed
    result = runner.invoke(cli(), [*args, "--lr", "1e-3"])
    assert result.exit_code == 2
    assert "was made with other settings (lr: 0.0001 -> 0.001); pass --rerun" in result.stderr

    # laser report COMPARE_DIR redraws the plot and prints the tables
    (out / COMPARE_PNG).unlink()
    console = Console(record=True, width=200)
    assert report_compare(out, console) == [out / COMPARE_PNG, out / LABEL_BUDGET_PNG]
    assert (out / COMPARE_PNG).is_file()
    assert "paired bootstrap of each method" in " ".join(console.export_text().split())


def test_preset_fills_what_is_not_given_and_budgets_split_the_comparisons(tiny: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--out", str(out), "--jobs", "1", "--no-progress", "--preset", "evidence-quick",
            "--model", str(tiny["policy"]), "--rm-registry", str(tiny["registry"]), "--data", str(tiny["train"]),
            "--eval-data", str(tiny["eval"]), "--batch-size", "3", "--n-responses", "4", "--max-new-tokens", "4",
            "--context", "hash", "--eval-size", "3", "--set", "rm_for_task=math=rm-a,yesno=rm-b,mcq=rm-c"]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "2 runs: 2 run now, 0 reused, 0 failed" in " ".join(result.stdout.split())
    data = json.loads((out / COMPARE_JSON).read_text())
    assert data["preset"] == "evidence-quick" and data["seeds"] == 1 and data["world_seeds"] == [0]
    assert [m["label"] for m in data["methods"]] == ["sft", "random", "laser"]
    config = json.loads((out / "runs" / OOD / "world0" / "laser" / "seed0" / "config.json").read_text())
    # the preset's run settings, but the flag given wins
    assert (config["iterations"], config["batches_per_iteration"], config["eval_size"]) == (1, 2, 3)

    # an oracle added to the same folder: the two runs are reused, and the oracle is a class of its own
    result = runner.invoke(cli(), [*args, "--methods", "sft,random,laser,oracle"])
    assert result.exit_code == 0, (result.output, result.exception)
    text = " ".join(result.stdout.split())
    assert "3 runs: 1 run now, 2 reused, 0 failed" in text
    s = json.loads((out / COMPARE_JSON).read_text())["summary"][OOD]
    assert s["methods"] == ["sft", "random", "laser", "oracle"]
    assert {m: s["labels"][m]["budget"] for m in s["methods"]} == {"sft": "none", "random": "none", "laser": "none",
                                                                   "oracle": "oracle"}
    assert s["references"] == {"none": "laser", "oracle": "oracle"} and set(s["paired"]) == {"sft", "random"}
    assert "│ oracle │ oracle │" in result.stdout


def test_a_failing_method_is_reported_and_the_others_finish(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = compare_args(tiny, out, "--methods", "fixed:broken,fixed:rm-a", "--seeds", "1",
                        "--rms", "broken,rm-a", "--set", "rm_for_task=math=rm-a")
    args[args.index("--rm-registry") + 1] = str(tiny["odd_registry"])
    result = runner.invoke(cli(), args)
    assert result.exit_code == 1, result.output
    assert "1 run(s) failed" in result.stderr
    data = json.loads((out / COMPARE_JSON).read_text())
    assert [(f["method"], f["status"]) for f in data["failures"]] == [("fixed:broken", "failed")]
    assert "broken" in data["failures"][0]["error"] and (out / data["failures"][0]["log"]).is_file()
    assert data["summary"][OOD]["methods"] == ["fixed:rm-a"]


def test_a_stopped_run_continues_from_its_checkpoint(tiny: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import laser_app.loop

    out = tmp_path / "cmp"
    args = compare_args(tiny, out, "--methods", "random", "--seeds", "1")
    run = out / "runs" / OOD / "world0" / "random" / "seed0"
    real = laser_app.loop.evaluate_examples
    calls: list[int] = []

    def stopped_after_training(*a: Any, **k: Any) -> Any:  # Ctrl-C while evaluating after the iteration
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(laser_app.loop, "evaluate_examples", stopped_after_training)
    assert runner.invoke(cli(), args).exit_code == 130
    assert RunDir(run).state() == "interrupted" and (run / "checkpoint").is_dir()
    monkeypatch.undo()

    def started_over(*a: Any, **k: Any) -> Any:
        raise AssertionError("the stopped run started over")

    monkeypatch.setattr(laser_app.loop, "run_laser", started_over)
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, (result.output, (run.with_suffix(".log")).read_text())
    assert "1 runs: 1 run now, 0 reused, 0 failed" in " ".join(result.stdout.split())
    assert f"resuming {run} from its checkpoint" in run.with_suffix(".log").read_text()
    assert RunDir(run).state() == "complete" and [e["step"] for e in RunDir(run).events()] == [0, 1]

    # a stopped run without a checkpoint (this one finished, which removed it) runs from the start
    RunDir(run).mark_failed("killed")
    monkeypatch.undo()
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0 and "resuming" not in run.with_suffix(".log").read_text()


@pytest.mark.parametrize("extra, message", [
    (("--seeds", "0"), "error: --seeds must be an integer >= 1, got 0"),
    (("--methods", "laser,greedy"), "error: unknown method 'greedy'; valid: sft, laser, laser-paper"),
    (("--methods", "sft"), "error: sft alone runs nothing"),
    (("--methods", "laser", "--ood", "noise"), "error: --ood sets how the built-in RMs judge other domains"),
    (("--methods", "laser", "--reference", "random"), "error: --reference 'random' is not among the methods"),
    (("--methods", "laser", "--itrations", "2"),
     "error: option --itrations: unknown setting 'itrations'; did you mean --iterations"),
    (("--methods", "laser", "--seed", "2"), "error: option --seed: 'seed' cannot be set here"),
    (("--preset", "full"), "error: --preset 'full' is unknown; valid: evidence, evidence-quick"),
    (("--methods", "laser", "--world-seeds", "0,x"), "error: --world-seeds '0,x': expected integers >= 0"),
    (("--methods", "laser", "--world-seeds", "0,1"), "error: --world-seeds picks built-in worlds, but these runs"),
])
def test_bad_input_is_one_line_and_exit_2(tiny: dict[str, Path], tmp_path: Path, extra: tuple[str, ...],
                                          message: str) -> None:
    result = runner.invoke(cli(), compare_args(tiny, tmp_path / "cmp", *extra))
    assert result.exit_code == 2, result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "cmp" / "runs").exists()


def test_bad_override_values_list_each_field(tiny: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(cli(), compare_args(tiny, tmp_path / "cmp", "--methods",
                                               "random,linucb[alpha=high,iterations=0]"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: method linucb[alpha=high,iterations=0]: alpha (--alpha): Input should be a valid number, "
        "unable to parse string as a number (got 'high')",
        "error: method linucb[alpha=high,iterations=0]: iterations (--iterations): Input should be greater "
        "than or equal to 1 (got 0)"]


def test_compare_is_a_laser_command() -> None:
    from laser_app.commands import app

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "compare" in result.output
    result = runner.invoke(app, ["compare", "--help"])
    assert result.exit_code == 0
    assert "--methods" in result.output and "--seeds" in result.output and "laser-paper" in result.output


@pytest.mark.slow
def test_parallel_workers(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = compare_args(tiny, out, "--methods", "random,laser")
    args[args.index("--jobs") + 1] = "2"
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads((out / COMPARE_JSON).read_text())
    assert data["runs_done"] == 4 and data["failures"] == []
    serial = tmp_path / "serial"
    result = runner.invoke(cli(), compare_args(tiny, serial, "--methods", "random,laser"))
    assert result.exit_code == 0
    again = json.loads((serial / COMPARE_JSON).read_text())
    # the same seeds give the same runs, in workers or in this process
    assert again["summary"][OOD]["accuracy"] == data["summary"][OOD]["accuracy"]


@pytest.fixture
def load_world_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call of the world loader, which fails instead of building (a world takes minutes to build)."""
    calls: list[dict[str, Any]] = []

    def load_world(cache_dir: Any = None, **kwargs: Any) -> Any:
        calls.append({"cache_dir": cache_dir, **kwargs})
        raise OSError("no world in this test")

    monkeypatch.setattr(laser_app.world, "load_world", load_world)
    monkeypatch.setattr(laser_app.world.build, "load_world", load_world)
    return calls


def test_the_built_in_world_is_the_one_the_settings_name(load_world_calls: list[dict[str, Any]],
                                                        tmp_path: Path) -> None:
    shared = {"world_scale": 0.05, "world_seed": 3, "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(LaserError, match="could not load the built-in world: no world in this test"):
        run_compare(parse_methods("random"), seeds=1, shared=shared, out=tmp_path / "cmp", progress=False)
    assert len(load_world_calls) == 1
    call = load_world_calls[0]
    assert (call["scale"], call["seed"], Path(call["cache_dir"])) == (0.05, 3, tmp_path / "cache")
    assert not (tmp_path / "cmp").exists()  # nothing is written before the world is there


def test_world_scale_flag_reaches_the_world_loader(load_world_calls: list[dict[str, Any]],
                                                   tmp_path: Path) -> None:
    result = runner.invoke(cli(), ["compare", "--out", str(tmp_path / "cmp"), "--methods", "random", "--seeds",
                                   "1", "--no-progress", "--world-scale", "0.05",
                                   "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: could not load the built-in world: no world in this test"
    assert [c["scale"] for c in load_world_calls] == [0.05]


class StandInWorld:
    """What compare reads of a built-in world: its RM names and RM-for-task map."""

    def __init__(self) -> None:
        self.rm_for_task = {"math": "rm-a", "yesno": "rm-b", "mcq": "rm-c"}

    def registry(self, ood: str) -> Any:
        return type("Registry", (), {"names": ["rm-a", "rm-b", "rm-c"]})()


def test_world_seeds_and_the_evidence_preset_plan_every_unit(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """Every world is loaded before any run; runs are planned per ood kind x world seed x run seed (nothing
    runs here: the runner is replaced)."""
    import laser_app.compare

    loaded: list[int] = []

    def load_world(cache_dir: Any = None, **kwargs: Any) -> Any:
        loaded.append(kwargs["seed"])
        return StandInWorld()

    planned: list[Any] = []
    monkeypatch.setattr(laser_app.world, "load_world", load_world)
    monkeypatch.setattr(laser_app.world.build, "load_world", load_world)
    monkeypatch.setattr(laser_app.compare, "execute_runs", lambda runs, **kw: planned.extend(runs) or {})

    result = run_compare(parse_methods("sft,random,laser"), seeds=2, world_seeds=[0, 3], oods=["bias", "noise"],
                         out=tmp_path / "a", progress=False)
    assert loaded == [0, 3] and result.data["world_seeds"] == [0, 3]
    assert len(planned) == 2 * 2 * 2 * 2  # ood x world seed x run seed x trained method
    assert {(p.ood, p.world_seed, p.seed) for p in planned} == {(o, w, k) for o in ("bias", "noise")
                                                                for w in (0, 3) for k in (0, 1)}
    assert all(p.config.world_seed == p.world_seed and f"world{p.world_seed}" in p.path.parts for p in planned)

    loaded.clear()
    planned.clear()
    result = run_compare(None, preset="evidence", out=tmp_path / "b", progress=False)
    data = result.data
    assert loaded == [0, 1] and (data["preset"], data["seeds"], data["world_seeds"]) == ("evidence", 3, [0, 1])
    assert data["oods"] == list(laser_app.world.OOD_KINDS)
    labels = [m["label"] for m in data["methods"]]
    assert labels[:4] == ["sft", "fixed:rm-a", "fixed:rm-b", "fixed:rm-c"] and "oracle" in labels
    trained = {p.method for p in planned}
    assert len(planned) == len(trained) * 3 * 2 * len(laser_app.world.OOD_KINDS)
    assert trained | {p["method"] for p in data["shared_runs"]} == set(labels) - {"sft"}


def test_importing_compare_loads_no_torch() -> None:
    code = "import sys, laser_app.compare; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
