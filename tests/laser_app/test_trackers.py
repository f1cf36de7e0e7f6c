"""Experiment trackers (``--report-to``): TensorBoard files read back, W&B through a stand-in module, the
missing-package and unknown-kind errors, and what one ``events.jsonl`` record logs."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from laser_adapters.pairs import PairResult
from laser_app.errors import LaserError
from laser_app.events import STEP_PARTS, step_event
from laser_app.trackers import (
    REPORT_TO,
    NoTracker,
    TensorBoardTracker,
    WandbTracker,
    check_report_to,
    iteration_values,
    make_tracker,
    step_values,
)
from laser_app.world.tasks import Example

RMS = ["rm-a", "rm-b", "rm-c"]
WANDB_MISSING = ("--report-to wandb needs the wandb package: pip install wandb (or pip install -e '.[trackers]'), "
                 "then wandb login; or use --report-to tensorboard")


def a_step_event(*, trained: bool = True) -> dict[str, Any]:
    """One step's record as the loop writes it: two math prompts, RM rm-b chosen for both."""
    batch = [Example("Q: 1+1? Answer:", "2", "math"), Example("Q: 2+2? Answer:", "4", "math")]
    group: dict[str, Any] = {"label": "rm-b", "rms": ["rm-b"], "prompts": 2, "pairs": 3}
    if trained:
        group.update(loss=0.6, dpo_loss=0.5, nll_loss=0.1, chosen_reward=0.3, rejected_reward=0.1, margin=0.2,
                     skipped=False, feedback={"raw_reward": 0.8, "normalized_reward": 0.25, "arm_scores": None})
    else:
        group.update(pairs=0, skipped=True)
    secs = {part: 0.0 for part in STEP_PARTS} | {"generate": 1.25, "train": 0.5}
    return step_event(0, 1, 4, batch, [("rm-b",), ("rm-b",)], [PairResult(dropped_ties=1), PairResult()],
                      [group], secs, [[True, False], [True, True]], None)


def test_step_values_picks_numbers_rm_and_seconds_from_a_real_event() -> None:
    values = step_values(a_step_event())
    assert values == {
        "loss": pytest.approx(0.6), "dpo_loss": pytest.approx(0.5), "nll_loss": pytest.approx(0.1),
        "margin": pytest.approx(0.2), "raw_reward": 0.8, "normalized_reward": 0.25, "sample_accuracy": 0.75,
        "pairs_kept": 3, "rm": "rm-b",
        **{f"seconds/{part}": 0.0 for part in STEP_PARTS}, "seconds/generate": 1.25, "seconds/train": 0.5,
    }


def test_step_values_of_a_skipped_step_keeps_none() -> None:
    values = step_values(a_step_event(trained=False))
    assert values["loss"] is None and values["raw_reward"] is None and values["pairs_kept"] == 0


def test_iteration_values_flattens_split_and_domain() -> None:
    acc = {"dev": {"math": 0.4, "mean": 0.45}, "test": {"math": 0.5, "yesno": 0.7, "mean": 0.6}}
    assert iteration_values(acc) == {"accuracy/dev/math": 0.4, "accuracy/dev/mean": 0.45,
                                     "accuracy/test/math": 0.5, "accuracy/test/yesno": 0.7,
                                     "accuracy/test/mean": 0.6}


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, pytest.approx(e.value)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_writes_the_exact_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    with make_tracker("tensorboard", tmp_path, run_name="r", config={"lr": 1e-5, "rms": RMS},
                      rm_names=RMS) as tracker:
        assert isinstance(tracker, TensorBoardTracker)
        tracker.log_step(0, {"loss": 0.7, "margin": None, "rm": "rm-a", "seconds/generate": 1.5})
        tracker.log_step(1, {"loss": None, "margin": float("nan"), "rm": "rm-b+rm-c", "pairs_kept": 0})
        tracker.log_step(2, {"loss": 0.5, "rm": "mixed"})
        tracker.log_iteration(0, iteration_values({"test": {"math": 0.25, "mean": 0.25}}))
        tracker.log_iteration(1, {"accuracy/test/math": 0.5, "accuracy/test/mean": None})
    assert [p.name for p in tmp_path.iterdir()] == ["tensorboard"]
    assert read_scalars(tmp_path / "tensorboard") == {
        "step/loss": [(0, 0.7), (2, 0.5)],
        "step/seconds/generate": [(0, 1.5)],
        "step/pairs_kept": [(1, 0.0)],
        "step/chosen/rm-a": [(0, 1.0), (1, 0.0)],
        "step/chosen/rm-b": [(0, 0.0), (1, 1.0)],
        "step/chosen/rm-c": [(0, 0.0), (1, 1.0)],
        "accuracy/test/math": [(0, 0.25), (1, 0.5)],
        "accuracy/test/mean": [(0, 0.25)],
    }


