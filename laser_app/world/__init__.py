"""The built-in world: seeded tasks in three domains, a small SFT policy and three specialist reward models.

``load_world()`` returns the cached world, building it on first use (a few minutes on two CPU cores).
The task helpers import no torch; the build, the policy and the RMs import it when first used.

>>> from laser_app.world import make_tasks, check_answer
>>> ex = make_tasks(0, n_train=1, n_dev=1, n_test=1)["test"][0]
>>> check_answer(ex.task, " " + ex.answer, ex.answer)
True
"""

from __future__ import annotations

from laser_app.world.build import (
    ENV_CACHE_DIR,
    WORLD_VERSION,
    World,
    WorldSpec,
    build_world,
    default_cache_dir,
    is_complete,
    load_world,
    world_dir,
)
from laser_app.world.quality import format_info, info_text
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

RM_FOR_TASK: dict[str, str] = {"math": "rm-a", "yesno": "rm-b", "mcq": "rm-c"}
OOD_KINDS: tuple[str, ...] = ("bias", "noise")

__all__ = [
    "ENV_CACHE_DIR",
    "OOD_KINDS",
    "RM_FOR_TASK",
    "STOP",
    "TASKS",
    "WORLD_VERSION",
    "Example",
    "World",
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
    "world_dir",
    "write_jsonl",
]
