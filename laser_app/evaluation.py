"""Checking answers: per-sample correctness during training and greedy accuracy per split and task."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from laser_app.data import ExampleLike, task_of


def cap_per_task(rows: Sequence[ExampleLike], n: int) -> list[ExampleLike]:
    """The first ``n`` examples of each task, in their original order."""
    seen: dict[str, int] = {}
    out = []
    for ex in rows:
        t = task_of(ex)
        if seen.get(t, 0) < n:
            seen[t] = seen.get(t, 0) + 1
            out.append(ex)
    return out


def correctness(batch: Sequence[ExampleLike], responses: Sequence[Sequence[str]],
                check: Callable[[str, str, str], bool]) -> list[list[bool]] | None:
    """Per prompt, whether each sampled response is correct; ``None`` unless every prompt has an answer."""
    if any(ex.answer is None for ex in batch):
        return None
    return [[bool(check(task_of(ex), r, str(ex.answer))) for r in rs]
            for ex, rs in zip(batch, responses, strict=True)]


#: Per split, per task, whether each example's greedy answer was right (1) or not (0), in data order.
PerExample = dict[str, dict[str, list[int]]]


def evaluate_examples(model: Any, tokenizer: Any, splits: Mapping[str, Sequence[ExampleLike]], *,
                      greedy: Callable[..., list[str]], check: Callable[[str, str, str], bool],
                      max_new_tokens: int, stop: str | None, batch_size: int,
                      prompt_of: Callable[[ExampleLike], str] | None = None) -> PerExample:
    """Whether the greedy answer to each example is right, per split and task (what intervals over
    prompts are computed from); ``prompt_of`` gives the text the policy is asked with (default: the
    prompt)."""
    out: PerExample = {}
    ask = prompt_of or (lambda ex: ex.prompt)
    for split, rows in splits.items():
        answers = greedy(model, tokenizer, [ask(ex) for ex in rows], max_new_tokens=max_new_tokens,
                         stop=stop, batch_size=batch_size)
        hits: dict[str, list[int]] = {}
        for ex, ans in zip(rows, answers, strict=True):
            hits.setdefault(task_of(ex), []).append(int(bool(check(task_of(ex), ans, str(ex.answer)))))
        out[split] = dict(sorted(hits.items()))
    return out


def accuracy_of(per_example: PerExample) -> dict[str, dict[str, float]]:
    """Accuracy per split and task, plus ``mean`` (the unweighted mean over tasks).

    >>> accuracy_of({"test": {"a": [1, 0], "b": [1, 1]}})
    {'test': {'a': 0.5, 'b': 1.0, 'mean': 0.75}}
    """
    out: dict[str, dict[str, float]] = {}
    for split, by_task in per_example.items():
        acc = {t: float(np.mean(h)) for t, h in sorted(by_task.items())}
        acc["mean"] = float(np.mean(list(acc.values()))) if acc else float("nan")
        out[split] = acc
    return out
