"""The built-in RMs' roles: the task each one specialises in, and the out-of-domain behaviours they come in.

Kept apart from :mod:`laser_app.world.specialists` (which imports torch) so that configs and the CLI can
name them cheaply.

>>> RM_FOR_TASK["math"], OOD_KINDS
('rm-a', ('bias', 'noise'))
"""

from __future__ import annotations

from typing import Literal, get_args

RM_FOR_TASK: dict[str, str] = {"math": "rm-a", "yesno": "rm-b", "mcq": "rm-c"}
"""The specialist RM for each built-in task (in the order of ``TASKS``)."""

OodKind = Literal["bias", "noise"]
"""How a specialist behaves out of its domain (see :mod:`laser_app.world.specialists`)."""

OOD_KINDS: tuple[str, ...] = get_args(OodKind)
