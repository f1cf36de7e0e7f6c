"""The dev-label methods end to end: dev-pick's counts and the dev-gold reward's probes, on the tiny setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from laser_adapters.reward_models.function import FunctionRM
from laser_adapters.reward_models.registry import RMRegistry
from laser_adapters.testing import tiny_causal_lm
from laser_app.config import RunConfig
from laser_app.data import ExampleLike
from laser_app.dev_labels import DevProbes, dev_rows, labelled_dev_rows
from laser_app.errors import LaserError
from laser_app.policy import load_policy
from laser_app.world.tasks import Example
from tests.laser_app.tiny_setup import RMS, build_tiny_setup, run_args

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_dev_gold_run_probes_dev_prompts_and_records_the_dev_budget(tiny: dict[str, Path], tmp_path: Path) -> None:
    from laser_app.commands import app

    out = tmp_path / "dev-gold"
    result = runner.invoke(app, run_args(tiny, out, "--policy", "linucb", "--mab-reward", "dev-gold",
                                         "--dev-data", str(tiny["train"]), "--dev-labels", "2",
                                         "--dev-probes", "1"))
    assert result.exit_code == 0, (result.output, result.exception)
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["dev_probes"] == {"per_task": {"math": 2, "yesno": 2, "mcq": 2}, "probes_per_step": 1}
    assert "dev_labels" not in resolved  # no counts before training: only dev-pick and prior-router read them
    labels = json.loads((out / "metrics.json").read_text())["labels"]
    assert labels == {"budget": "dev-2", "labelled_prompts": 6, "source": "dev-2: 2 labelled dev prompts per task"}
    feedback = [g["feedback"] for e in _events(out) for g in e["groups"] if not g["skipped"]]
    assert feedback and all(f["reward_fn"] == "dev-gold" for f in feedback)
    # one probe prompt per step: the raw reward is whether the chosen RM ranked a right sample first
    assert all(f["raw_reward"] in (0.0, 1.0) for f in feedback)


def test_dev_pick_counts_each_rms_top_pick_on_the_dev_prompts(tiny: dict[str, Path], tmp_path: Path) -> None:
    from laser_app.commands import app

    out = tmp_path / "dev-pick"
    result = runner.invoke(app, run_args(tiny, out, "--policy", "dev-pick", "--dev-data", str(tiny["train"]),
                                         "--dev-labels", "2"))
    assert result.exit_code == 0, (result.output, result.exception)
    dev = json.loads((out / "resolved.json").read_text())["dev_labels"]
    assert dev["per_task"] == 2 and set(dev["right_wrong"]) == {"math", "yesno", "mcq"}
    for by_rm in dev["right_wrong"].values():
        assert set(by_rm) == set(RMS) and all(sum(v) == 2 for v in by_rm.values())
    # each task's batches go to the RM with the most right picks (ties: the earlier RM)
    best = {t: max(RMS, key=lambda rm, by=by: (by[rm][0], -RMS.index(rm))) for t, by in dev["right_wrong"].items()}
    for event in _events(out):
        assert event["rm"] == best[event["task"]]


def test_a_dev_reader_without_dev_data_gets_one_line(tiny: dict[str, Path], tmp_path: Path) -> None:
    from laser_app.commands import app

    for flags, reader in ((("--policy", "linucb", "--mab-reward", "dev-gold"), "--mab-reward dev-gold"),
                          (("--policy", "dev-pick"), "--policy dev-pick")):
        result = runner.invoke(app, run_args(tiny, tmp_path / reader.replace(" ", ""), *flags))
        assert result.exit_code == 2
        assert f"{reader} reads labelled dev prompts: pass --dev-data FILE" in result.stderr
        assert not (tmp_path / reader.replace(" ", "")).exists()
    config = RunConfig(policy="linucb", mab_reward="dev-gold", data=tiny["train"])
    with pytest.raises(LaserError, match="--mab-reward dev-gold reads labelled dev prompts"):
        dev_rows(config, world=None)


def _rows(n_per_task: int, answered: bool = True) -> list[ExampleLike]:
    return [Example(f"Q{t}{i}: ", "1" if answered else None, t)  # type: ignore[arg-type]
            for t in ("math", "yesno") for i in range(n_per_task)]


def test_labelled_dev_rows_take_the_first_per_task_and_refuse_short_or_unlabelled_sets() -> None:
    rows = _rows(3)
    picked = labelled_dev_rows(rows, 2)
    assert [ex.prompt for ex in picked] == ["Qmath0: ", "Qmath1: ", "Qyesno0: ", "Qyesno1: "]
    with pytest.raises(LaserError, match=r"--dev-labels 4 asks for more dev prompts than some tasks have"):
        labelled_dev_rows(rows, 4)
    with pytest.raises(LaserError, match="need an answer on every dev row"):
        labelled_dev_rows(_rows(2, answered=False), 2)


def test_dev_probes_score_the_chosen_rm_top_pick_per_task_and_rm(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import laser_app.dev_labels as dev_labels

    model, tokenizer = load_policy(str(tiny_causal_lm(tmp_path / "policy", hidden=32, layers=1, seed=0)),
                                   device="cpu", lora=None, seed=0)
    registry = RMRegistry()
    registry.register("long", FunctionRM(lambda p, r: float(len(r)), name="long", batched=False))
    registry.register("short", FunctionRM(lambda p, r: -float(len(r)), name="short", batched=False))
    probes = DevProbes.build(_rows(4), per_task=3, per_step=2)
    assert probes.as_json() == {"per_task": {"math": 3, "yesno": 3}, "probes_per_step": 2}
    drawn: list[tuple[list[str], list[list[str]]]] = []  # per probe draw: its prompts and their samples
    real = dev_labels.sample_responses

    def recording(model: object, tokenizer: object, prompts: list[str], **kw: object) -> list[list[str]]:
        out = real(model, tokenizer, prompts, **kw)  # type: ignore[arg-type]
        drawn.append((list(prompts), out))
        return out

    monkeypatch.setattr(dev_labels, "sample_responses", recording)
    tasks = ["math", "math", "yesno", "yesno"]
    choices = [("long",), ("long",), ("short",), ("long", "short")]  # the last: an ensemble, no single RM

    def even(task: str, response: str, answer: str) -> bool:  # "right": an even number of characters
        return len(response) % 2 == 0

    got = probes.correctness(model, tokenizer, registry, tasks, choices, seed=0, n_responses=4, temperature=1.0,
                             top_p=1.0, max_new_tokens=6, stop=None, check=even)
    assert set(got) == {0, 1, 2} and got[0] == got[1]  # one draw per (task, RM); the ensemble gets none
    assert len(drawn) == 2 and [len(p) for p, _ in drawn] == [2, 2]
    assert all(p.startswith("Qmath") for p in drawn[0][0]) and all(p.startswith("Qyesno") for p in drawn[1][0])
    for (_, samples), position, pick in ((drawn[0], 0, max), (drawn[1], 2, min)):
        top = [rs[[len(r) for r in rs].index(pick(len(r) for r in rs))] for rs in samples]
        assert got[position] == pytest.approx(sum(len(r) % 2 == 0 for r in top) / len(top))
    # the same seed draws the same probes and samples
    again = probes.correctness(model, tokenizer, registry, tasks, choices, seed=0, n_responses=4, temperature=1.0,
                               top_p=1.0, max_new_tokens=6, stop=None, check=even)
    assert again == got and drawn[2] == drawn[0]
