"""``laser world build`` and ``laser world info``: the built-in world's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from laser_app.commands._errors import user_errors

app = typer.Typer(no_args_is_help=True, add_completion=False)

CacheDir = Annotated[Path | None, typer.Option(
    help="World cache folder (default: $LASER_CACHE_DIR or ~/.cache/laser).", show_default=False)]
Seed = Annotated[int, typer.Option(help="World seed (tasks, policy and RMs are deterministic for a seed).")]
Scale = Annotated[float, typer.Option(
    help="Shrink data and training budgets by this factor (a quick world for tests; 1 = the real world).",
    min=0.0, max=1.0)]


@app.command("build")
@user_errors
def build(cache_dir: CacheDir = None, seed: Seed = 0, scale: Scale = 1.0,
          force: Annotated[bool, typer.Option(help="Rebuild even when the world is already built.")] = False,
          progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
          suite: Annotated[bool, typer.Option(help=(
              "Build the long-document QA suite (its policy and specialist RMs) instead of the short-task "
              "world; laser bon --suite longbench builds it on first use too."))] = False) -> None:
    """Build the built-in world (tasks, SFT policy, reward models) into the cache; a no-op when built."""
    from laser_app.errors import LaserError

    if scale <= 0:
        raise LaserError(f"--scale must be in (0, 1], got {scale}")
    if suite:
        from laser_app.world.suite import build_suite

        built = build_suite(cache_dir, seed=seed, scale=scale, force=force, progress=progress)
        typer.echo(f"long-document suite ready at {built.path}")
        return
    from laser_app.world import build_world

    world = build_world(cache_dir, seed=seed, scale=scale, force=force, progress=progress)
    typer.echo(f"world ready at {world.path}")


@app.command("info")
@user_errors
def info(cache_dir: CacheDir = None, seed: Seed = 0, scale: Scale = 1.0,
         build: Annotated[bool, typer.Option(help="Build the world when it is not cached.")] = False) -> None:
    """Print the world's sizes, the policy's accuracy and each RM's pairwise accuracy per domain."""
    from rich.console import Console

    from laser_app.errors import LaserError
    from laser_app.world import format_info, load_world

    if scale <= 0:
        raise LaserError(f"--scale must be in (0, 1], got {scale}")
    try:
        world = load_world(cache_dir, seed=seed, build=build, progress=True, scale=scale)
    except FileNotFoundError as err:
        raise LaserError(f"{err}; or pass --build") from None
    console = Console()
    console.print(f"world at {world.path}")
    for table in format_info(world.info()):
        console.print(table)
