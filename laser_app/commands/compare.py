"""``laser compare``: every method through the same loop with the same seeds; tables, CSV, JSON and a PNG.

Any ``laser run`` setting is accepted as a flag (``--iterations 2``, ``--lora``, ``--no-lora``) or through
``--config``/``--set``; they apply to every run, and a method's own settings (``linucb[alpha=0.2]``) win.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from laser_adapters.methods import method_names as method_table_names
from laser_app.commands._errors import USER_ERROR_EXIT, user_errors
from laser_app.commands.options import config_options, given_settings
from laser_app.commands.run import parse_set
from laser_app.compare import ALIAS_HELP, DEFAULT_SEEDS, METHOD_ALIASES, PRESETS, MethodError, check_setting
from laser_app.config import RunConfig, flag_name
from laser_app.errors import LaserError

#: Settings for registering the command: unknown ``--flags`` are collected as run settings.
COMPARE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
HELP = ("Compare methods (sft, single RMs, baselines, LASeR variants, label-reading methods) over world and run "
        "seeds, grouped by label budget: the paper's Table 1 and the evidence table.")
EPILOG = ("LASeR aliases: " + "; ".join(f"{k}: {v}" for k, v in ALIAS_HELP.items()) + ". Presets: "
          + "; ".join(f"{p.name}: {p.help}" for p in PRESETS.values()) + ". Any laser run "
          "setting is also accepted as a flag (e.g. --iterations 2 --batch-size 4 --lr 1e-4); see laser run "
          "--help. Runs already complete in --out are reused; failed ones run again. Intervals are 95% "
          "bootstrap intervals over (world seed, run seed) units and evaluation prompts; methods are compared "
          "only within their label budget. Choose settings with --split dev, then read --split test once.")
COMPARE = "Comparison"
#: compare's own --ood and --out replace the run settings of those names.
OWN = ("ood", "out")
#: Run settings compare sets per run: they parse, so that giving one explains what to use instead.
HIDDEN = ("policy", "seed", "overwrite")
RUN_SETTINGS = tuple(f for f in RunConfig.model_fields if f not in OWN)


def reject_extra_args(args: Sequence[str]) -> None:
    """Arguments no option took: an unknown ``--flag`` fails as one line with close names suggested.

    >>> reject_extra_args([])
    >>> reject_extra_args(["--itrations", "2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.compare...MethodError: option --itrations: unknown setting 'itrations'; did you mean --iterations...
    """
    for token in args:
        if token.startswith("--") and token != "--":
            name = token[2:].partition("=")[0]
            check_setting(name, f"option --{name}", flag=True)  # raises: no option took it, so it is unknown
        raise LaserError(f"unexpected argument {token!r}; laser compare takes options only (run settings "
                         "as --name VALUE, methods as --methods a,b,c)")


@user_errors
@config_options(RUN_SETTINGS, hidden=HIDDEN)
def compare(
    ctx: typer.Context,
    methods: Annotated[str | None, typer.Option(help=(
        "Comma-separated methods: sft (the starting policy), any --policy of laser run "
        f"({', '.join(method_table_names())}) or a LASeR alias ({', '.join(METHOD_ALIASES)}); each may carry settings: "
        "'linucb\\[scope=global,mab_reward=dpo+nll]' (quote it in the shell). Default: sft, fixed:<each RM>, "
        "random, sequential, ensemble-score, ensemble-agree, oracle (each task's own RM: the upper bound) and "
        "every LASeR alias (or the --preset's methods)."),
        rich_help_panel=COMPARE, show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(help=(
        f"Named table: {', '.join(PRESETS)}. It fills --methods, --seeds, --world-seeds, --ood and run "
        "settings; options given explicitly win."), rich_help_panel=COMPARE, show_default=False)] = None,
    seeds: Annotated[int | None, typer.Option(help=(
        f"Run seeds per method and world seed (0..N-1), the same for every method (default: the preset's, "
        f"else {DEFAULT_SEEDS})."), rich_help_panel=COMPARE, show_default=False)] = None,
    world_seeds: Annotated[str | None, typer.Option(help=(
        "Built-in world seeds to run every method on, comma-separated (e.g. 0,1); each world seed x run seed is "
        "one paired unit (default: the preset's, else --world-seed)."), rich_help_panel=COMPARE,
        show_default=False)] = None,
    ood: Annotated[str | None, typer.Option(help=(
        "Out-of-domain kinds of the built-in RMs to run the whole table for, comma-separated, e.g. bias,noise "
        "(default: the preset's, else every kind; not with --rm-registry)."), rich_help_panel=COMPARE,
        show_default=False)] = None,
    jobs: Annotated[int, typer.Option(help=(
        "Runs in parallel, each in its own process with one torch and one BLAS thread."),
        rich_help_panel=COMPARE)] = 2,
    out: Annotated[Path | None, typer.Option(help=(
        "Compare folder (default: runs/<date>-<time>-compare); give an existing one to resume it."),
        rich_help_panel=COMPARE, show_default=False)] = None,
    reference: Annotated[str | None, typer.Option(help=(
        "Reference of the label-free methods' paired tests and of relative wall time (default: laser, else "
        "the first LASeR variant); the other label budgets are compared with their first method."),
        rich_help_panel=COMPARE, show_default=False)] = None,
    split: Annotated[str | None, typer.Option(help=(
        "Evaluation split every table and plot reads (default: test, else the only one, e.g. eval for "
        "--eval-data): choose settings on dev, then read test once."),
        rich_help_panel=COMPARE, show_default=False)] = None,
    rerun: Annotated[bool, typer.Option(help="Run complete runs in --out again instead of reusing them.",
                                        rich_help_panel=COMPARE)] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.",
                                           rich_help_panel=COMPARE)] = True,
    config: Annotated[Path | None, typer.Option(help=(
        "TOML, YAML or JSON file of run settings shared by every run (its policy, seed and out are set per "
        "run by compare)."), rich_help_panel=COMPARE, show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=(
        "Set any run setting for every run: --set lora_r=16."), rich_help_panel=COMPARE,
        show_default=False)] = None,
    **settings: Any,
) -> None:
    """Compare methods over seeds through the same loop; print the table and write CSV, JSON and a PNG."""
    from rich.console import Console

    from laser_app.compare import (
        get_preset,
        parse_methods,
        parse_oods,
        parse_world_seeds,
        render_compare,
        run_compare,
        shared_settings,
    )

    try:
        method_list = parse_methods(methods) if methods is not None else None
        chosen = get_preset(preset) if preset is not None else None
        worlds = parse_world_seeds(world_seeds)
        reject_extra_args(ctx.args)
        for name in given_settings(settings):
            if name in HIDDEN:
                check_setting(name, f"option {flag_name(name)}", flag=True)  # raises: compare sets it per run
        shared = shared_settings(config, {**parse_set(set_), **given_settings(settings)})
        err_console = Console(stderr=True)
        if shared.dropped:
            err_console.print(f"note: --config sets {', '.join(shared.dropped)}; compare sets these per run")
        oods = parse_oods(ood if ood is not None else shared.ood)
        if ood is None and shared.ood is not None and "rm_registry" in shared.values:
            oods = None  # a run's config file names an ood kind even when its RMs are the user's
        result = run_compare(method_list, seeds=seeds, shared=shared.values, oods=oods, jobs=jobs,
                             out=out, reference=reference, split=split, rerun=rerun, progress=progress,
                             console=err_console, world_seeds=worlds, preset=chosen)
    except MethodError as err:
        for line in err.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(code=USER_ERROR_EXIT) from None
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough for the tables instead of 80 columns
        console = Console(width=150)
    render_compare(result.data, console)
    data = result.data
    typer.echo(f"{data['runs_total']} runs: {data['runs_done']} run now, {data['runs_reused']} reused, "
               f"{len(result.failures)} failed")
    typer.echo("wrote " + ", ".join(str(p) for p in result.files))
    typer.echo(f"compare folder: {result.out}")
    if result.failures:
        typer.echo(f"error: {len(result.failures)} run(s) failed (see their logs); run the same command "
                   "again to re-run them", err=True)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the ``laser`` app."""
    app.command("compare", help=HELP, epilog=EPILOG, context_settings=COMPARE_CONTEXT)(compare)
