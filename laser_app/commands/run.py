"""``laser run``: parse flags, merge them over ``--config``, validate, and call ``run_laser``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from laser_app.commands._errors import user_errors
from laser_app.commands.options import config_options, given_settings
from laser_app.config import parse_value, resolve_config
from laser_app.errors import ConfigError

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
    **settings: Any,
) -> None:
    """Run the LASeR loop (or a baseline) and write a run folder; see --help for every setting."""
    cfg = resolve_config(config, {**parse_set(set_), **given_settings(settings)})

    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app.loop import run_laser

    hf_logging.disable_progress_bar()  # per-model loading bars would break up the run's own bar
    from laser_app.report import render_summary

    summary = run_laser(cfg, progress=progress, console=Console(stderr=True))
    render_summary(summary.metrics, Console())
    typer.echo(f"run folder: {summary.run_dir}")
