"""``laser run``: parse flags, merge them over ``--config``, validate, and call ``run_laser``; or, with
``--resume DIR``, continue a stopped run from its last checkpoint (``resume_laser``)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from laser_app.commands._errors import user_errors
from laser_app.commands.options import config_options, given_settings
from laser_app.config import RunConfig, flag_name, format_validation_error, parse_value, resolve_config
from laser_app.errors import ConfigError, LaserError

if TYPE_CHECKING:
    from rich.console import Console

    from laser_app.loop import RunSummary

RUN = "Run"


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs as config values (values read as YAML scalars: 3, 0.5, true, [a, b]); an
    unknown key is a :class:`ConfigError` naming the item as given.

    >>> parse_set(["lora-r=16", "quantile_low=0.1", "rm_for_task=math=rm-a"])
    {'lora_r': 16, 'quantile_low': 0.1, 'rm_for_task': 'math=rm-a'}
    >>> parse_set(["itrations=2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.errors.ConfigError: --set itrations=2: unknown setting 'itrations'; did you mean iterations, ...?...
    """
    return {key: value for key, (_, value) in set_items(items).items()}


def set_items(items: list[str] | None) -> dict[str, tuple[str, Any]]:
    """``--set`` pairs by config field: the item as the user wrote it and its value (see :func:`parse_set`)."""
    out: dict[str, tuple[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        name = key.strip().replace("-", "_")
        if name not in RunConfig.model_fields:
            close = difflib.get_close_matches(name, list(RunConfig.model_fields), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(f"--set {item}: unknown setting {key.strip()!r}; {hint}(the settings are laser run's "
                              "flags without the dashes: see laser run --help)")
        out[name] = (item, parse_value(raw))
    return out


def resolve_run_config(config: Path | None, set_: list[str] | None, settings: dict[str, Any]) -> RunConfig:
    """The run's configuration: ``--config``, then ``--set``, then the flags given (flags win). A bad value
    from ``--set`` is one line naming the item as given (``--set lora_r=abc: ...``)."""
    from_set = set_items(set_)
    flags = given_settings(settings)
    try:
        return resolve_config(config, {**{k: v for k, (_, v) in from_set.items()}, **flags})
    except ValidationError as err:
        lines = []
        for e, line in zip(err.errors(include_url=False), format_validation_error(err), strict=True):
            field = str(e["loc"][0]) if e["loc"] else ""
            if field in from_set and field not in flags:
                at = ".".join(str(p) for p in e["loc"][1:])
                msg = str(e["msg"]).removeprefix("Value error, ")
                lines.append(f"--set {from_set[field][0]}: {msg}" + (f" (at {at})" if at else ""))
            else:
                lines.append("invalid configuration: " + line)
        raise ConfigError("\n".join(lines)) from None


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
        cfg = resolve_run_config(config, set_, settings)
        _execute(lambda loop, console: loop.run_laser(cfg, progress=progress, console=console))


def _execute(start: Callable[[ModuleType, Console], RunSummary]) -> None:
    """Load the loop (torch, transformers), run ``start(loop module, stderr console)`` and print its summary."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app import distributed, loop

    hf_logging.disable_progress_bar()  # per-model loading bars would break up the run's own bar
    from laser_app.report import render_summary

    try:
        summary = start(loop, Console(stderr=True))
    finally:
        distributed.close()  # under accelerate launch, also after an error: exiting in the group can abort
    if distributed.is_main():  # under accelerate launch, process 0 prints the summary
        render_summary(summary.metrics, Console())
        typer.echo(f"run folder: {summary.run_dir}")
