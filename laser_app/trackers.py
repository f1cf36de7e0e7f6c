"""Experiment trackers for ``laser run --report-to none|tensorboard|wandb`` (TRL's ``report_to``).

A tracker gets one call per training step (:func:`step_values` of the step's ``events.jsonl`` record)
and one per evaluation (:func:`iteration_values` of the accuracy after it), and is closed at the end.
``events.jsonl`` and ``metrics.json`` stay the record of the run; a tracker only mirrors them live.

>>> with make_tracker("none", Path("unused"), run_name="r", config={}, rm_names=["a"]) as tracker:
...     tracker.log_step(0, {"loss": 0.7, "rm": "a"})
>>> type(tracker).__name__
'NoTracker'
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from laser_app.errors import LaserError

#: The values ``--report-to`` accepts.
REPORT_TO = ("none", "tensorboard", "wandb")
#: The numbers of an ``events.jsonl`` record that are logged per step (see :func:`step_values`).
STEP_KEYS = ("loss", "dpo_loss", "nll_loss", "margin", "raw_reward", "normalized_reward", "sample_accuracy",
             "pairs_kept")

_MISSING = {
    "tensorboard": "--report-to tensorboard needs the tensorboard package: pip install tensorboard "
                   "(or pip install -e '.[llm]'); or use --report-to none",
    "wandb": "--report-to wandb needs the wandb package: pip install wandb (or pip install -e '.[trackers]'), "
             "then wandb login; or use --report-to tensorboard",
}


def step_values(event: Mapping[str, Any]) -> dict[str, float | str | None]:
    """What to log of one step's ``events.jsonl`` record (``laser_app.events.step_event``).

    >>> step_values({"loss": 0.5, "margin": None, "rm": "math_rm", "seconds": {"generate": 1.5}, "task": "x"})
    {'loss': 0.5, 'margin': None, 'rm': 'math_rm', 'seconds/generate': 1.5}
    """
    out: dict[str, float | str | None] = {k: event[k] for k in STEP_KEYS if k in event}
    if "rm" in event:
        out["rm"] = str(event["rm"])
    out.update({f"seconds/{part}": secs for part, secs in (event.get("seconds") or {}).items()})
    return out


def iteration_values(accuracy: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Accuracy per split and domain (``laser_app.evaluation.accuracy_of``), flattened into tags.

    >>> iteration_values({"dev": {"math": 0.4, "mean": 0.45}})
    {'accuracy/dev/math': 0.4, 'accuracy/dev/mean': 0.45}
    """
    return {f"accuracy/{split}/{domain}": acc for split, by_domain in accuracy.items()
            for domain, acc in by_domain.items()}


def scalars(values: Mapping[str, float | str | None], rm_names: Sequence[str], prefix: str = "") -> dict[str, float]:
    """The plottable numbers of ``values``: None and NaN dropped; the chosen RM (``rm``) as one 0/1 indicator
    per RM name. An ensemble label ``a+b`` marks both; ``mixed`` (several groups in one step) marks none.

    >>> scalars({"loss": 0.5, "margin": None, "nll_loss": float("nan"), "rm": "b"}, ["a", "b"], "step/")
    {'step/loss': 0.5, 'step/chosen/a': 0.0, 'step/chosen/b': 1.0}
    """
    out: dict[str, float] = {}
    for key, value in values.items():
        if key == "rm" and isinstance(value, str):
            if value != "mixed":
                chosen = set(value.split("+"))
                out.update({f"{prefix}chosen/{rm}": float(rm in chosen) for rm in rm_names})
        elif isinstance(value, int | float) and not math.isnan(value):
            out[prefix + key] = float(value)
    return out


