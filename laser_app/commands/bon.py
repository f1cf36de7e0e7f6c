"""``laser bon``: best-of-n answering with the RM a selector picks per prompt (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from laser_app.commands._errors import user_errors
from laser_app.commands.run import MODELS, RUN, SELECT, TRAIN, _opt, parse_set
from laser_app.config import RunConfig, resolve_config


@user_errors
def bon(
    ctx: typer.Context,
    policy: Annotated[str | None, _opt("policy", SELECT)] = None,
    alpha: Annotated[float | None, _opt("alpha", SELECT)] = None,
    context: Annotated[str | None, _opt("context", SELECT)] = None,
    mab_reward: Annotated[str | None, typer.Option(
        help="Bandit reward: nll (the negative NLL of the chosen answer under the policy; no labels), "
             "heldout (whether the chosen answer was right, learned after answering: labels as online "
             "feedback) or auto (heldout when every prompt has an answer, else nll). (default: auto)",
        rich_help_panel=SELECT, show_default=False)] = None,
    rms: Annotated[str | None, _opt("rms", MODELS)] = None,
    rm_registry: Annotated[Path | None, _opt("rm_registry", MODELS)] = None,
    ood: Annotated[str | None, _opt("ood", MODELS)] = None,
    model: Annotated[str | None, _opt("model", MODELS)] = None,
    data: Annotated[Path | None, typer.Option(
        help="Prompts to answer as JSONL with `prompt`, `answer` (for accuracy and F1) and optional `task` "
             "(default: the built-in test split).", rich_help_panel=MODELS, show_default=False)] = None,
    cache_dir: Annotated[Path | None, _opt("cache_dir", MODELS)] = None,
    device: Annotated[str | None, _opt("device", MODELS)] = None,
    threads: Annotated[int | None, _opt("threads", MODELS)] = None,
    n_responses: Annotated[int | None, _opt("n_responses", TRAIN)] = None,
    temperature: Annotated[float | None, _opt("temperature", TRAIN)] = None,
    max_new_tokens: Annotated[int | None, _opt("max_new_tokens", TRAIN)] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Prompts per generate call; the selector still decides per prompt. (default: 8)",
        rich_help_panel=TRAIN, show_default=False)] = None,
    seed: Annotated[int | None, _opt("seed", RUN)] = None,
    out: Annotated[Path | None, _opt("out", RUN)] = None,
    overwrite: Annotated[bool | None, _opt("overwrite", RUN, "--overwrite/--no-overwrite")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.",
                                           rich_help_panel=RUN)] = True,
    config: Annotated[Path | None, typer.Option(help=(
        "TOML, YAML or JSON file with any laser run setting (training ones are ignored); flags win."),
        rich_help_panel=RUN, show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Set any config field: --set ridge=0.5.",
                                                   rich_help_panel=RUN, show_default=False)] = None,
) -> None:
    """Answer prompts best-of-n: per prompt the selector picks an RM and the RM picks the best sample."""
    flags: dict[str, Any] = {k: v for k, v in ctx.params.items() if k in RunConfig.model_fields and v is not None}
    cfg = resolve_config(config, {**parse_set(set_), **flags})

    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app.bon import render_bon, run_bon

    hf_logging.disable_progress_bar()
    summary = run_bon(cfg, progress=progress, console=Console(stderr=True))
    render_bon(summary.metrics, Console())
    typer.echo(f"run folder: {summary.run_dir}")
