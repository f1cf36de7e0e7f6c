"""PriorRouterSelector: dev priors steer the first choices, the label-free reward moves the posteriors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from laser_adapters.bandit_rewards import StepInputs
from laser_adapters.dpo import StepResult
from laser_adapters.prior_router import PriorRouterSelector
from laser_adapters.selector import Selector

RMS = ["rm-a", "rm-b", "rm-c"]


def result(loss: float) -> StepResult:
    z = np.zeros(1)
    return StepResult(loss=loss, losses=np.array([loss]), dpo_losses=np.array([loss]), nll_losses=z,
                      chosen_rewards=z, rejected_rewards=z, dpo_loss=loss, nll_loss=0.0)


def step(sel: PriorRouterSelector, task: str, loss_of: dict[str, float], i: int) -> str:
    (label, idx), = sel.groups(sel.choose([f"p{i}"], tasks=[task]))
    sel.pairs_for(0, f"p{i}", ["a", "b"], {label: np.array([1.0, 0.0])}, 1)
    sel.feedback(label, idx, result(loss_of[label]), StepInputs(pair_prompt=idx))
    return label


def test_priors_from_dev_counts_pick_the_dev_best_rm_per_task() -> None:
    priors = {"math": {"rm-a": (30, 2), "rm-b": (3, 29), "rm-c": (4, 28)},
              "mcq": {"rm-a": (2, 30), "rm-b": (3, 29), "rm-c": (31, 1)}}
    sel = PriorRouterSelector(RMS, priors, seed=0)
    assert isinstance(sel, Selector) and sel.needs == frozenset()
    picks = {t: [sel.choose([f"q{i}"], tasks=[t])[0][0] for i in range(20)] for t in ("math", "mcq")}
    assert picks["math"].count("rm-a") >= 19 and picks["mcq"].count("rm-c") >= 19
    assert sel.posterior_means("math")["rm-a"] == pytest.approx(31 / 34)


def test_the_online_reward_overrides_a_wrong_weak_prior() -> None:
    # a weak prior for rm-a, but rm-b's pairs train best: the bandit's reward (minus the loss) moves to rm-b
    sel = PriorRouterSelector(RMS, {"math": {"rm-a": (2, 1)}}, seed=1)
    loss = {"rm-a": 1.2, "rm-b": 0.5, "rm-c": 1.0}
    chosen = [step(sel, "math", loss, i) for i in range(120)]
    assert chosen[-30:].count("rm-b") >= 25, chosen[-30:]


def test_state_round_trips_through_json() -> None:
    sel = PriorRouterSelector(RMS, {"math": {"rm-a": (3, 1)}}, seed=2)
    for i in range(5):
        step(sel, "math", {"rm-a": 0.9, "rm-b": 0.7, "rm-c": 0.8}, i)
    other = PriorRouterSelector(RMS, seed=9)
    other.load_state_dict(json.loads(json.dumps(sel.state_dict())))
    assert other.state_dict() == json.loads(json.dumps(sel.state_dict()))
    assert [other.choose(["x"], tasks=["math"]) for _ in range(5)] == [sel.choose(["x"], tasks=["math"])
                                                                      for _ in range(5)]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="priors name RMs"):
        PriorRouterSelector(RMS, {"math": {"rm-z": (1, 1)}})
    with pytest.raises(ValueError, match="prior_weight"):
        PriorRouterSelector(RMS, prior_weight=-1.0)
    with pytest.raises(ValueError, match="unknown bandit reward"):
        PriorRouterSelector(RMS, reward="bleu")
