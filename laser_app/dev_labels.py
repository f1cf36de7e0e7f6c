"""What the dev-label methods read: each RM's top-1 accuracy per task on a few labelled dev prompts.

For the first ``per_task`` dev prompts of each task, the policy samples ``n`` responses (as in training),
every RM scores them, and an RM is right on a prompt when its top-ranked sample is right. ``dev-pick``
routes each task to the RM with the most right picks; ``prior-router`` starts its per-task Beta posteriors
from the counts. The test split is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_adapters.generation import cut_at_stop, sample_responses
from laser_app.batching import derive_seed
from laser_app.data import ExampleLike, by_task, task_of
from laser_app.errors import LaserError
from laser_app.evaluation import cap_per_task
from laser_app.rms import score_responses

if TYPE_CHECKING:
    from laser_adapters.reward_models.registry import RMRegistry

#: ``derive_seed`` stream of the dev samples (the training batches use iteration numbers from 0).
DEV_STREAM = 10_000


@dataclass(frozen=True)
class DevCounts:
    """Per task, per RM: how many dev prompts its top-ranked sample got right and wrong."""

    counts: dict[str, dict[str, tuple[int, int]]]
    per_task: int

    def best(self, rm_names: Sequence[str]) -> dict[str, str]:
        """Per task, the RM with the most right picks (ties go to the earlier RM in ``rm_names``).

        >>> DevCounts({"math": {"a": (3, 5), "b": (6, 2)}}, per_task=8).best(["a", "b"])
        {'math': 'b'}
        """
        return {t: max(rm_names, key=lambda rm: (by.get(rm, (0, 0))[0], -list(rm_names).index(rm)))
                for t, by in self.counts.items()}

    def as_json(self) -> dict[str, Any]:
        """Plain data for ``resolved.json``."""
        return {"per_task": self.per_task, "right_wrong": {t: {rm: list(v) for rm, v in by.items()}
                                                           for t, by in self.counts.items()}}


def dev_counts(model: Any, tokenizer: Any, registry: RMRegistry, rm_names: Sequence[str],
               rows: Sequence[ExampleLike], *, per_task: int, n_responses: int, temperature: float,
               top_p: float, max_new_tokens: int, stop: str | None, check: Callable[[str, str, str], bool],
               seed: int, batch_size: int) -> DevCounts:
    """Count, per task and RM, the dev prompts on which the RM's top-ranked sample is right."""
    picked = cap_per_task(rows, per_task)
    if any(ex.answer is None for ex in picked):
        raise LaserError("the dev-label methods need an answer on every dev row they read")
    short = {t: len(r) for t, r in by_task(picked).items() if len(r) < per_task}
    if short:
        raise LaserError(f"--dev-labels {per_task} asks for more dev prompts than some tasks have: {short}")
    counts: dict[str, dict[str, list[int]]] = {}
    for start in range(0, len(picked), batch_size):
        batch = picked[start:start + batch_size]
        prompts = [ex.prompt for ex in batch]
        samples = sample_responses(model, tokenizer, prompts, n=n_responses, temperature=temperature,
                                   top_p=top_p, max_new_tokens=max_new_tokens, stop=stop,
                                   seed=derive_seed(seed, DEV_STREAM, start))
        responses = [[cut_at_stop(r, stop) for r in rs] for rs in samples]
        scores = score_responses(registry, prompts, responses, [tuple(rm_names)] * len(prompts),
                                 label=f"dev prompts {start}-{start + len(batch) - 1}")
        for ex, rs, by_rm in zip(batch, responses, scores, strict=True):
            right = [bool(check(task_of(ex), r, str(ex.answer))) for r in rs]
            slot = counts.setdefault(task_of(ex), {rm: [0, 0] for rm in rm_names})
            for rm in rm_names:
                slot[rm][0 if right[int(np.argmax(by_rm[rm]))] else 1] += 1
    return DevCounts({t: {rm: (v[0], v[1]) for rm, v in by.items()} for t, by in sorted(counts.items())},
                     per_task=per_task)
