"""``laser run``: parse flags, merge them over ``--config``, validate, and call ``run_laser``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from laser_app.commands._errors import user_errors
from laser_app.config import RunConfig, field_help, resolve_config
from laser_app.errors import ConfigError

SELECT = "RM selection"
MODELS = "Policy, data and reward models"
TRAIN = "Training"
RUN = "Run"


def _opt(field: str, panel: str, *names: str) -> Any:
    """A flag for config field ``field``: help and default shown from the config model (the one source)."""
    return typer.Option(*names, help=field_help(field), rich_help_panel=panel, show_default=False)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs as config values (values read as YAML scalars: 3, 0.5, true, [a, b]).

    >>> parse_set(["lora-r=16", "quantile_low=0.1", "rm_for_task=math=rm-a"])
    {'lora_r': 16, 'quantile_low': 0.1, 'rm_for_task': 'math=rm-a'}
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out


@user_errors
def run(
    ctx: typer.Context,
    policy: Annotated[str | None, _opt("policy", SELECT)] = None,
    alpha: Annotated[float | None, _opt("alpha", SELECT)] = None,
    epsilon: Annotated[float | None, _opt("epsilon", SELECT)] = None,
    exp3_gamma: Annotated[float | None, _opt("exp3_gamma", SELECT)] = None,
    discount: Annotated[float | None, _opt("discount", SELECT)] = None,
    granularity: Annotated[str | None, _opt("granularity", SELECT)] = None,
    batching: Annotated[str | None, _opt("batching", SELECT)] = None,
    context: Annotated[str | None, _opt("context", SELECT)] = None,
    context_dim: Annotated[int | None, _opt("context_dim", SELECT)] = None,
    mab_reward: Annotated[str | None, _opt("mab_reward", SELECT)] = None,
    scope: Annotated[str | None, _opt("scope", SELECT)] = None,
    normalizer: Annotated[str | None, _opt("normalizer", SELECT)] = None,
    rms: Annotated[str | None, _opt("rms", MODELS)] = None,
    rm_registry: Annotated[Path | None, _opt("rm_registry", MODELS)] = None,
    ood: Annotated[str | None, _opt("ood", MODELS)] = None,
    model: Annotated[str | None, _opt("model", MODELS)] = None,
    data: Annotated[Path | None, _opt("data", MODELS)] = None,
    eval_data: Annotated[Path | None, _opt("eval_data", MODELS)] = None,
    cache_dir: Annotated[Path | None, _opt("cache_dir", MODELS)] = None,
    device: Annotated[str | None, _opt("device", MODELS)] = None,
    threads: Annotated[int | None, _opt("threads", MODELS)] = None,
    iterations: Annotated[int | None, _opt("iterations", TRAIN)] = None,
    batch_size: Annotated[int | None, _opt("batch_size", TRAIN)] = None,
    batches_per_iteration: Annotated[int | None, _opt("batches_per_iteration", TRAIN)] = None,
    n_responses: Annotated[int | None, _opt("n_responses", TRAIN)] = None,
    pairs_per_prompt: Annotated[int | None, _opt("pairs_per_prompt", TRAIN)] = None,
    temperature: Annotated[float | None, _opt("temperature", TRAIN)] = None,
    top_p: Annotated[float | None, _opt("top_p", TRAIN)] = None,
    max_new_tokens: Annotated[int | None, _opt("max_new_tokens", TRAIN)] = None,
    beta: Annotated[float | None, _opt("beta", TRAIN)] = None,
    nll_weight: Annotated[float | None, _opt("nll_weight", TRAIN)] = None,
    lr: Annotated[float | None, _opt("lr", TRAIN)] = None,
    lora: Annotated[bool | None, _opt("lora", TRAIN, "--lora/--no-lora")] = None,
    seed: Annotated[int | None, _opt("seed", RUN)] = None,
    out: Annotated[Path | None, _opt("out", RUN)] = None,
    overwrite: Annotated[bool | None, _opt("overwrite", RUN, "--overwrite/--no-overwrite")] = None,
    diagnostics: Annotated[bool | None, _opt("diagnostics", RUN, "--diagnostics/--no-diagnostics")] = None,
    eval_size: Annotated[int | None, _opt("eval_size", RUN)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.",
                                           rich_help_panel=RUN)] = True,
    config: Annotated[Path | None, typer.Option(help=(
        "TOML, YAML or JSON file with any of the settings below (keys as the flags without dashes, e.g. "
        "n_responses); flags you give win."), rich_help_panel=RUN, show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=(
        "Set any config field, also those without a flag: --set lora_r=16 --set quantile_low=0.1."),
        rich_help_panel=RUN, show_default=False)] = None,
) -> None:
    """Run the LASeR loop (or a baseline) and write a run folder; see --help for every setting."""
    flags = {k: v for k, v in ctx.params.items() if k in RunConfig.model_fields and v is not None}
    cfg = resolve_config(config, {**parse_set(set_), **flags})

    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app.loop import run_laser

    hf_logging.disable_progress_bar()  # per-model loading bars would break up the run's own bar
    from laser_app.report import render_summary

    summary = run_laser(cfg, progress=progress, console=Console(stderr=True))
    render_summary(summary.metrics, Console())
    typer.echo(f"run folder: {summary.run_dir}")
