"""Diagnostics: the loss every RM's pairs would give at the current policy, and the bandit reward each RM
would have earned, without stepping."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .bandit_rewards import BanditReward, NoRewardSignal, RewardInputs, StepInputs
from .checks import as_float_array
from .pairs import make_pairs

if TYPE_CHECKING:
    from .dpo import StepResult


def counterfactual_results(prompt_samples: Sequence[tuple[str, Sequence[str]]],
                           scores_by_rm: Mapping[str, Sequence[Any]],
                           step_evaluate: Callable[[list[Mapping[str, Any]]], StepResult],
                           max_pairs: int) -> dict[str, StepResult | None]:
    """For each RM, the ``StepResult`` its pairs for the batch give at the current policy (no step taken);
    ``None`` for an RM whose scores formed no pair. ``scores_by_rm[rm][i]`` scores ``prompt_samples[i]``'s
    responses; ``step_evaluate`` is e.g. ``DPOStep.evaluate``."""
    out: dict[str, StepResult | None] = {}
    for rm, per_prompt in scores_by_rm.items():
        if len(per_prompt) != len(prompt_samples):
            raise ValueError(f"RM {rm!r} has scores for {len(per_prompt)} prompts but there are "
                             f"{len(prompt_samples)}")
        pairs: list[Mapping[str, Any]] = []
        for (prompt, responses), s in zip(prompt_samples, per_prompt, strict=True):
            s_arr = as_float_array(s, f"scores of {rm!r}")
            pairs.extend(make_pairs(prompt, responses, s_arr, max_pairs).pairs)
        out[rm] = step_evaluate(pairs) if pairs else None
    return out


def counterfactual_losses(prompt_samples: Sequence[tuple[str, Sequence[str]]],
                          scores_by_rm: Mapping[str, Sequence[Any]],
                          step_evaluate: Callable[[list[Mapping[str, Any]]], StepResult],
                          max_pairs: int) -> dict[str, float]:
    """For each RM, the mean loss its pairs for the batch would give at the current policy, without
    stepping (NaN when its scores form no pair): whether the bandit's reward tracks RM quality.

    >>> from types import SimpleNamespace
    >>> evaluate = lambda pairs: SimpleNamespace(loss=float(len(pairs)))  # stands in for DPOStep.evaluate
    >>> samples = [("1+1=", ["2", "3", "11"])]
    >>> scores = {"a": [[1.0, 0.0, 0.5]], "b": [[1.0, 1.0, 1.0]]}
    >>> counterfactual_losses(samples, scores, evaluate, max_pairs=1)
    {'a': 1.0, 'b': nan}
    """
    res = counterfactual_results(prompt_samples, scores_by_rm, step_evaluate, max_pairs)
    return {rm: float("nan") if r is None else float(r.loss) for rm, r in res.items()}


def counterfactual_rewards(results: Mapping[str, StepResult | None], scores_by_rm: Mapping[str, Sequence[Any]],
                           reward: BanditReward, step: StepInputs) -> dict[str, float | None]:
    """For each RM, the raw bandit ``reward`` the batch would have earned had that RM been chosen for all of
    it, from its :func:`counterfactual_results` entry and ``step`` (the batch's answers, responses or every
    RM's scores, as the reward reads). ``None`` where its scores formed no pair, the unit gives no reward
    signal, or the reward needs what only a taken step gives (``loss-decrease``, ``dev-gold``'s probes).
    The oracle routing's value minus the chosen RM's is the bandit's regret on that batch.

    >>> from types import SimpleNamespace
    >>> from .bandit_rewards import get_bandit_reward
    >>> res = {"a": SimpleNamespace(loss=0.5), "b": SimpleNamespace(loss=0.9), "c": None}
    >>> counterfactual_rewards(res, {"a": [[1, 0]], "b": [[0, 1]], "c": [[1, 1]]}, get_bandit_reward("dpo+nll"),
    ...                        StepInputs())
    {'a': -0.5, 'b': -0.9, 'c': None}
    """
    if reward.reads & {"loss_after", "dev_probe"}:
        return dict.fromkeys(results)
    names = list(scores_by_rm)
    out: dict[str, float | None] = {}
    for rm, result in results.items():
        if result is None:
            out[rm] = None
            continue
        per_prompt = scores_by_rm[rm]
        unit = RewardInputs(result=result, rm=rm, rm_names=names, prompt_indices=list(range(len(per_prompt))),
                            rm_scores={i: as_float_array(s, f"scores of {rm!r}") for i, s in enumerate(per_prompt)},
                            step=step)
        try:
            out[rm] = float(reward.fn(unit))
        except NoRewardSignal:
            out[rm] = None
    return out
