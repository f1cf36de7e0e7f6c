"""The built-in world: seeded tasks in three domains, a small SFT policy and three specialist reward models.

``load_world()`` returns the cached world, building it on first use (a few minutes on two CPU cores); a cached
world whose files are damaged raises :class:`WorldDamagedError` instead (``laser world build --force`` rebuilds it).
The task helpers import no torch; the build, the policy and the RMs import it when first used.

>>> from laser_app.world import make_tasks, check_answer
>>> ex = make_tasks(0, n_train=1, n_dev=1, n_test=1)["test"][0]
>>> check_answer(ex.task, " " + ex.answer, ex.answer)
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from laser_app.errors import LaserError
from laser_app.world.build import WORLD_VERSION, World, build_world, is_complete, load_world, world_dir
from laser_app.world.integrity import ENV_CACHE_DIR, WorldDamagedError, default_cache_dir, rebuild_command
from laser_app.world.quality import format_info, info_text
from laser_app.world.roles import OOD_KINDS, RM_FOR_TASK, OodKind
from laser_app.world.specs import WorldSpec
from laser_app.world.tasks import (
    STOP,
    TASKS,
    Example,
    check_answer,
    make_splits,
    make_tasks,
    read_jsonl,
    write_jsonl,
)


class WorldSettings(Protocol):
    """The settings that name a world (a ``RunConfig`` has them)."""

    @property
    def cache_dir(self) -> Path | None: ...

    @property
    def world_seed(self) -> int: ...

    @property
    def world_scale(self) -> float: ...


def world_for(config: WorldSettings, *, progress: bool = True) -> World:
    """The world a run's ``cache_dir``, ``world_seed`` and ``world_scale`` name, built on first use; a
    failure is one :class:`~laser_app.errors.LaserError` line (a damaged world's says how to rebuild it)."""
    try:
        return load_world(config.cache_dir, seed=config.world_seed, build=True, progress=progress,
                          scale=config.world_scale)
    except WorldDamagedError:
        raise
    except (OSError, ValueError) as err:
        raise LaserError(f"could not load the built-in world: {err}") from err


__all__ = [
    "ENV_CACHE_DIR",
    "OOD_KINDS",
    "RM_FOR_TASK",
    "STOP",
    "TASKS",
    "WORLD_VERSION",
    "Example",
    "OodKind",
    "World",
    "WorldDamagedError",
    "WorldSpec",
    "build_world",
    "check_answer",
    "default_cache_dir",
    "format_info",
    "info_text",
    "is_complete",
    "load_world",
    "make_splits",
    "make_tasks",
    "read_jsonl",
    "rebuild_command",
    "world_dir",
    "world_for",
    "write_jsonl",
]
