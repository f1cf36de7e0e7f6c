"""What a run reads beyond the RMs and the policy, so that methods are compared only with methods that read as
much: its label budget, and the answer checker as an RM for the methods that read every training label.

Budgets (DESIGN.md, "Information budgets"): ``none`` (the RMs and the policy only), ``dev-N`` (N labelled
dev prompts per task, never the test split), ``all`` (the answer of every training prompt), ``oracle`` (the
known RM for each task: an upper bound, not a practitioner's method).

>>> from laser_app.config import RunConfig
>>> label_use(RunConfig(policy="linucb", mab_reward="dpo+nll"), train_labelled=900, dev_per_task=0, tasks=3)
{'budget': 'none', 'labelled_prompts': 0, 'source': 'none: the RMs and the policy only'}
>>> label_use(RunConfig(policy="linucb", mab_reward="gold"), train_labelled=900, dev_per_task=0, tasks=3)["budget"]
'all'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from laser_adapters.bandit_rewards import get_bandit_reward
from laser_adapters.methods import GOLD_RM, get_method
from laser_adapters.reward_models.function import FunctionRM
from laser_app.config import RunConfig, resolve_mab_reward
from laser_app.data import ExampleLike, task_of
from laser_app.errors import LaserError


def label_kind(config: RunConfig) -> str:
    """``none``, ``dev``, ``all`` or ``oracle``: what ``config``'s method and bandit reward read.

    >>> label_kind(RunConfig(policy="gold")), label_kind(RunConfig(policy="oracle"))
    ('all', 'oracle')
    >>> label_kind(RunConfig(policy="linucb", mab_reward="dev-gold")), label_kind(RunConfig(policy="random"))
    ('dev', 'none')
    """
    method = get_method(config.policy)
    reads_reward = method.learns or "reward" in method.takes
    reward = get_bandit_reward(resolve_mab_reward(config).mab_reward).labels if reads_reward else "none"
    if "all" in (reward, method.labels):
        return "all"
    return reward if reward != "none" else method.labels


def label_use(config: RunConfig, *, train_labelled: int, dev_per_task: int, tasks: int) -> dict[str, Any]:
    """The run's label budget: ``budget`` (``none``, ``dev-N``, ``all`` or ``oracle``), ``labelled_prompts``
    (how many labelled prompts it read) and ``source`` (where they came from), as written to
    ``resolved.json`` and ``metrics.json``."""
    kind = label_kind(config)
    if kind == "all":
        return {"budget": "all", "labelled_prompts": train_labelled,
                "source": "all: the answer of every training prompt"}
    if kind == "dev":
        return {"budget": f"dev-{dev_per_task}", "labelled_prompts": dev_per_task * tasks,
                "source": f"dev-{dev_per_task}: {dev_per_task} labelled dev prompts per task"}
    if kind == "oracle":
        return {"budget": "oracle", "labelled_prompts": 0,
                "source": "oracle: the known RM for each task (an upper bound)"}
    return {"budget": "none", "labelled_prompts": 0, "source": "none: the RMs and the policy only"}


def gold_rm(rows: Sequence[ExampleLike], check: Callable[[str, str, str], bool]) -> FunctionRM:
    """The answer checker as an RM (1 for a right response, 0 else), for the training prompts ``rows``.

    >>> from laser_app.world.tasks import Example, check_answer
    >>> rm = gold_rm([Example("Q: 2+2? A:", "4", "math")], check_answer)
    >>> rm.score(["Q: 2+2? A:", "Q: 2+2? A:"], [" 4", " 5"]).tolist()
    [1.0, 0.0]
    """
    answers: dict[str, tuple[str, str]] = {}
    for ex in rows:
        if ex.answer is None:
            raise LaserError(f"--policy {GOLD_RM} ranks samples by their answer, but a training row has none: "
                             f"{ex.prompt[:60]!r}; add answers or pick a label-free method")
        answers[ex.prompt] = (task_of(ex), str(ex.answer))

    def verify(prompt: str, response: str) -> float:
        task, answer = answers[prompt]
        return float(bool(check(task, response, answer)))

    return FunctionRM(verify, name=GOLD_RM, batched=False)
