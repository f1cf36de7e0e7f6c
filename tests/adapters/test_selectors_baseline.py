"""Baseline selectors (fixed, random, sequential, score and agreement ensembles) and make_selector."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from laser_adapters.bandit_rewards import StepInputs
from laser_adapters.dpo import StepResult
from laser_adapters.encoders import HashingEncoder
from laser_adapters.methods import make_selector
from laser_adapters.selector import RMSelector, Selector
from laser_adapters.selectors_baseline import (
    AgreementEnsembleSelector,
    FixedSelector,
    OracleSelector,
    RandomSelector,
    ScoreEnsembleSelector,
    SequentialSelector,
    standardize,
)

RMS = ["rm-a", "rm-b", "rm-c"]


def step_result(n: int) -> StepResult:
    d = np.full(n, 0.69)
    return StepResult(loss=0.8, losses=d + 0.11, dpo_losses=d, nll_losses=np.full(n, 0.11),
                      chosen_rewards=np.zeros(n), rejected_rewards=np.zeros(n), dpo_loss=0.69, nll_loss=0.11)


# --------------------------------------------------------------------------- single-RM baselines
def test_fixed_selector() -> None:
    sel = FixedSelector(RMS, "rm-c")
    assert isinstance(sel, Selector) and sel.name == "fixed:rm-c"
    choices = sel.choose(["p0", "p1"])
    assert choices == [("rm-c",), ("rm-c",)]
    assert sel.groups(choices) == [("rm-c", [0, 1])]
    pr = sel.pairs_for(1, "p1", ["a", "b", "c"], {"rm-c": [0.0, 2.0, 1.0]}, max_pairs=1)
    assert [(p["chosen"], p["rejected"]) for p in pr.pairs] == [("b", "a")]
    assert sel.feedback("rm-c", [0, 1], step_result(2)) == {"selector": "fixed:rm-c", "rm": "rm-c",
                                                                  "n_prompts": 2, "iteration": 0}
    with pytest.raises(ValueError, match="unknown RM 'rm-z'; valid names: rm-a, rm-b, rm-c"):
        FixedSelector(RMS, "rm-z")


def test_random_selector_is_seeded_and_uniform() -> None:
    a, b = RandomSelector(RMS, seed=3), RandomSelector(RMS, seed=3)
    ca = [a.choose(["p", "q"]) for _ in range(300)]
    assert ca == [b.choose(["p", "q"]) for _ in range(300)]
    assert all(len(set(c)) == 1 for c in ca)  # batch granularity: one RM per batch
    counts = Counter(c[0][0] for c in ca)
    assert set(counts) == set(RMS) and min(counts.values()) > 70

    inst = RandomSelector(RMS, seed=0, granularity="instance")
    choices = inst.choose([f"p{i}" for i in range(30)])
    groups = inst.groups(choices)
    assert sorted(i for _, idx in groups for i in idx) == list(range(30))
    assert [g for g, _ in groups] == RMS  # every RM got some of 30 prompts, groups in RM order
    for label, idx in groups:
        assert all(choices[i][0] == label for i in idx)


def test_random_selector_state_round_trip() -> None:
    a = RandomSelector(RMS, seed=1)
    a.choose(["p"])
    b = RandomSelector(RMS, seed=99)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert [a.choose(["p"]) for _ in range(20)] == [b.choose(["p"]) for _ in range(20)]


def test_sequential_selector_advances_per_iteration() -> None:
    sel = SequentialSelector(RMS)
    seen = []
    for m in range(5):
        sel.new_iteration(m)
        for _ in range(3):  # constant within an iteration
            choices = sel.choose(["p0", "p1"])
            assert len(set(choices)) == 1
            seen.append(choices[0][0])
    assert seen == [rm for rm in ["rm-a", "rm-b", "rm-c", "rm-a", "rm-b"] for _ in range(3)]
    state = sel.state_dict()
    other = SequentialSelector(RMS)
    other.load_state_dict(state)
    assert other.current == "rm-b"


def test_oracle_routes_each_task_to_its_rm() -> None:
    sel = make_selector("oracle", RMS, rm_for_task={"math": "rm-a", "mcq": "rm-c"})
    assert isinstance(sel, OracleSelector) and sel.name == "oracle"
    choices = sel.choose(["p0", "p1", "p2"], tasks=["mcq", "math", "mcq"])
    assert choices == [("rm-c",), ("rm-a",), ("rm-c",)]
    assert sel.groups(choices) == [("rm-a", [1]), ("rm-c", [0, 2])]
    assert sel.feedback("rm-c", [0, 2], step_result(2))["n_prompts"] == 2
    other = OracleSelector(RMS, {"x": "rm-b"})
    other.load_state_dict(copy.deepcopy(sel.state_dict()))
    assert other.rm_for_task == {"math": "rm-a", "mcq": "rm-c"}


def test_oracle_errors() -> None:
    sel = OracleSelector(RMS, {"math": "rm-a"})
    with pytest.raises(ValueError, match="routes by task: pass tasks"):
        sel.choose(["p"])
    with pytest.raises(ValueError, match="no RM for task"):
        sel.choose(["p"], tasks=["mcq"])
    with pytest.raises(ValueError, match="needs rm_for_task"):
        make_selector("oracle", RMS)
    with pytest.raises(ValueError, match="unknown RMs"):
        OracleSelector(RMS, {"math": "rm-z"})


# --------------------------------------------------------------------------- ensembles
def test_standardize() -> None:
    np.testing.assert_allclose(standardize(np.array([1.0, 2.0, 3.0])), [-1.224744871, 0.0, 1.224744871])
    assert standardize(np.array([5.0, 5.0, 5.0])).tolist() == [0.0, 0.0, 0.0]


def test_score_ensemble_pairs_by_mean_standardized_score() -> None:
    sel = ScoreEnsembleSelector(RMS)
    assert isinstance(sel, Selector)
    choices = sel.choose(["q0", "q1"])
    assert choices == [tuple(RMS)] * 2
    assert sel.groups(choices) == [("ensemble-score", [0, 1])]
    scores = {"rm-a": [4.0, 0.0, 1.0, 3.0], "rm-b": [10.0, 10.0, 10.0, 10.0], "rm-c": [0.0, 1.0, 3.0, 2.0]}
    za = (np.array(scores["rm-a"]) - 2.0) / np.sqrt(2.5)  # mean 2, population variance (4 + 4 + 1 + 1) / 4
    zc = (np.array(scores["rm-c"]) - 1.5) / np.sqrt(1.25)  # mean 1.5, variance (2.25 + .25 + 2.25 + .25) / 4
    expected = (za + 0.0 + zc) / 3  # the constant RM contributes 0
    np.testing.assert_allclose(expected, [-0.02558, -0.57071, 0.23640, 0.35989], atol=1e-5)  # z > y > w > x
    pr = sel.pairs_for(1, "q1", ["w", "x", "y", "z"], scores, max_pairs=2)
    assert [(p["chosen"], p["rejected"]) for p in pr.pairs] == [("z", "x"), ("y", "w")]
    assert pr.pairs[0]["chosen_score"] == pytest.approx(expected[3])
    assert pr.pairs[1]["rejected_score"] == pytest.approx(expected[0])
    assert sel.feedback("ensemble-score", [0, 1], step_result(2))["selector"] == "ensemble-score"


def test_score_ensemble_input_errors() -> None:
    sel = ScoreEnsembleSelector(RMS)
    with pytest.raises(ValueError, match="call choose"):
        sel.pairs_for(0, "q", ["a", "b"], {}, 1)
    sel.choose(["q"])
    with pytest.raises(ValueError, match=r"needs every RM's scores; prompt 0 lacks \['rm-c'\]"):
        sel.pairs_for(0, "q", ["a", "b"], {"rm-a": [1.0, 0.0], "rm-b": [1.0, 0.0]}, 1)
    with pytest.raises(ValueError, match="gave 3 scores for prompt 0 but it has 2 responses"):
        sel.pairs_for(0, "q", ["a", "b"], {rm: [1.0, 0.0, 2.0] for rm in RMS}, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        sel.pairs_for(0, "q", ["a", "b"], {rm: [1.0, np.inf] for rm in RMS}, 1)
    with pytest.raises(ValueError, match="out of range"):
        sel.pairs_for(3, "q", ["a", "b"], {rm: [1.0, 0.0] for rm in RMS}, 1)


def test_agreement_ensemble_keeps_majority_pairs_and_counts_drops() -> None:
    sel = AgreementEnsembleSelector(RMS)
    sel.choose(["q0", "q1"])
    # prompt 0: mean z ranks w > y > z > x; candidates (w, x) and (y, z).
    # (w, x): all three prefer w -> kept. (y, z): only rm-a prefers y (rm-b, rm-c prefer z) -> dropped,
    # although rm-a's large z-margin puts y above z in the mean.
    s0 = {"rm-a": [3.0, 0.0, 2.0, 1.0], "rm-b": [3.0, 0.0, 1.0, 1.1], "rm-c": [3.0, 0.0, 1.0, 1.1]}
    pr = sel.pairs_for(0, "q0", ["w", "x", "y", "z"], s0, max_pairs=2)
    assert [(p["chosen"], p["rejected"]) for p in pr.pairs] == [("w", "x")]
    assert sel.dropped_disagreements == 1
    # prompt 1: rm-c disagrees on everything but is outvoted 2:1; a tie in rm-b does not count as agreement
    s1 = {"rm-a": [1.0, 0.0], "rm-b": [0.5, 0.5], "rm-c": [0.0, 1.0]}
    pr = sel.pairs_for(1, "q1", ["u", "v"], s1, max_pairs=1)
    # mean z: u = (1 + 0 - 1) / 3 = 0 = v -> a tie in the ensemble score, dropped as a tie by make_pairs
    assert pr.pairs == [] and pr.dropped_ties == 1
    s1 = {"rm-a": [1.0, 0.0], "rm-b": [1.0, 0.0], "rm-c": [0.0, 1.0]}
    pr = sel.pairs_for(1, "q1", ["u", "v"], s1, max_pairs=1)
    assert [(p["chosen"], p["rejected"]) for p in pr.pairs] == [("u", "v")]
    log = sel.feedback("ensemble-agree", [0, 1], step_result(2))
    assert log["dropped_disagreements"] == 1 and sel.dropped_disagreements == 1
    # a strict majority of two RMs is both
    two = AgreementEnsembleSelector(["a", "b"])
    two.choose(["q"])
    # mean z ranks w > u > v: the candidate (w, v) is preferred by a (0.5 > 0) but not by b (0.5 < 0.8)
    pr = two.pairs_for(0, "q", ["u", "v", "w"], {"a": [1.0, 0.0, 0.5], "b": [0.0, 0.8, 0.5]}, max_pairs=1)
    assert pr.pairs == [] and two.dropped_disagreements == 1


def test_agreement_ensemble_handles_duplicate_texts() -> None:
    sel = AgreementEnsembleSelector(["a", "b", "c"])
    sel.choose(["q"])
    s = {"a": [0.0, 2.0, 1.0], "b": [0.0, 2.0, 1.0], "c": [2.0, 0.0, 1.0]}
    pr = sel.pairs_for(0, "q", ["x", "x", "y"], s, max_pairs=1)
    # the copy of "x" at index 1 is the higher-scored one; a and b prefer it to "y"
    assert [(p["chosen"], p["rejected"]) for p in pr.pairs] == [("x", "y")]
    assert pr.dropped_duplicates == 1 and sel.dropped_disagreements == 0


# --------------------------------------------------------------------------- factory
@pytest.mark.parametrize("name", ["linucb", "lints", "thompson", "exp3", "egreedy", "ucb1"])
def test_bandit_selectors_run_steps(name: str) -> None:
    sel = make_selector(name, RMS, encoder=HashingEncoder(dim=16), seed=0, granularity="instance")
    assert isinstance(sel, RMSelector)
    for step in range(6):
        prompts = [f"prompt {step} {i}" for i in range(4)]
        choices = sel.choose(prompts)
        for label, idx in sel.groups(choices):
            for i in idx:
                sel.pairs_for(i, prompts[i], ["a", "b"], {label: [1.0, 0.0]}, 1)
            log = sel.feedback(label, idx, step_result(len(idx)), StepInputs(pair_prompt=idx))
            # every prompt rewarded with the paper's reward (each pair's loss is 0.8), shifted as documented
            assert log["skipped_prompts"] == [] and len(log["per_prompt"]) == len(idx)
            assert [p["raw_reward"] for p in log["per_prompt"]] == pytest.approx([-0.8] * len(idx))
            assert log["policy_reward"] == pytest.approx(log["normalized_reward"] - sel.reward_baseline)
    if name == "ucb1":  # UCB1 exposes its indices: logged per prompt, an unplayed arm's inf as None
        scores = log["per_prompt"][0]["arm_scores"]
        assert len(scores) == len(RMS) and all(v is None or np.isfinite(v) for v in scores)


def test_make_selector_passes_hyperparameters() -> None:
    sel = make_selector("linucb", RMS, encoder=HashingEncoder(dim=8), alpha=0.25, reward="nll",
                        scope="per-context", granularity="instance")
    assert isinstance(sel, RMSelector)
    assert sel.policy.state_dict()["hyperparams"]["alpha"] == 0.25
    assert (sel.reward_name, sel.scope, sel.granularity) == ("nll", "per-context", "instance")
    eg = make_selector("egreedy", RMS, epsilon=0.3)
    assert isinstance(eg, RMSelector) and eg.policy.state_dict()["hyperparams"]["epsilon"] == 0.3
    rnd = make_selector("random", RMS, seed=4, granularity="instance")
    assert isinstance(rnd, RandomSelector) and rnd.granularity == "instance"


def test_make_selector_errors() -> None:
    with pytest.raises(ValueError, match="unknown selector 'greedy'; valid names: linucb, lints, thompson"):
        make_selector("greedy", RMS)
    with pytest.raises(ValueError, match="unknown RM 'rm-z'"):
        make_selector("fixed:rm-z", RMS)
    with pytest.raises(ValueError, match="contextual: pass encoder"):
        make_selector("linucb", RMS)
    with pytest.raises(TypeError, match=r"selector 'exp3' does not take alpha; it takes: .*mixing"):
        make_selector("exp3", RMS, alpha=1.0)
    with pytest.raises(TypeError, match="does not take lr"):
        make_selector("random", RMS, lr=0.1)
    with pytest.raises(ValueError, match="rm_names is empty"):
        make_selector("random", [])
