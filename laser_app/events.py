"""The ``events.jsonl`` record of one training step, and where a step's time goes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_app.data import ExampleLike, task_of

if TYPE_CHECKING:
    from laser_adapters.dpo import StepResult
    from laser_adapters.pairs import PairResult

#: Where a step's time goes (seconds per part are logged for every step).
STEP_PARTS = ("encode", "select", "generate", "score", "train", "diagnostics")
#: Where a best-of-n batch's time goes (no training step; "feedback" is the answers' NLL and the update).
BON_PARTS = ("encode", "select", "generate", "score", "feedback")


def step_numbers(result: StepResult) -> dict[str, float]:
    """Loss terms and implicit rewards of one DPO step, as plain floats (the NLL term token-averaged, as
    trained; the mean of the per-pair NLLs differs)."""
    def mean(x: Any) -> float:
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        return float(arr.mean()) if arr.size else float("nan")

    chosen, rejected = mean(result.chosen_rewards), mean(result.rejected_rewards)
    return {"loss": float(result.loss), "dpo_loss": float(result.dpo_loss), "nll_loss": float(result.nll_loss),
            "chosen_reward": chosen, "rejected_reward": rejected, "margin": chosen - rejected}


def step_event(iteration: int, batch_index: int, step: int, batch: Sequence[ExampleLike],
               choices: Sequence[tuple[str, ...]], results: Sequence[PairResult],
               groups: list[dict[str, Any]], secs: Mapping[str, float], correct: list[list[bool]] | None,
               counterfactual: Mapping[str, Mapping[str, float | None]] | None,
               rm_moves: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The ``events.jsonl`` record of one step.

    Fields: ``iteration``, ``batch`` (within the iteration), ``step`` (over the run); ``task`` (or
    ``mixed``) and ``tasks``; ``rm`` (the group label, ``mixed`` for several groups) and ``choice_counts``
    (task -> RM -> prompts); ``loss``, ``dpo_loss``, ``nll_loss``, ``margin`` (pair-weighted over groups,
    None when skipped); ``raw_reward``, ``normalized_reward`` and ``arm_scores`` from the selector;
    ``pairs_kept``, ``dropped_ties``, ``dropped_duplicates``; ``skipped`` (no pair formed, no update);
    ``sample_accuracy`` (share of sampled responses that are correct, when answers exist); ``seconds``
    per part (:data:`STEP_PARTS`); ``groups`` (one entry per DPO step with the selector's own log) and,
    with diagnostics, ``counterfactual_loss`` and ``counterfactual_reward`` per RM (the loss of its pairs and
    the raw bandit reward it would have earned on the batch; ``laser_app.rms.diagnostics``); ``rm_moves``, only
    when the step loaded, evicted or moved an RM (``--max-loaded-rms`` below the RMs in use, or RMs on a GPU,
    where only the one in use stays): the RM names per kind of move
    (``laser_adapters.reward_models.registry.MOVES``).
    """
    tasks = [task_of(ex) for ex in batch]
    labels = [c[0] if len(c) == 1 else "+".join(c) for c in choices]
    counts: dict[str, dict[str, int]] = {}
    for t, lab in zip(tasks, labels, strict=True):
        counts.setdefault(t, {}).setdefault(lab, 0)
        counts[t][lab] += 1
    trained = [g for g in groups if not g.get("skipped")]
    n_pairs = sum(g["pairs"] for g in trained)

    def weighted(key: str) -> float | None:
        if not trained:
            return None
        return float(sum(g[key] * g["pairs"] for g in trained) / n_pairs)

    def from_feedback(key: str) -> float | None:
        vals = [g["feedback"].get(key) for g in trained if isinstance(g["feedback"].get(key), int | float)]
        return float(np.mean(vals)) if vals else None

    labels_used = sorted({g["label"] for g in groups})
    event: dict[str, Any] = {
        "iteration": iteration, "batch": batch_index, "step": step,
        "task": tasks[0] if len(set(tasks)) == 1 else "mixed", "tasks": sorted(set(tasks)),
        "rm": labels_used[0] if len(labels_used) == 1 else "mixed", "choice_counts": counts,
        "n_prompts": len(batch), "skipped": not trained,
        "loss": weighted("loss"), "dpo_loss": weighted("dpo_loss"), "nll_loss": weighted("nll_loss"),
        "margin": weighted("margin"),
        "raw_reward": from_feedback("raw_reward"), "normalized_reward": from_feedback("normalized_reward"),
        "arm_scores": trained[0]["feedback"].get("arm_scores") if len(trained) == 1 else None,
        "pairs_kept": n_pairs,
        "dropped_ties": int(sum(r.dropped_ties for r in results)),
        "dropped_duplicates": int(sum(r.dropped_duplicates for r in results)),
        "sample_accuracy": None if correct is None else float(np.mean([c for cs in correct for c in cs])),
        "seconds": {k: round(v, 6) for k, v in secs.items()},
        "groups": groups,
    }
    if counterfactual is not None:
        event["counterfactual_loss"] = dict(counterfactual["loss"])
        if "reward" in counterfactual:
            event["counterfactual_reward"] = dict(counterfactual["reward"])
    if rm_moves is not None and any(rm_moves.values()):
        event["rm_moves"] = {kind: list(names) for kind, names in rm_moves.items()}
    return event
