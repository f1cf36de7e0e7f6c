"""``laser compare``: method parsing (aliases, overrides), the summary and paired test on hand-made run
metrics, and small end-to-end comparisons on the tiny setup (resume, re-run of a failed run, bad input)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from laser_app.commands.compare import parse_run_flags, register
from laser_app.compare import (
    COMPARE_CSV,
    COMPARE_JSON,
    COMPARE_PNG,
    METHOD_ALIASES,
    PAPER_ALPHA,
    MethodError,
    check_method_configs,
    default_methods,
    paired_test,
    parse_method,
    parse_methods,
    pick_reference,
    plot_compare,
    record_from_metrics,
    render_compare,
    report_compare,
    shared_settings,
    summarize,
    write_csv,
)
from laser_app.config import RunConfig
from laser_app.errors import LaserError
from laser_app.run_dir import RunDir
from tests.laser_app.tiny_setup import RMS, build_tiny_setup

runner = CliRunner()
DOMAINS = ("math", "mcq", "yesno")


# ------------------------------------------------------------------------------------------ parsing
def test_methods_aliases_and_overrides() -> None:
    methods = parse_methods("sft, fixed:rm-a ,linucb[scope=global, mab-reward=dpo+nll],laser,laser-paper,"
                            "egreedy[epsilon=0.2,rms=rm-a,rm-b],laser-instance[alpha=0.3]")
    labels = [m.label for m in methods]
    assert labels == ["sft", "fixed:rm-a", "linucb[scope=global,mab_reward=dpo+nll]", "laser", "laser-paper",
                      "egreedy[epsilon=0.2,rms=rm-a,rm-b]", "laser-instance[alpha=0.3]"]
    sft, fixed, linucb, laser, paper, egreedy, instance = methods
    assert sft.is_sft and sft.policy is None and not sft.learns
    assert dict(fixed.settings) == {"policy": "fixed:rm-a"} and not fixed.learns
    assert dict(linucb.settings) == {"policy": "linucb", "scope": "global", "mab_reward": "dpo+nll"}
    assert dict(laser.settings) == {"policy": RunConfig.model_fields["policy"].default} and laser.learns
    assert paper.settings["alpha"] == PAPER_ALPHA == 0.1
    assert {k: paper.settings[k] for k in ("mab_reward", "scope", "normalizer", "granularity")} == {
        "mab_reward": "dpo+nll", "scope": "global", "normalizer": "quantile", "granularity": "batch"}
    # the paper learns from the raw normalized reward: set only when the config has the field
    assert ("reward_baseline" in paper.settings) == ("reward_baseline" in RunConfig.model_fields)
    assert egreedy.settings["epsilon"] == 0.2 and egreedy.settings["rms"] == "rm-a,rm-b"  # a list value
    assert dict(instance.settings) == {"policy": "linucb", "granularity": "instance", "alpha": 0.3}
    assert parse_method("laser-dpo").settings["mab_reward"] == "dpo"
    assert parse_method("laser-percontext").settings["scope"] == "per-context"

    # every alias and override gives a valid config, each run in its own, file-safe folder
    check_method_configs(methods, {"rms": "rm-a,rm-b,rm-c"}, list(RMS))
    slugs = [m.slug for m in methods]
    assert len(set(slugs)) == len(slugs)
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-") for s in slugs)

    defaults = [m.label for m in default_methods(RMS)]
    assert defaults == ["sft", "fixed:rm-a", "fixed:rm-b", "fixed:rm-c", "random", "sequential",
                        "ensemble-score", "ensemble-agree", "oracle", *METHOD_ALIASES]
    assert pick_reference(methods) == "laser"
    assert pick_reference(parse_methods("random,lints,ucb1")) == "lints"
    assert pick_reference(parse_methods("random,sequential")) is None


@pytest.mark.parametrize("text, message", [
    ("laser,greedy", "unknown method 'greedy'; valid: sft, laser, laser-paper"),
    ("linucb[alhpa=0.2]", "unknown setting 'alhpa'; did you mean alpha?"),
    ("linucb[seed=3]", "'seed' cannot be set here: compare runs seeds 0..N-1; use --seeds N"),
    ("laser[policy=lints]", "each method is its own policy; name it in --methods"),
    ("sft[alpha=1]", "sft is the starting policy and takes no settings"),
    ("linucb[alpha=0.2", "'[' is never closed"),
    ("linucb[0.2]", "expected key=value inside the brackets"),
    ("random,random", "listed twice"),
    ("fixed:", "fixed:NAME needs an RM name"),
    ("", "--methods is empty"),
])
def test_bad_methods(text: str, message: str) -> None:
    with pytest.raises(MethodError, match=None) as err:
        parse_methods(text)
    assert message in str(err.value)
    assert "fixed:NAME" in str(err.value) or "unknown method" not in message


def test_bad_override_values_give_one_line_per_field() -> None:
    methods = parse_methods("linucb[alpha=-1,granularity=atom],fixed:rm-q,"
                            "ensemble-score[granularity=instance]")
    with pytest.raises(MethodError) as err:
        check_method_configs(methods, {}, list(RMS))
    lines = err.value.lines
    assert len(lines) == 4, lines
    assert lines[0].startswith("method linucb[alpha=-1,granularity=atom]: alpha (--alpha): Input should be "
                               "greater than or equal to 0")
    assert lines[1].startswith("method linucb[alpha=-1,granularity=atom]: granularity (--granularity): Input "
                               "should be 'batch' or 'instance'")
    assert lines[2] == ("method fixed:rm-q: RM 'rm-q' is not among the RMs in use; valid names: rm-a, rm-b, "
                        "rm-c")
    assert lines[3].startswith("method ensemble-score[granularity=instance]: granularity 'instance' routes")
    with pytest.raises(MethodError, match="invalid configuration: iterations"):
        check_method_configs(methods[:1], {"iterations": 0}, list(RMS))


def test_run_flags() -> None:
    assert parse_run_flags(["--iterations", "2", "--batch-size=4", "--lora", "--no-diagnostics",
                            "--rm-for-task", "math=rm-a"]) == {
        "iterations": "2", "batch_size": "4", "lora": True, "diagnostics": False, "rm_for_task": "math=rm-a"}
    for args, message in ((["--itrations", "2"], "unknown setting 'itrations'; did you mean --iterations?"),
                          (["--seed", "1"], "use --seeds N"), (["--policy", "lints"], "name it in --methods"),
                          (["--iterations"], "--iterations needs a value"),
                          (["2"], "unexpected argument '2'"),
                          (["--no-iterations"], "--no-X is only for on/off settings")):
        with pytest.raises(LaserError, match=None) as err:
            parse_run_flags(args)
        assert message in str(err.value), (args, str(err.value))


def test_shared_settings_from_a_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('policy = "lints"\nseed = 4\nood = "noise"\niterations = 2\nbatch-size = 4\n')
    shared = shared_settings(cfg, {"iterations": "3", "lr": None})
    assert shared.values == {"iterations": "3", "batch_size": 4}  # flags win; the file's policy and seed go
    assert shared.dropped == ["policy", "seed"] and shared.ood == "noise"
    with pytest.raises(MethodError, match="unknown setting 'colour'"):
        shared_settings(None, {"colour": "red"})


# ------------------------------------------------------------------------------------------ summary
def metrics(after: float, *, before: float = 0.5, shares: dict[str, float] | None = None,
            locked: tuple[str, ...] = (), total: float = 100.0, setup: float = 10.0) -> dict[str, Any]:
    """A run's metrics.json as ``summarize_run`` writes it: domain accuracies around a known mean."""
    def acc(mean: float) -> dict[str, float]:
        return {"math": mean + 0.1, "mcq": mean - 0.1, "yesno": mean, "mean": mean}

    per_step = {"encode": 0.01, "select": 0.01, "generate": 2.0, "score": 1.0, "train": 1.0,
                "diagnostics": 0.0}
    return {
        "accuracy": {"dev": [acc(before), acc(after)], "test": [acc(before), acc(before + 0.01), acc(after)]},
        "in_domain_share": None if shares is None else {"per_task": shares,
                                                        "mean": float(np.mean([*shares.values()]))},
        "lock_in": None if shares is None else {"per_task": {d: d in locked for d in shares},
                                                "threshold": 0.8},
        "steps": 10,
        "timings": {"total": total, "setup": setup, "eval": 5.0, "per_step": per_step,
                    "bandit_share_of_step": 0.02 / 4.02},
    }


