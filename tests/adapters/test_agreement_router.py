"""The agreement router: label-free accuracy estimates from RM agreement, routing, fallback, its known failure."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from laser_adapters.agreement_router import (
    FALLBACK,
    AgreementRouter,
    agreement_counts,
    estimate_accuracies,
)
from laser_adapters.methods import get_method, make_selector
from laser_adapters.pairs import make_pairs
from laser_adapters.selector import Selector
from laser_adapters.selectors_baseline import ScoreEnsembleSelector, standardize

RMS = ["rm-a", "rm-b", "rm-c"]
Scores = dict[str, list[float]]


@dataclass(frozen=True)
class Losses:
    """A step's losses (the router reads none of them)."""

    loss: float = 0.8
    losses: Any = field(default_factory=lambda: np.full(1, 0.8))
    dpo_losses: Any = field(default_factory=lambda: np.full(1, 0.69))
    nll_losses: Any = field(default_factory=lambda: np.full(1, 0.11))


def flip_scores(rng: np.random.Generator, accuracy: Sequence[float], n: int) -> list[Scores]:
    """``n`` prompts of two responses, the first one better; each RM orders them right with its own
    accuracy, independently of the others (conditional independence holds exactly)."""
    right = rng.random((n, len(accuracy))) < np.asarray(accuracy)
    return [{rm: [1.0, 0.0] if ok else [0.0, 1.0] for rm, ok in zip(RMS, row, strict=True)} for row in right]


def rates_of(scores: Sequence[Scores], names: Sequence[str] = RMS) -> np.ndarray:
    agree = counted = np.zeros((len(names), len(names)), dtype=np.int64)
    for s in scores:
        a, c = agreement_counts([s[n] for n in names])
        agree, counted = agree + a, counted + c
    return np.where(counted > 0, agree / np.maximum(counted, 1), 1.0)


def run_batch(sel: AgreementRouter, scores: Sequence[Scores], task: str | None,
              start: int = 0) -> tuple[str, dict[str, Any]]:
    """One batch as the training loop runs it; returns the group label and the feedback log."""
    prompts = [f"prompt {start + i}" for i in range(len(scores))]
    choices = sel.choose(prompts, tasks=None if task is None else [task] * len(prompts))
    for i, needed in enumerate(choices):
        sel.pairs_for(i, prompts[i], ["good", "bad"], {n: scores[i][n] for n in needed}, max_pairs=1)
    ((label, idx),) = sel.groups(choices)
    return label, sel.feedback(label, idx, Losses())


