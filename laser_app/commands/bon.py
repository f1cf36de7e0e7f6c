"""``laser bon``: best-of-n answering with the RM a selector picks per prompt (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from laser_app.commands._errors import user_errors
from laser_app.commands.options import config_options, given_settings
from laser_app.commands.run import RUN, parse_set
from laser_app.config import resolve_config

#: The run settings that mean something without training (the rest are accepted through --config/--set).
BON_FIELDS = ("policy", "alpha", "ridge", "discount", "epsilon", "epsilon_decay", "mixing", "ucb_c",
              "context", "context_dim", "mab_reward", "normalizer", "scope", "rms", "rm_registry", "ood",
              "rm_for_task", "model", "data", "world_seed", "world_scale", "cache_dir", "device", "threads",
              "batch_size", "n_responses", "temperature", "top_p", "max_new_tokens", "eval_size", "seed", "out",
              "overwrite")
#: Where best-of-n reads a setting differently from training.
BON_HELP = {
    "mab_reward": "Bandit reward: nll (the negative NLL of the chosen answer under the policy; no labels), "
                  "gold (whether the chosen answer was right, learned after answering: labels as online "
                  "feedback, so every prompt's answer is read) or auto (nll). (default: auto)",
    "data": "Prompts to answer as JSONL with `prompt`, `answer` (for accuracy and F1) and optional `task` "
            "(default: the built-in test split).",
    "batch_size": "Prompts per generate call; the selector still decides per prompt. (default: 8)",
}


@user_errors
@config_options(BON_FIELDS, help=BON_HELP)
def bon(
    ctx: typer.Context,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.",
                                           rich_help_panel=RUN)] = True,
    config: Annotated[Path | None, typer.Option(help=(
        "TOML, YAML or JSON file with any laser run setting (training ones are ignored); flags win."),
        rich_help_panel=RUN, show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Set any config field: --set ridge=0.5.",
                                                   rich_help_panel=RUN, show_default=False)] = None,
    longbench: Annotated[Path | None, typer.Option(help=(
        "LongBench JSONL (input, context, answers, dataset, ...) to answer: prompts built per dataset, cut in "
        "the middle to fit the policy's window, scored by LongBench's F1 and exact match per dataset."),
        rich_help_panel=RUN, show_default=False)] = None,
    datasets: Annotated[str | None, typer.Option(help=(
        "With --longbench: only these datasets, comma-separated (e.g. hotpotqa,trec)."),
        rich_help_panel=RUN, show_default=False)] = None,
    **settings: Any,
) -> None:
    """Answer prompts best-of-n: per prompt the selector picks an RM and the RM picks the best sample."""
    cfg = resolve_config(config, {**parse_set(set_), **given_settings(settings)})

    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app.bon import run_bon
    from laser_app.report import render_bon

    hf_logging.disable_progress_bar()
    names = None if datasets is None else [d.strip() for d in datasets.split(",") if d.strip()]
    summary = run_bon(cfg, progress=progress, console=Console(stderr=True), longbench=longbench, datasets=names)
    render_bon(summary.metrics, Console())
    typer.echo(f"run folder: {summary.run_dir}")