AFTER = {"laser": [0.70, 0.66, 0.72], "random": [0.60, 0.64, 0.62], "ensemble-score": [0.71, 0.60, 0.65]}
SHARES = [{"math": 1.0, "mcq": 0.5, "yesno": 0.75}, {"math": 1.0, "mcq": 0.0, "yesno": 1.0},
          {"math": 0.5, "mcq": 1.0, "yesno": 1.0}]


@pytest.fixture
def records() -> list[dict[str, Any]]:
    out = []
    for method, accs in AFTER.items():
        for seed, a in enumerate(accs):
            m = metrics(a, before=0.5 + seed / 100,
                        shares=SHARES[seed] if method == "laser" else None,
                        locked=("mcq",) if method == "laser" and seed == 1 else (),
                        total=100.0 if method == "laser" else 55.0)
            out.append(record_from_metrics(m, ood="noise", method=method, seed=seed, split=None,
                                           run_dir=f"runs/noise/{method}/seed{seed}"))
    return out


def test_summary_and_paired_test_on_hand_made_metrics(records: list[dict[str, Any]], tmp_path: Path) -> None:
    assert records[0]["split"] == "test" and records[0]["iterations"] == 2
    methods = ["sft", "random", "ensemble-score", "laser"]
    s = summarize(records, methods=methods, reference="laser", learners=["laser"])["noise"]
    assert s["domains"] == list(DOMAINS) and s["seeds"] == [0, 1, 2] and s["methods"] == methods
    acc = s["accuracy"]
    assert acc["laser"]["mean"]["mean"] == pytest.approx(np.mean(AFTER["laser"]))
    assert acc["laser"]["std"]["mean"] == pytest.approx(np.std(AFTER["laser"], ddof=1))
    assert acc["laser"]["mean"]["math"] == pytest.approx(np.mean(AFTER["laser"]) + 0.1)
    # sft: the before-training accuracy every run records, no run of its own
    assert acc["sft"]["per_seed"] == {str(k): pytest.approx({"math": 0.6 + k / 100, "mcq": 0.4 + k / 100,
                                                             "yesno": 0.5 + k / 100, "mean": 0.5 + k / 100})
                                      for k in range(3)}

    for other, (w, t_, l_) in {"random": (3, 0, 0), "ensemble-score": (2, 0, 1), "sft": (3, 0, 0)}.items():
        pair = s["paired"][other]
        ref = np.array(AFTER["laser"])
        base = np.array(AFTER[other]) if other != "sft" else np.array([0.50, 0.51, 0.52])
        diff = ref - base
        t_by_hand = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))
        assert (pair["wins"], pair["ties"], pair["losses"], pair["n"]) == (w, t_, l_, 3)
        assert pair["mean_diff"] == pytest.approx(diff.mean())
        assert pair["t"] == pytest.approx(t_by_hand)
        assert 0 < pair["p"] < 1 and pair["reference"] == "laser"
    assert s["paired"]["random"]["p"] < s["paired"]["ensemble-score"]["p"]
    assert "laser" not in s["paired"]

    time = s["time"]
    assert "sft" not in time
    assert time["random"]["relative_wall"] == pytest.approx(0.55)
    assert time["random"]["relative_work"] == pytest.approx(45 / 90)  # without the set-up
    assert time["laser"]["loop"] == pytest.approx(40.2) and time["laser"]["per_step"]["generate"] == 2.0

    share = s["in_domain"]
    assert list(share) == ["laser"]
    assert share["laser"]["per_domain"] == pytest.approx({"math": 2.5 / 3, "mcq": 0.5, "yesno": 2.75 / 3})
    laser = share["laser"]
    assert (laser["lock_ins"], laser["task_runs"], laser["locked"]) == (1, 9, [[1, "mcq"]])

    # the CSV: one row per method x seed x domain (and the mean)
    path = write_csv(records, tmp_path / COMPARE_CSV)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3 * 3 * 4
    row = next(r for r in rows if r["method"] == "laser" and r["seed"] == "1" and r["domain"] == "mcq")
    assert float(row["accuracy"]) == pytest.approx(0.56) and row["in_domain_share"] == "0.0"
    assert row["locked_in"] == "True" and row["run_dir"] == "runs/noise/laser/seed1"

    console = Console(record=True, width=200)
    render_compare({"summary": {"noise": s}, "ood_labels": {"noise": "out-of-domain noise"},
                    "shared_runs": [{"method": "laser-paper", "seed": 0, "ood": "noise",
                                     "same_as": "laser"}]},
                   console)
    text = " ".join(console.export_text().split())
    assert "out-of-domain noise: test accuracy % after training (mean±std over 3 seeds)" in text
    assert "paired test of laser vs each method" in text and "3/0/0" in text and "2/0/1" in text
    assert "1/9 (s1:mcq)" in text and "time ×laser" in text
    assert "note: laser-paper has the same settings as laser; it reuses that method's runs" in text

    # one row of panels per ood kind
    both = summarize([*records, *({**r, "ood": "bias"} for r in records)], methods=methods, reference="laser",
                     learners=["laser"])
    assert list(both) == ["noise", "bias"] and both["bias"]["accuracy"] == s["accuracy"]
    png = plot_compare({"summary": both}, tmp_path / COMPARE_PNG)
    assert png.stat().st_size > 10_000