# --------------------------------------------------------------------------- the estimate
def test_counts_follow_strict_orders_only() -> None:
    agree, counted = agreement_counts([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
    # rm 0 and rm 1 disagree on all three pairs; rm 2 ties the first pair, so only two pairs count with it
    assert counted.tolist() == [[0, 3, 2], [3, 0, 2], [2, 2, 0]]
    assert agree.tolist() == [[0, 0, 2], [0, 0, 0], [2, 0, 0]]
    with pytest.raises(ValueError, match=r"shape \(n_rms, n_responses >= 2\), got \(3, 1\)"):
        agreement_counts([[1.0], [2.0], [3.0]])


def test_triplet_estimate_recovers_known_accuracies() -> None:
    truth = [0.9, 0.7, 0.6]
    acc = estimate_accuracies(rates_of(flip_scores(np.random.default_rng(0), truth, 4000)))
    assert acc is not None
    np.testing.assert_allclose(acc, truth, atol=0.05)


def test_rank_one_fit_recovers_four_rms_exactly() -> None:
    p = np.array([0.95, 0.8, 0.7, 0.6])
    rates = p[:, None] * p + (1 - p[:, None]) * (1 - p)
    acc = estimate_accuracies(rates)
    assert acc is not None
    np.testing.assert_allclose(acc, p, atol=1e-12)


def test_estimate_is_none_when_not_identifiable() -> None:
    assert estimate_accuracies([[1.0, 0.8], [0.8, 1.0]]) is None  # two RMs: only c_a * c_b is known
    assert estimate_accuracies([[1.0, 0.7, 0.4], [0.7, 1.0, 0.6], [0.4, 0.6, 1.0]]) is None  # below chance
    with pytest.raises(ValueError, match=r"square \(n_rms, n_rms\) matrix, got shape \(2, 3\)"):
        estimate_accuracies(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got \[1.5, 0.7, 0.7\]"):
        estimate_accuracies([[1.0, 1.5, 0.7], [1.5, 1.0, 0.7], [0.7, 0.7, 1.0]])


# --------------------------------------------------------------------------- routing
def test_routes_each_task_to_its_best_rm_after_warmup() -> None:
    """Three tasks, each with its own best RM, errors independent: after the warm-up each task goes to its
    own best RM (or, while the estimates are too close, to the ensemble), never to a worse RM, though the
    router never sees a label."""
    accuracy = {"math": [0.9, 0.75, 0.7], "code": [0.7, 0.9, 0.75], "chat": [0.75, 0.7, 0.9]}
    best = {task: RMS[int(np.argmax(acc))] for task, acc in accuracy.items()}
    rng = np.random.default_rng(1)
    sel = AgreementRouter(RMS)
    labels: dict[str, list[str]] = {task: [] for task in accuracy}
    for step in range(60):
        for task, acc in accuracy.items():
            label, log = run_batch(sel, flip_scores(rng, acc, 8), task, start=8 * step)
            labels[task].append(label)
            assert log["key"] == task and log["fell_back"] == (label == FALLBACK)
    for task, seq in labels.items():
        assert seq[0] == FALLBACK  # warm-up: no counts yet
        assert set(seq[-20:]) <= {best[task], FALLBACK} and seq[-20:].count(best[task]) >= 16, (task, seq)
        estimate = sel.decide([task]).accuracies
        assert estimate is not None and max(estimate, key=estimate.__getitem__) == best[task]


def test_probe_prompts_need_every_rm_and_count_once() -> None:
    sel = AgreementRouter(RMS, probe_size=1)
    run_batch(sel, flip_scores(np.random.default_rng(0), [0.9, 0.8, 0.7], 400), "t")  # warm-up: all counted
    choices = sel.choose(["p0", "p1", "p2"], tasks=["t"] * 3)
    assert sel.decision is not None and sel.decision.rm == "rm-a"
    assert choices == [("rm-a", "rm-b", "rm-c"), ("rm-a",), ("rm-a",)]
    assert sel.groups(choices) == [("rm-a", [0, 1, 2])]
    before = sel.counts(["t"])[1].copy()
    full = {"rm-a": [1.0, 0.0], "rm-b": [1.0, 0.0], "rm-c": [1.0, 0.0]}
    sel.pairs_for(0, "p0", ["x", "y"], full, 1)
    sel.pairs_for(0, "p0", ["x", "y"], full, 1)  # asked again: counted once
    sel.pairs_for(1, "p1", ["x", "y"], full, 1)  # not a probe: not counted
    assert (sel.counts(["t"])[1] - before).tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    with pytest.raises(ValueError, match=r"prompt 0 needs every RM's scores but lacks \['rm-c'\]"):
        sel.pairs_for(0, "p0", ["x", "y"], {"rm-a": [1.0, 0.0], "rm-b": [1.0, 0.0]}, 1)


# --------------------------------------------------------------------------- the known failure
def test_shared_bias_fools_the_estimate() -> None:
    """The documented failure: rm-a and rm-b make the same errors (a shared bias, so NOT independent).
    They agree with each other on every pair and the estimate rates both near-perfect, above rm-c,
    the truly best RM."""
    rng = np.random.default_rng(2)
    scores = flip_scores(rng, [0.65, 0.65, 0.85], 4000)
    for s in scores:
        s["rm-b"] = list(s["rm-a"])
    acc = estimate_accuracies(rates_of(scores))
    assert acc is not None
    assert acc[0] > 0.95 and acc[1] > 0.95 and acc[2] < 0.75  # truth: 0.65, 0.65, 0.85

    # an exact copy ties with its twin, so the margin check falls back; a noisy copy does not tie, and
    # the router then picks a biased RM over the best one
    for s in scores:
        if rng.random() < 0.1:
            s["rm-b"] = s["rm-b"][::-1]
    sel = AgreementRouter(RMS)
    run_batch(sel, scores[:400], "t")  # the warm-up batch counts every prompt
    label, log = run_batch(sel, scores[400:408], "t", start=400)
    assert label == "rm-a" and not log["fell_back"]
    assert log["accuracies"]["rm-a"] > log["accuracies"]["rm-c"]


# --------------------------------------------------------------------------- fallback
def balanced_scores(p: float = 0.75) -> list[Scores]:
    """64 prompts whose right/wrong patterns follow independent RMs of accuracy ``p`` exactly (p = k/4)."""
    out = []
    for pattern in itertools.product([True, False], repeat=3):
        weight = round(float(64 * np.prod([p if ok else 1 - p for ok in pattern])))
        out += [{rm: [1.0, 0.0] if ok else [0.0, 1.0] for rm, ok in zip(RMS, pattern, strict=True)}] * weight
    assert len(out) == 64
    return out


def test_falls_back_to_the_score_ensemble_when_rms_are_indistinguishable() -> None:
    sel = AgreementRouter(RMS)
    label, log = run_batch(sel, balanced_scores(), None)
    assert label == FALLBACK and log["mode"] == "warmup" and log["key"] == "global"

    choices = sel.choose(["q0", "q1"])
    decision = sel.decision
    assert decision is not None and decision.mode == "fallback" and "margin" in (decision.reason or "")
    assert decision.accuracies is not None
    np.testing.assert_allclose(list(decision.accuracies.values()), [0.75] * 3, atol=1e-9)
    assert choices == [tuple(RMS)] * 2 and sel.groups(choices) == [(FALLBACK, [0, 1])]

    responses = ["x", "y", "z"]
    scores = {"rm-a": [3.0, 1.0, 2.0], "rm-b": [0.0, 5.0, 1.0], "rm-c": [10.0, 0.0, 4.0]}
    got = sel.pairs_for(0, "q0", responses, scores, max_pairs=1)
    mean_z = np.mean([standardize(np.array(scores[n])) for n in RMS], axis=0)
    assert got == make_pairs("q0", responses, mean_z, 1)
    ensemble = ScoreEnsembleSelector(RMS)
    ensemble.choose(["q0"])
    assert got == ensemble.pairs_for(0, "q0", responses, scores, 1)

    log = sel.feedback(FALLBACK, [0, 1], Losses())
    assert log["fell_back"] and log["rm"] == FALLBACK and log["counted_pairs"] == 64
    assert set(log["accuracies"]) == set(RMS)
    json.dumps(log)


def test_falls_back_when_agreement_is_below_chance_or_rms_are_two() -> None:
    sel = AgreementRouter(RMS, min_pairs=10)
    run_batch(sel, flip_scores(np.random.default_rng(3), [0.9, 0.85, 0.2], 200), "t")
    decision = sel.decide(["t"])
    assert decision.mode == "fallback" and decision.accuracies is None and "below chance" in str(decision.reason)

    pair = AgreementRouter(RMS[:2], min_pairs=10)
    run_batch(pair, flip_scores(np.random.default_rng(4), [0.9, 0.6, 0.5], 50), "t")
    assert pair.decide(["t"]).reason == "two RMs cannot be told apart by agreement alone"


# --------------------------------------------------------------------------- state, protocol, table
def test_state_round_trips_through_json() -> None:
    rng = np.random.default_rng(5)
    sel = AgreementRouter(RMS, probe_size=3, min_pairs=20, margin=0.02)
    for step in range(6):
        run_batch(sel, flip_scores(rng, [0.9, 0.7, 0.6], 8), ["t1", "t2"][step % 2], start=8 * step)
    state = sel.state_dict()
    restored = AgreementRouter(RMS)
    restored.load_state_dict(json.loads(json.dumps(state)))
    assert restored.state_dict() == state
    for task in ("t1", "t2", "new"):
        assert restored.decide([task]) == sel.decide([task])
        assert restored.choose(["p", "q", "r", "s"], tasks=[task] * 4) == sel.choose(["p", "q", "r", "s"],
                                                                                        tasks=[task] * 4)

    bad = json.loads(json.dumps(state))
    bad["counts"]["t1"]["agree"] = [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match=r"counts for key 't1' must be \(3, 3\)"):
        restored.load_state_dict(bad)
    with pytest.raises(ValueError, match="state is for RMs"):
        AgreementRouter(["rm-a", "rm-b", "rm-d"]).load_state_dict(state)


def test_is_a_selector_and_in_the_method_table() -> None:
    sel = make_selector("agree-estimate", RMS, seed=1, granularity="batch", rm_for_task={"t": "rm-a"})
    assert isinstance(sel, AgreementRouter) and isinstance(sel, Selector)
    assert sel.name == "agree-estimate" and sel.needs == frozenset()
    method = get_method("agree-estimate")
    assert not method.learns and "independent errors" in method.help
    with pytest.raises(ValueError, match="granularity must be 'batch', got 'instance'"):
        make_selector("agree-estimate", RMS, granularity="instance")


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"probe_size": 0}, ValueError, "probe_size must be >= 1, got 0"),
    ({"min_pairs": 2.5}, TypeError, "min_pairs must be an int, got float"),
    ({"margin": -0.1}, ValueError, "margin must be >= 0.0, got -0.1"),
])
def test_rejects_bad_settings(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        AgreementRouter(RMS, **kwargs)


def test_rejects_too_few_rms_and_the_fallback_label_as_an_rm() -> None:
    with pytest.raises(ValueError, match=r"give at least two, got \['rm-a'\]"):
        AgreementRouter(["rm-a"])
    with pytest.raises(ValueError, match="rename the RM called that"):
        AgreementRouter(["rm-a", FALLBACK])
