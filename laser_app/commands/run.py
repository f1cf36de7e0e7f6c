"""``laser run``: parse flags, merge them over ``--config``, validate, and call ``run_laser``; or, with
``--resume DIR``, continue a stopped run from its last checkpoint (``resume_laser``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from laser_app.commands._errors import user_errors
from laser_app.commands.options import config_options, given_settings
from laser_app.config import flag_name, parse_value, resolve_config
from laser_app.errors import ConfigError, LaserError

if TYPE_CHECKING:
    from rich.console import Console

    from laser_app.loop import RunSummary

RUN = "Run"


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs as config values (values read as YAML scalars: 3, 0.5, true, [a, b]).

    >>> parse_set(["lora-r=16", "quantile_low=0.1", "rm_for_task=math=rm-a"])
    {'lora_r': 16, 'quantile_low': 0.1, 'rm_for_task': 'math=rm-a'}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = parse_value(raw)
    return out


def check_resume_alone(config: Path | None, set_: list[str] | None, settings: dict[str, Any]) -> None:
    """Refuse settings given with ``--resume``: a resumed run keeps the settings it started with, so that
    it ends as the uninterrupted run would have.

    >>> check_resume_alone(None, None, {})
    >>> check_resume_alone(None, ["lr=1e-3"], {"seed": "1"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.errors.LaserError: --resume continues a run with the settings saved in its folder; drop --set, --seed ...
    """
    given = ([] if config is None else ["--config"]) + ([] if not set_ else ["--set"]) + [
        flag_name(name) for name in settings]
    if given:
        raise LaserError(f"--resume continues a run with the settings saved in its folder; drop {', '.join(given)} "
                         "(start a new run to change settings)")


@user_errors
@config_options()
def run(
    ctx: typer.Context,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.",
                                           rich_help_panel=RUN)] = True,
    config: Annotated[Path | None, typer.Option(help=(
        "TOML, YAML or JSON file with any of the settings below (keys as the flags without dashes, e.g. "
        "n_responses); flags you give win."), rich_help_panel=RUN, show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=(
        "Set any config field: --set lora_r=16 --set quantile_low=0.1."),
        rich_help_panel=RUN, show_default=False)] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help=(
        "Continue the stopped run in this folder from its last checkpoint, with the settings saved there "
        "(no other settings may be given)."), rich_help_panel=RUN, show_default=False,
        metavar="RUN_DIR")] = None,
    **settings: Any,
) -> None:
    """Run the LASeR loop (or a baseline) and write a run folder; see --help for every setting."""
    if resume is not None:
        check_resume_alone(config, set_, given_settings(settings))
        folder = resume
        _execute(lambda loop, console: loop.resume_laser(folder, progress=progress, console=console))
    else:
        cfg = resolve_config(config, {**parse_set(set_), **given_settings(settings)})
        _execute(lambda loop, console: loop.run_laser(cfg, progress=progress, console=console))


def _execute(start: Callable[[ModuleType, Console], RunSummary]) -> None:
    """Load the loop (torch, transformers), run ``start(loop module, stderr console)`` and print its summary."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app import loop

    hf_logging.disable_progress_bar()  # per-model loading bars would break up the run's own bar
    from laser_app.report import render_summary

    summary = start(loop, Console(stderr=True))
    render_summary(summary.metrics, Console())
    typer.echo(f"run folder: {summary.run_dir}")