def test_paired_test_edge_cases() -> None:
    assert paired_test({0: 0.5}, {0: 0.4}) == {"n": 1, "mean_diff": pytest.approx(0.1), "wins": 1, "ties": 0,
                                               "losses": 0, "t": None, "p": None}
    same = paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert (same["ties"], same["mean_diff"], same["t"], same["p"]) == (2, 0.0, None, None)
    assert paired_test({0: 0.5, 1: 0.6, 2: 0.7}, {1: 0.5, 2: 0.6})["n"] == 2  # only the seeds both have


def test_split_choice(records: list[dict[str, Any]]) -> None:
    m = metrics(0.7)
    assert record_from_metrics(m, ood="bias", method="x", seed=0, split="dev")["accuracy"]["mean"] == 0.7
    with pytest.raises(LaserError, match="--split 'eval': the runs evaluated on dev, test"):
        record_from_metrics(m, ood="bias", method="x", seed=0, split="eval")
    with pytest.raises(LaserError, match="recorded no accuracy"):
        record_from_metrics({**m, "accuracy": {}}, ood="bias", method="x", seed=0, split=None)


# ------------------------------------------------------------------------------------------ end to end
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
    assert "eval accuracy % after training (mean±std over 2 seeds)" in text
    assert "paired test of laser[alpha=0.5] vs each method" in text and "in-domain share" in text
    assert "4 runs: 4 run now, 0 reused, 0 failed" in text

    data = json.loads((out / COMPARE_JSON).read_text())
    assert [m["label"] for m in data["methods"]] == ["sft", "random", "laser[alpha=0.5]"]
    assert data["reference"] == "laser[alpha=0.5]" and data["oods"] == ["bias"] and data["failures"] == []
    assert data["shared"]["iterations"] == 1 and "policy" not in data["shared"]
    s = data["summary"]["bias"]
    assert s["split"] == "eval" and s["methods"] == ["sft", "random", "laser[alpha=0.5]"]
    assert set(s["paired"]) == {"sft", "random"} and s["paired"]["random"]["n"] == 2
    assert set(s["in_domain"]) == {"laser[alpha=0.5]"}
    assert s["in_domain"]["laser[alpha=0.5]"]["task_runs"] >= 2
    assert s["time"]["laser[alpha=0.5]"]["relative_wall"] == 1.0
    assert len(data["records"]) == 6  # 2 trained methods + sft, 2 seeds
    rows = list(csv.DictReader((out / COMPARE_CSV).open()))
    assert len(rows) == 6 * 4 and {r["domain"] for r in rows} == {*DOMAINS, "mean"}
    assert (out / COMPARE_PNG).stat().st_size > 0

    runs = sorted((out / "runs" / "bias").glob("*/seed*/status.json"))
    assert len(runs) == 4
    for status in runs:
        assert json.loads(status.read_text())["state"] == "complete"
    config = json.loads((runs[0].parent / "config.json").read_text())
    assert config["iterations"] == 1 and config["batch_size"] == 3 and config["ood"] == "bias"
    laser_dir = next((out / "runs" / "bias").glob("laser-alpha-0.5-*"))
    laser_cfg = json.loads((laser_dir / "seed1" / "config.json").read_text())
    assert (laser_cfg["policy"], laser_cfg["alpha"], laser_cfg["seed"]) == ("linucb", 0.5, 1)

    # the same command again reuses every run; a failed run is run again
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0
    assert "4 runs: 0 run now, 4 reused, 0 failed" in " ".join(result.stdout.split())
    RunDir(out / "runs" / "bias" / "random" / "seed1").mark_failed("killed")
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0
    assert "4 runs: 1 run now, 3 reused, 0 failed" in " ".join(result.stdout.split())
    assert json.loads((out / COMPARE_JSON).read_text())["summary"]["bias"]["accuracy"] == s["accuracy"]

    # other shared settings in the same folder: refused, not mixed
    result = runner.invoke(cli(), [*args, "--lr", "1e-3"])
    assert result.exit_code == 2
    assert "was made with other settings (lr: 0.0001 -> 0.001); pass --rerun" in result.stderr

    # laser report COMPARE_DIR redraws the plot and prints the tables
    (out / COMPARE_PNG).unlink()
    console = Console(record=True, width=200)
    assert report_compare(out, console) == [out / COMPARE_PNG] and (out / COMPARE_PNG).is_file()
    assert "paired test of laser[alpha=0.5]" in " ".join(console.export_text().split())


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
    assert data["summary"]["bias"]["methods"] == ["fixed:rm-a"]


@pytest.mark.parametrize("extra, message", [
    (("--seeds", "0"), "error: --seeds must be an integer >= 1, got 0"),
    (("--methods", "laser,greedy"), "error: unknown method 'greedy'; valid: sft, laser, laser-paper"),
    (("--methods", "sft"), "error: sft alone runs nothing"),
    (("--methods", "laser", "--ood", "noise"), "error: --ood sets how the built-in RMs judge other domains"),
    (("--methods", "laser", "--reference", "random"), "error: --reference 'random' is not among the methods"),
    (("--methods", "laser", "--itrations", "2"),
     "error: option --itrations: unknown setting 'itrations'; did you mean --iterations?"),
    (("--methods", "laser", "--seed", "2"), "error: option --seed: 'seed' cannot be set here"),
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
    assert again["summary"]["bias"]["accuracy"] == data["summary"]["bias"]["accuracy"]
