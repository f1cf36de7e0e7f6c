"""``laser compare``: every method through the same loop with the same seeds; tables, CSV, JSON and a PNG.

Any ``laser run`` setting is accepted as a flag (``--iterations 2``, ``--lora``, ``--no-lora``) or through
``--config``/``--set``; they apply to every run, and a method's own settings (``linucb[alpha=0.2]``) win.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from laser_app.commands._errors import USER_ERROR_EXIT, user_errors
from laser_app.commands.run import parse_set
from laser_app.compare import ALIAS_HELP, METHOD_ALIASES, MethodError, check_setting
from laser_app.config import RunConfig
from laser_app.errors import LaserError

#: Settings for registering the command: unknown ``--flags`` are collected as run settings.
COMPARE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
HELP = "Compare methods (sft, single RMs, baselines, LASeR variants) over seeds: the paper's Table 1."
EPILOG = ("LASeR aliases: " + "; ".join(f"{k}: {v}" for k, v in ALIAS_HELP.items()) + ". Any laser run "
          "setting is also accepted as a flag (e.g. --iterations 2 --batch-size 4 --lr 1e-4); see laser run "
          "--help. Runs already complete in --out are reused; failed ones run again.")
COMPARE = "Comparison"


def parse_run_flags(args: Sequence[str]) -> dict[str, Any]:
    """Extra command-line arguments as run settings: ``--name VALUE``, ``--name=VALUE``, ``--flag`` and
    ``--no-flag`` for booleans. Values stay text; the config model converts and checks them.

    >>> parse_run_flags(["--iterations", "2", "--batch-size=4", "--lora", "--no-diagnostics"])
    {'iterations': '2', 'batch_size': '4', 'lora': True, 'diagnostics': False}
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or token == "--":
            raise LaserError(f"unexpected argument {token!r}; laser compare takes options only (run settings "
                             "as --name VALUE, methods as --methods a,b,c)")
        name, eq, value = token[2:].partition("=")
        key = name.replace("-", "_")
        fields = RunConfig.model_fields
        negated = key.startswith("no_") and key not in fields and key[3:] in fields
        field = check_setting(key[3:] if negated else key, f"option --{name}", flag=True)
        is_bool = RunConfig.model_fields[field].annotation is bool
        if negated:
            if eq or not is_bool:
                raise LaserError(f"option --{name}: --no-X is only for on/off settings")
            out[field] = False
        elif eq:
            out[field] = value
        elif is_bool:
            out[field] = True
        else:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise LaserError(f"option --{name} needs a value, e.g. --{name} VALUE")
            out[field] = args[i + 1]
            i += 1
        i += 1
    return out


@user_errors
def compare(
    ctx: typer.Context,
    methods: Annotated[str | None, typer.Option(help=(
        "Comma-separated methods: sft (the starting policy), any --policy of laser run (linucb, lints, "
        "thompson, exp3, egreedy, ucb1, random, fixed:NAME, sequential, ensemble-score, ensemble-agree, oracle) or "
        f"a LASeR alias ({', '.join(METHOD_ALIASES)}); each may carry settings: "
        "'linucb\\[scope=global,mab_reward=dpo+nll]' (quote it in the shell). Default: sft, fixed:<each RM>, "
        "random, sequential, ensemble-score, ensemble-agree, oracle (each task's own RM: the upper bound) and "
        "every LASeR alias."),
        rich_help_panel=COMPARE, show_default=False)] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per method (0..N-1), the same for every method.",
                                       rich_help_panel=COMPARE)] = 3,
    ood: Annotated[str | None, typer.Option(help=(
        "Out-of-domain kinds of the built-in RMs to run the whole table for: bias, noise or bias,noise "
        "(default: both; not with --rm-registry)."), rich_help_panel=COMPARE, show_default=False)] = None,
    jobs: Annotated[int, typer.Option(help=(
        "Runs in parallel, each in its own process with one torch and one BLAS thread."),
        rich_help_panel=COMPARE)] = 2,
    out: Annotated[Path | None, typer.Option(help=(
        "Compare folder (default: runs/<date>-<time>-compare); give an existing one to resume it."),
        rich_help_panel=COMPARE, show_default=False)] = None,
    reference: Annotated[str | None, typer.Option(help=(
        "Method the paired tests and relative wall time refer to (default: laser, else the first LASeR "
        "variant)."), rich_help_panel=COMPARE, show_default=False)] = None,
    split: Annotated[str | None, typer.Option(help=(
        "Evaluation split to compare on (default: test, else the only one, e.g. eval for --eval-data)."),
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
) -> None:
    """Compare methods over seeds through the same loop; print the table and write CSV, JSON and a PNG."""
    from rich.console import Console

    from laser_app.compare import parse_methods, parse_oods, render_compare, run_compare, shared_settings

    try:
        method_list = parse_methods(methods) if methods is not None else None
        shared = shared_settings(config, {**parse_set(set_), **parse_run_flags(ctx.args)})
        err_console = Console(stderr=True)
        if shared.dropped:
            err_console.print(f"note: --config sets {', '.join(shared.dropped)}; compare sets these per run")
        oods = parse_oods(ood if ood is not None else shared.ood)
        if ood is None and shared.ood is not None and "rm_registry" in shared.values:
            oods = None  # a run's config file names an ood kind even when its RMs are the user's
        result = run_compare(method_list, seeds=seeds, shared=shared.values, oods=oods, jobs=jobs,
                             out=out, reference=reference, split=split, rerun=rerun, progress=progress,
                             console=err_console)
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