class Tracker:
    """Where a run's numbers go as it trains; a context manager that closes itself. This base logs nothing."""

    def log_step(self, step: int, values: Mapping[str, float | str | None]) -> None:
        """Log one training step (``step`` counts over the whole run), e.g. :func:`step_values` of its event."""

    def log_iteration(self, iteration: int, values: Mapping[str, float | None]) -> None:
        """Log one evaluation (``iteration`` 0 is before training), e.g. :func:`iteration_values`."""

    def close(self) -> None:
        """Flush and release what the tracker holds; calling it twice is harmless."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class NoTracker(Tracker):
    """``--report-to none``: logs nothing and writes nothing."""


class TensorBoardTracker(Tracker):
    """Event files under ``log_dir`` for ``tensorboard --logdir``: ``step/<name>``, ``step/chosen/<rm>``,
    ``accuracy/<split>/<domain>``; the run's config as text, when given."""

    def __init__(self, log_dir: Path, *, rm_names: Sequence[str] = (), config: Mapping[str, Any] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.rm_names = tuple(rm_names)
        self._writer: Any = SummaryWriter(log_dir=str(self.log_dir), flush_secs=30)
        if config is not None:  # indented as a markdown code block, so TensorBoard keeps the layout
            text = json.dumps(dict(config), indent=2, default=str)
            self._writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)

    def log_step(self, step: int, values: Mapping[str, float | str | None]) -> None:
        for tag, value in scalars(values, self.rm_names, "step/").items():
            self._writer.add_scalar(tag, value, step)

    def log_iteration(self, iteration: int, values: Mapping[str, float | None]) -> None:
        for tag, value in scalars(values, ()).items():
            self._writer.add_scalar(tag, value, iteration)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbTracker(Tracker):
    """A Weights & Biases run in ``project``. Each row carries ``step`` or ``iteration``: pick it as the
    x-axis in the W&B UI (W&B's own step counts log calls)."""

    def __init__(self, project: str, run_name: str, config: Mapping[str, Any], *, rm_names: Sequence[str] = (),
                 dir: Path | None = None):
        self._wandb = _require("wandb")
        self.rm_names = tuple(rm_names)
        try:
            self._run: Any = self._wandb.init(project=project, name=run_name, config=dict(config),
                                              dir=None if dir is None else str(dir))
        except Exception as err:  # not logged in, no network, ...: the user's environment, not a bug
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise LaserError(f"wandb could not start a run ({first}); run wandb login or set WANDB_MODE=offline, "
                             "or use --report-to tensorboard") from err
        self._open = True

    def log_step(self, step: int, values: Mapping[str, float | str | None]) -> None:
        row: dict[str, Any] = {"step": step, **scalars(values, self.rm_names, "step/")}
        if isinstance(values.get("rm"), str):
            row["step/rm"] = values["rm"]
        self._wandb.log(row)

    def log_iteration(self, iteration: int, values: Mapping[str, float | None]) -> None:
        self._wandb.log({"iteration": iteration, **scalars(values, ())})

    def close(self) -> None:
        if self._open:
            self._open = False
            self._wandb.finish()


def _require(package: str) -> ModuleType:
    """Import what ``--report-to <package>`` needs, or fail with the install line."""
    module = "torch.utils.tensorboard" if package == "tensorboard" else package
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise LaserError(_MISSING[package]) from err


def check_report_to(kind: str) -> None:
    """Fail now, before any model loads and with nothing written, if ``kind`` is unknown or its package is missing.

    >>> check_report_to("none")
    >>> check_report_to("mlflow")
    Traceback (most recent call last):
    ...
    ValueError: report_to must be one of none, tensorboard, wandb, got 'mlflow'
    """
    if kind not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {kind!r}")
    if kind != "none":
        _require(kind)


def make_tracker(kind: str, run_dir: Path, *, run_name: str, config: Mapping[str, Any],
                 rm_names: Sequence[str]) -> Tracker:
    """The tracker ``--report-to kind`` asks for: TensorBoard files go to ``run_dir / "tensorboard"``; a W&B run
    goes to project ``$WANDB_PROJECT`` (default ``laser``), its local files under ``run_dir``."""
    check_report_to(kind)
    if kind == "tensorboard":
        return TensorBoardTracker(Path(run_dir) / "tensorboard", rm_names=rm_names, config=config)
    if kind == "wandb":
        return WandbTracker(os.environ.get("WANDB_PROJECT") or "laser", run_name, config, rm_names=rm_names,
                            dir=Path(run_dir))
    return NoTracker()
