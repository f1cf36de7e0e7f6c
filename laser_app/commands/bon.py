"""``laser bon``: best-of-n answering with the RM a selector picks per prompt (no training)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from laser_app.commands._errors import INTERRUPTED_EXIT, TERMINATED_EXIT, user_errors
from laser_app.commands.options import config_options, given_settings
from laser_app.commands.run import RUN, check_resume_alone, resolve_run_config
from laser_app.config import RunConfig
from laser_app.errors import Terminated
from laser_app.run_dir import resumable_folder

if TYPE_CHECKING:
    from rich.console import Console

    from laser_app.bon import BonSummary

#: The run settings that mean something without training (the rest are accepted through --config/--set).
BON_FIELDS = ("policy", "alpha", "ridge", "discount", "epsilon", "epsilon_decay", "mixing", "ucb_c",
              "context", "context_dim", "mab_reward", "normalizer", "scope", "rms", "rm_registry", "ood",
              "rm_for_task", "model", "data", "world_seed", "world_scale", "cache_dir", "device", "threads",
              "batch_size", "n_responses", "temperature", "top_p", "max_new_tokens", "eval_size", "seed", "out",
              "overwrite")
COMPARE = "Comparison"
#: laser bon's own options besides the run settings: each changes what a run answers, so --resume refuses them.
BON_OPTIONS = ("longbench", "datasets", "suite", "split", "compare", "seeds", "world_seeds", "methods", "policies")
#: Where best-of-n reads a setting differently from training.
BON_HELP = {
    "mab_reward": "Bandit reward: nll (the negative NLL of the chosen answer under the policy; no labels), "
                  "consistency (whether the chosen answer is the one most samples give; no labels), gold "
                  "(whether the chosen answer was right, learned after answering: labels as online feedback, "
                  "so every prompt's answer is read; oracle-only) or auto (nll). (default: auto)",
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
        "With --longbench or --suite: only these datasets, comma-separated (e.g. hotpotqa,trec or doc-multi)."),
        rich_help_panel=RUN, show_default=False)] = None,
    suite: Annotated[str | None, typer.Option(help=(
        "A built-in suite to answer: longbench (long-document QA in three LongBench-like subsets, doc-single, "
        "doc-multi and doc-fewshot, with its own policy and one specialist RM per subset; built into the "
        "cache on first use)."), rich_help_panel=RUN, show_default=False)] = None,
    split: Annotated[str, typer.Option(help=(
        "With --suite: the split to answer, test or dev (choose settings on dev, read test once)."),
        rich_help_panel=RUN)] = "test",
    compare: Annotated[bool, typer.Option("--compare", help=(
        "Compare methods on the same prompts and samples over --seeds run seeds: greedy (n = 1), each single "
        "RM, random, the score ensemble, the agreement vote, the LASeR --policies, the oracle routing and "
        "pass@n; writes bon_compare.json/.csv/.md/.png to --out."), rich_help_panel=COMPARE)] = False,
    seeds: Annotated[int, typer.Option(help="With --compare: run seeds per method.",
                                       rich_help_panel=COMPARE)] = 3,
    world_seeds: Annotated[str | None, typer.Option(help=(
        "With --compare: world (suite) seeds, comma-separated, each built on first use; intervals are over "
        "(world seed, run seed) units (default: --world-seed)."), rich_help_panel=COMPARE,
        show_default=False)] = None,
    methods: Annotated[str | None, typer.Option(help=(
        "With --compare: the methods, comma-separated (default: greedy, fixed:RM for each RM, random, "
        "ensemble-score, ensemble-agree, the --policies, oracle)."), rich_help_panel=COMPARE,
        show_default=False)] = None,
    policies: Annotated[str, typer.Option(help=(
        "With --compare: the LASeR bandit policies among the default methods, comma-separated."),
        rich_help_panel=COMPARE)] = "linucb",
    resume: Annotated[Path | None, typer.Option("--resume", help=(
        "Continue the stopped best-of-n run in this folder after its last finished batch, with the settings "
        "and prompts saved there (no other settings may be given)."), rich_help_panel=RUN, show_default=False,
        metavar="RUN_DIR")] = None,
    **settings: Any,
) -> None:
    """Answer prompts best-of-n: per prompt the selector picks an RM and the RM picks the best sample."""
    if resume is not None:
        options = {name: True for name in BON_OPTIONS  # given, not left at their defaults
                   if (source := ctx.get_parameter_source(name)) is not None and source.name != "DEFAULT"}
        check_resume_alone(config, set_, {**given_settings(settings), **options})
        folder = resume
        _answer(lambda bon, console: bon.resume_bon(folder, progress=progress, console=console))
        return
    cfg = resolve_run_config(config, set_, settings)
    names = None if datasets is None else [d.strip() for d in datasets.split(",") if d.strip()]
    if compare:
        _compare(cfg, progress=progress, longbench=longbench, datasets=names, suite=suite, seeds=seeds,
                 methods=methods, policies=policies, split=split, world_seeds=world_seeds)
        return

    _answer(lambda bon, console: bon.run_bon(cfg, progress=progress, console=console, longbench=longbench,
                                             datasets=names, suite=suite, split=split))


def _answer(start: Callable[[ModuleType, Console], BonSummary]) -> None:
    """Load :mod:`laser_app.bon` (torch, transformers), run ``start(bon module, stderr console)`` and print its
    summary; an interrupted run with a checkpoint says how to resume it."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app import bon
    from laser_app.report import render_bon

    hf_logging.disable_progress_bar()
    try:
        summary = start(bon, Console(stderr=True))
    except KeyboardInterrupt as err:
        folder = resumable_folder(err)
        if folder is None:
            raise
        terminated = isinstance(err, Terminated)  # the resume line names this command, not laser run
        typer.echo(f"laser: {'terminated' if terminated else 'interrupted'}; a run folder it started is marked "
                   f"interrupted; resume with laser bon --resume {folder}", err=True)
        raise typer.Exit(code=TERMINATED_EXIT if terminated else INTERRUPTED_EXIT) from None
    render_bon(summary.metrics, Console())
    typer.echo(f"run folder: {summary.run_dir}")


def _compare(cfg: RunConfig, *, progress: bool, longbench: Path | None, datasets: list[str] | None,
             suite: str | None, seeds: int, methods: str | None, policies: str, split: str,
             world_seeds: str | None) -> None:
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from laser_app.bon_compare import markdown, run_bon_compare
    from laser_app.compare.methods import split_top_level
    from laser_app.compare.plan import parse_world_seeds
    from laser_app.errors import LaserError
    from laser_app.run_dir import default_out

    hf_logging.disable_progress_bar()
    worlds = parse_world_seeds(world_seeds)
    if world_seeds is not None and worlds is not None and len(worlds) < len(world_seeds.split(",")):
        raise LaserError(f"--world-seeds must be distinct seeds >= 0, got {world_seeds!r}")
    out = cfg.out or default_out("bon-compare")
    data = run_bon_compare(cfg, out=Path(out), seeds=seeds, progress=progress, console=Console(stderr=True),
                           longbench=longbench, datasets=datasets, suite=suite,
                           methods=None if methods is None else [m.strip() for m in split_top_level(methods)
                                                                 if m.strip()],
                           policies=[p.strip() for p in policies.split(",") if p.strip()], split=split,
                           world_seeds=worlds)
    Console().print(markdown(data), markup=False, soft_wrap=True)
    typer.echo(f"comparison folder: {out}")
