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


@app.command("build")
@user_errors
def build(cache_dir: CacheDir = None, seed: Seed = 0,
          progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True) -> None:
    """Build the built-in world (tasks, SFT policy, reward models) into the cache; a no-op when built."""
    from laser_app.world import build_world, load_world

    build_world(cache_dir, seed=seed, progress=progress)
    world = load_world(cache_dir, seed=seed, build=False, progress=False)
    typer.echo(f"world ready at {world.path}")


@app.command("info")
@user_errors
def info(cache_dir: CacheDir = None, seed: Seed = 0,
         build: Annotated[bool, typer.Option(help="Build the world when it is not cached.")] = False) -> None:
    """Print the world's tasks, policy accuracy and each RM's pairwise accuracy per domain."""
    from laser_app.errors import LaserError
    from laser_app.world import format_info, load_world

    try:
        world = load_world(cache_dir, seed=seed, build=build, progress=True)
    except FileNotFoundError as err:
        raise LaserError(f"{err}; run `laser world build` first or pass --build") from None
    typer.echo(format_info(world.info()))