def test_none_writes_nothing(tmp_path: Path) -> None:
    with make_tracker("none", tmp_path, run_name="r", config={}, rm_names=RMS) as tracker:
        assert isinstance(tracker, NoTracker)
        tracker.log_step(0, step_values(a_step_event()))
        tracker.log_iteration(0, {"accuracy/test/mean": 0.5})
    assert list(tmp_path.iterdir()) == []


def test_missing_wandb_fails_early_with_the_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError, installed or not
    with pytest.raises(LaserError) as err:
        check_report_to("wandb")
    assert str(err.value) == WANDB_MISSING
    with pytest.raises(LaserError, match="needs the wandb package"):
        make_tracker("wandb", tmp_path, run_name="r", config={}, rm_names=RMS)
    assert list(tmp_path.iterdir()) == []


def test_missing_tensorboard_fails_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(LaserError, match=r"^--report-to tensorboard needs the tensorboard package: pip install"):
        check_report_to("tensorboard")


@pytest.mark.parametrize("kind", ["mlflow", "", "TensorBoard"])
def test_unknown_kind_lists_the_valid_ones(kind: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"report_to must be one of none, tensorboard, wandb, got '{kind}'"):
        make_tracker(kind, tmp_path, run_name="r", config={}, rm_names=RMS)
    assert REPORT_TO == ("none", "tensorboard", "wandb")


class FakeWandb(types.ModuleType):
    """Stands in for the wandb package: records ``init``, ``log`` and ``finish``."""

    def __init__(self, fail: Exception | None = None) -> None:
        super().__init__("wandb")
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail

    def init(self, **kwargs: Any) -> object:
        if self.fail is not None:
            raise self.fail
        self.calls.append(("init", kwargs))
        return object()

    def log(self, row: dict[str, Any]) -> None:
        self.calls.append(("log", row))

    def finish(self) -> None:
        self.calls.append(("finish", None))


def test_wandb_logs_through_init_log_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    tracker = make_tracker("wandb", tmp_path, run_name="linucb", config={"lr": 1e-5}, rm_names=RMS[:2])
    assert isinstance(tracker, WandbTracker)
    with tracker:
        tracker.log_step(3, {"loss": 0.5, "margin": None, "rm": "rm-b"})
        tracker.log_iteration(1, {"accuracy/test/mean": 0.5, "accuracy/test/math": float("nan")})
    tracker.close()  # a second close does not finish twice
    assert fake.calls == [
        ("init", {"project": "my-project", "name": "linucb", "config": {"lr": 1e-5}, "dir": str(tmp_path)}),
        ("log", {"step": 3, "step/loss": 0.5, "step/chosen/rm-a": 0.0, "step/chosen/rm-b": 1.0, "step/rm": "rm-b"}),
        ("log", {"iteration": 1, "accuracy/test/mean": 0.5}),
        ("finish", None),
    ]


def test_wandb_project_defaults_to_laser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    make_tracker("wandb", tmp_path, run_name="r", config={}, rm_names=RMS).close()
    assert fake.calls[0][1]["project"] == "laser"


def test_wandb_init_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", FakeWandb(fail=RuntimeError("api_key not configured (no-tty)\nmore")))
    with pytest.raises(LaserError) as err:
        WandbTracker("p", "r", {})
    assert str(err.value) == ("wandb could not start a run (api_key not configured (no-tty)); run wandb login or "
                              "set WANDB_MODE=offline, or use --report-to tensorboard")


def test_laser_run_reports_to_tensorboard(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from laser_app.commands import app
    from tests.laser_app.tiny_setup import build_tiny_setup, run_args

    tiny = build_tiny_setup(tmp_path / "tiny")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, run_args(tiny, out, "--policy", "linucb", "--report-to", "tensorboard"))
    assert result.exit_code == 0, (result.output, result.exception)
    scalars = read_scalars(out / "tensorboard")

    def values(tag: str) -> list[float]:
        return [float(v.expected) for _, v in scalars[tag]]

    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    trained = [e for e in events if not e["skipped"]]
    assert values("step/loss") == pytest.approx([e["loss"] for e in trained], rel=1e-5)
    assert {rm: sum(values(f"step/chosen/{rm}")) for rm in RMS} == {
        rm: sum(e["rm"] == rm for e in events) for rm in RMS}
    accuracy = json.loads((out / "metrics.json").read_text())["accuracy"]["eval"]
    assert values("accuracy/eval/mean") == pytest.approx([a["mean"] for a in accuracy], rel=1e-5)
