"""The built-in RMs' roles: the task each one specialises in, the out-of-domain behaviours they come in, and
the bias rule each one follows out of its domain.

Kept apart from :mod:`laser_app.world.specialists` (which imports torch) so that configs and the CLI can
name them cheaply.

>>> RM_FOR_TASK["math"], OOD_KINDS
('rm-a', ('bias', 'noise', 'weak', 'indep-bias'))
>>> [rule_name("indep-bias", rm, "math") for rm in ("rm-b", "rm-c")]
['smaller', 'larger']
>>> [blind_half(rm, "math") for rm in ("rm-b", "rm-c")]
[1, 0]
"""

from __future__ import annotations

from typing import Literal, get_args

RM_FOR_TASK: dict[str, str] = {"math": "rm-a", "yesno": "rm-b", "mcq": "rm-c"}
"""The specialist RM for each built-in task (in the order of ``TASKS``)."""

OodKind = Literal["bias", "noise", "weak", "indep-bias"]
"""How a specialist behaves out of its domain (see :mod:`laser_app.world.specialists`)."""

OOD_KINDS: tuple[str, ...] = get_args(OodKind)

RULES: dict[str, tuple[str, str]] = {"math": ("larger", "smaller"), "yesno": ("yes", "no"),
                                     "mcq": ("earlier", "later")}
"""Per task, what the shared bias rule prefers (a larger number, "yes", an earlier letter) and its opposite."""


def rule_sign(ood: str, rm: str, task: str) -> int:
    """+1 when ``rm`` under behaviour ``ood`` is measured against the shared bias rule on ``task`` (out of its
    domain), -1 when against the opposite rule.

    Only ``"indep-bias"`` has opposite rules: going round the tasks in the order of ``RM_FOR_TASK``, each RM
    follows the shared rule on the task after its own and the opposite rule on the one after that, so the two
    wrong RMs of every task disagree (math: ``rm-c`` larger, ``rm-b`` smaller; yesno: ``rm-a`` yes, ``rm-c``
    no; mcq: ``rm-b`` earlier, ``rm-a`` later).

    >>> [rule_sign(ood, "rm-a", t) for ood, t in (("indep-bias", "yesno"), ("indep-bias", "mcq"), ("bias", "mcq"))]
    [1, -1, 1]
    """
    tasks, rms = list(RM_FOR_TASK), list(RM_FOR_TASK.values())
    if ood not in OOD_KINDS:
        raise ValueError(f"ood must be one of {list(OOD_KINDS)}, got {ood!r}")
    if rm not in rms:
        raise ValueError(f"no built-in RM named {rm!r}; built-in RMs: {rms}")
    if task not in tasks:
        raise ValueError(f"no bias rule for task {task!r}; built-in tasks: {tasks}")
    step = (tasks.index(task) - rms.index(rm)) % len(tasks)
    if step == 0:
        raise ValueError(f"{rm} is the specialist for {task!r}: it follows no bias rule there")
    return 1 if ood != "indep-bias" or step == 1 else -1


def rule_name(ood: str, rm: str, task: str) -> str:
    """What :func:`rule_sign`'s rule prefers: ``"larger"``/``"smaller"`` number, ``"yes"``/``"no"``,
    ``"earlier"``/``"later"`` letter."""
    return RULES[task][0 if rule_sign(ood, rm, task) > 0 else 1]


def blind_half(rm: str, task: str) -> int:
    """The half of ``task``'s questions a ``"weak"`` ``rm`` is indifferent on, as an index into
    ``laser_app.world.tasks.SUBTYPES[task]``: 0 for the RM that follows the shared rule there under
    ``"indep-bias"``, 1 for the other, so the two wrong RMs of a task are blind on different halves (math:
    ``rm-c`` on additions, ``rm-b`` on subtractions; yesno: ``rm-a`` on comparisons, ``rm-c`` on parity;
    mcq: ``rm-b`` on largest/smallest, ``rm-a`` on which-is-even)."""
    return 0 if rule_sign("indep-bias", rm, task) > 0 else 1
