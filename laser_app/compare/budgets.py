"""Label budgets in a comparison (DESIGN.md, "Information budgets"): what each method read, the order of the
rows, and the reference each budget class is compared against. Methods are compared within a class only.

A budget is ``none``, ``dev-N`` (N labelled dev prompts per task), ``all`` (every training prompt's answer)
or ``oracle`` (the world's known RM for each task), as a run's ``metrics.json`` records it under
``labels``; ``None`` is unknown (a run from before budgets were recorded).

>>> sorted(["oracle", "dev-32", None, "all", "none", "dev-8"], key=budget_rank)
['none', 'dev-8', 'dev-32', 'all', 'oracle', None]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from laser_app.compare.methods import LASER, SFT

#: The starting policy reads no labels of its own.
SFT_LABELS = {"budget": "none", "labelled_prompts": 0, "source": "none: the starting policy"}
_DEV = re.compile(r"dev-(\d+)")


def budget_rank(budget: str | None) -> tuple[int, int]:
    """Sort key of a budget: none, dev-N by N, all, oracle, then unknown and anything else."""
    if budget is None:
        return (5, 0)
    dev = _DEV.fullmatch(budget)
    if dev:
        return (1, int(dev.group(1)))
    return {"none": (0, 0), "all": (2, 0), "oracle": (3, 0)}.get(budget, (4, 0))


def labelled_per_task(labels: Mapping[str, Any] | None, n_tasks: int) -> float | None:
    """Labelled prompts per task, the x of the label-budget curve: 0 for none, N for dev-N, the training
    prompts per task for all (``labelled_prompts`` counts every task's); ``None`` for oracle and unknown.

    >>> labelled_per_task({"budget": "all", "labelled_prompts": 900}, 3), labelled_per_task({"budget": "dev-8"}, 3)
    (300.0, 8.0)
    """
    budget = (labels or {}).get("budget")
    if budget == "none":
        return 0.0
    dev = _DEV.fullmatch(budget or "")
    if dev:
        return float(dev.group(1))
    if budget == "all" and labels and labels.get("labelled_prompts") is not None and n_tasks > 0:
        return float(labels["labelled_prompts"]) / n_tasks
    return None


def method_labels(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A method's label use from its runs' records: that of the budget most of them recorded (``None`` when
    none recorded one)."""
    seen = [r["labels"] for r in records if r.get("labels") and r["labels"].get("budget")]
    if not seen:
        return None
    budget = Counter(lab["budget"] for lab in seen).most_common(1)[0][0]
    return dict(next(lab for lab in seen if lab["budget"] == budget))


def order_by_budget(methods: Sequence[str], budgets: Mapping[str, str | None]) -> list[str]:
    """``methods`` with sft first, then by budget (:func:`budget_rank`), the given order kept within one.

    >>> order_by_budget(["gold", "laser", "sft", "dev-pick"], {"gold": "all", "laser": "none", "sft": "none",
    ...                                                        "dev-pick": "dev-8"})
    ['sft', 'laser', 'dev-pick', 'gold']
    """
    return sorted(methods, key=lambda m: (m != SFT, budget_rank(budgets.get(m))))


def class_references(methods: Sequence[str], budgets: Mapping[str, str | None], *, reference: str | None,
                     learners: Collection[str]) -> dict[str | None, str | None]:
    """The reference of each budget class: ``reference`` in its own class; else, for none (and unknown),
    ``laser`` or the first learning method (a bandit or LASeR alias), none when the class has neither;
    for any other class, its first method.

    >>> class_references(["sft", "random", "laser-dpo", "dev-pick", "prior-router"],
    ...                  {"sft": "none", "random": "none", "laser-dpo": "none", "dev-pick": "dev-8",
    ...                   "prior-router": "dev-8"}, reference=None, learners=["laser-dpo", "prior-router"])
    {'none': 'laser-dpo', 'dev-8': 'dev-pick'}
    """
    refs: dict[str | None, str | None] = {}
    for budget in dict.fromkeys(budgets.get(m) for m in methods):
        members = [m for m in methods if budgets.get(m) == budget and m != SFT]
        if reference in members:
            refs[budget] = reference
        elif budget in ("none", None):
            refs[budget] = LASER if LASER in members else next((m for m in members if m in learners), None)
        else:
            refs[budget] = members[0] if members else None
    return refs
