"""RMSelector, the normalization scopes, the bandit rewards and the counterfactual diagnostics."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from banditkit.normalizers import QuantileNormalizer
from banditkit.policies.exp3 import EXP3
from banditkit.policies.linucb import LinUCB
from laser_adapters.bandit_rewards import BANDIT_REWARDS, RewardInputs, StepInputs, get_bandit_reward, get_reward
from laser_adapters.counterfactual import counterfactual_losses, counterfactual_results, counterfactual_rewards
from laser_adapters.dpo import StepResult
from laser_adapters.encoders import HashingEncoder
from laser_adapters.scoped_normalization import ContextClusters, ScopedNormalizer
from laser_adapters.selector import RMSelector, Selector

RMS = ["rm-a", "rm-b", "rm-c"]
DIM = 32


def step_result(dpo: list[float], nll: list[float]) -> StepResult:
    d, n = np.array(dpo, dtype=np.float64), np.array(nll, dtype=np.float64)
    z = np.zeros_like(d)
    return StepResult(loss=float((d + n).mean()) if len(d) else float("nan"), losses=d + n, dpo_losses=d,
                      nll_losses=n, chosen_rewards=z, rejected_rewards=z,
                      dpo_loss=float(d.mean()) if len(d) else float("nan"),
                      nll_loss=float(n.mean()) if len(n) else float("nan"))


def math_prompt(rng: np.random.Generator) -> str:
    return f"What is {int(rng.integers(10, 99))} plus {int(rng.integers(10, 99))}? Answer with a number."


def reverse_prompt(rng: np.random.Generator) -> str:
    word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(3, 6))))
    return f"Reverse the letters: {word}"


FAMILIES = {"math": math_prompt, "reverse": reverse_prompt}


def make_selector(**kw: Any) -> RMSelector:
    enc = HashingEncoder(dim=DIM)
    return RMSelector(LinUCB(len(RMS), DIM, alpha=0.1, seed=0), enc, RMS, **kw)


def run_pairs(sel: RMSelector, prompts: list[str], choices: list[tuple[str, ...]]) -> list[int]:
    """Form pairs for every prompt (3 responses, scores from the routed RM); returns pairs per prompt."""
    counts = []
    for i, (p, needed) in enumerate(zip(prompts, choices, strict=True)):
        scores = {rm: np.array([1.0, 0.0, 0.5]) + 0.1 * k for k, rm in enumerate(needed)}
        counts.append(len(sel.pairs_for(i, p, ["x", "y", "z"], scores, max_pairs=1).pairs))
    return counts


# --------------------------------------------------------------------------- protocol, batch, instance
def test_rm_selector_is_a_selector() -> None:
    assert isinstance(make_selector(), Selector)


def test_batch_granularity_choose_groups_feedback() -> None:
    sel = make_selector()
    prompts = ["What is 2+3?", "What is 7+1?", "Reverse: abc"]
    choices = sel.choose(prompts)
    assert len(choices) == 3 and len(set(choices)) == 1 and len(choices[0]) == 1
    rm = choices[0][0]
    assert sel.groups(choices) == [(rm, [0, 1, 2])]
    assert run_pairs(sel, prompts, choices) == [1, 1, 1]

    before = copy.deepcopy(sel.policy.state_dict())
    log = sel.feedback(rm, [0, 1, 2], step_result([0.7, 0.69, 0.71], [0.3, 0.2, 0.1]))
    assert log["rm"] == rm and log["arm"] == RMS.index(rm)
    assert log["raw_reward"] == pytest.approx(-0.9)
    assert log["normalized_reward"] == 0.5  # one reward in the history: degenerate, maps to 0.5
    assert log["policy_reward"] == -0.25  # minus the default baseline 0.75 for a contextual policy
    assert log["scope_key"] == "global"

    # the policy got exactly update(arm, 0.5 - 0.75, mean context)
    ref = LinUCB(len(RMS), DIM, alpha=0.1, seed=0)
    ref.load_state_dict(before)
    ref.update(RMS.index(rm), -0.25, HashingEncoder(dim=DIM).encode(prompts).mean(axis=0))
    np.testing.assert_equal(sel.policy.state_dict()["state"], ref.state_dict()["state"])


def test_instance_granularity_routes_groups_and_updates_per_prompt() -> None:
    sel = make_selector(granularity="instance")
    enc = HashingEncoder(dim=DIM)
    # teach the policy that rm-b is best for math and rm-c for reversal, so the batch splits
    rng = np.random.default_rng(0)
    for _ in range(5):
        ps = [math_prompt(rng), reverse_prompt(rng)]
        sel.policy.update_batch([1, 2, 0, 0], [1.0, 1.0, 0.0, 0.0], enc.encode(ps + ps))
    prompts = [math_prompt(rng), reverse_prompt(rng), math_prompt(rng), reverse_prompt(rng)]
    choices = sel.choose(prompts)
    assert [c[0] for c in choices] == ["rm-b", "rm-c", "rm-b", "rm-c"]
    groups = sel.groups(choices)
    assert groups == [("rm-b", [0, 2]), ("rm-c", [1, 3])]
    run_pairs(sel, prompts, choices)

    before = copy.deepcopy(sel.policy.state_dict())
    # group rm-b: prompt 0 has two pairs, prompt 2 has one
    result = step_result([0.7, 0.7, 0.6], [0.4, 0.2, 0.1])
    log = sel.feedback("rm-b", [0, 2], result, StepInputs(pair_prompt=[0, 0, 2]))
    per = log["per_prompt"]
    assert [p["index"] for p in per] == [0, 2]
    assert per[0]["raw_reward"] == pytest.approx(-1.0) and per[1]["raw_reward"] == pytest.approx(-0.7)
    assert log["raw_reward"] == pytest.approx(-0.85)
    normed = [p["normalized_reward"] for p in per]
    assert normed == [0.5, 1.0]  # the second is the best of a two-value history
    ref = LinUCB(len(RMS), DIM, alpha=0.1, seed=0)
    ref.load_state_dict(before)
    ref.update_batch([1, 1], np.array(normed) - 0.75, enc.encode([prompts[0], prompts[2]]))
    np.testing.assert_equal(sel.policy.state_dict()["state"], ref.state_dict()["state"])

    # a prompt of the group without pairs is skipped, not rewarded
    log = sel.feedback("rm-c", [1, 3], step_result([0.7], [0.2]), StepInputs(pair_prompt=[3]))
    assert log["skipped_prompts"] == [1] and [p["index"] for p in log["per_prompt"]] == [3]


def test_instance_feedback_input_errors() -> None:
    sel = make_selector(granularity="instance")
    prompts = ["a b c", "d e f"]
    choices = sel.choose(prompts)
    label, idx = sel.groups(choices)[0]
    res = step_result([0.7], [0.1])
    with pytest.raises(ValueError, match="pair_prompt"):
        sel.feedback(label, idx, res)
    with pytest.raises(ValueError, match="has 2 entries but the step has 1 pairs"):
        sel.feedback(label, idx, res, StepInputs(pair_prompt=[0, 0]))
    with pytest.raises(ValueError, match="outside this group"):
        sel.feedback(label, idx, res, StepInputs(pair_prompt=[7]))
    other = next(rm for rm in RMS if rm != label)
    with pytest.raises(ValueError, match="does not match the RM chosen"):
        sel.feedback(other, idx, res, StepInputs(pair_prompt=[idx[0]]))
    with pytest.raises(ValueError, match="no pairs"):
        sel.feedback(label, idx, step_result([], []), StepInputs(pair_prompt=[]))


def test_pairs_for_and_groups_input_errors() -> None:
    sel = make_selector()
    with pytest.raises(ValueError, match="call choose"):
        sel.groups([])
    choices = sel.choose(["p0", "p1"])
    rm = choices[0][0]
    with pytest.raises(ValueError, match="out of range"):
        sel.pairs_for(5, "p0", ["a", "b"], {rm: [1.0, 0.0]}, 1)
    with pytest.raises(ValueError, match="lack RM"):
        sel.pairs_for(0, "p0", ["a", "b"], {"nope": [1.0, 0.0]}, 1)
    with pytest.raises(ValueError, match="pass the index of the prompt"):
        sel.pairs_for(0, "p1", ["a", "b"], {rm: [1.0, 0.0]}, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        sel.pairs_for(0, "p0", ["a", "b"], {rm: [np.nan, 0.0]}, 1)
    with pytest.raises(ValueError, match="do not match the last choose"):
        sel.groups(choices[:1])
    with pytest.raises(ValueError, match="empty batch"):
        sel.choose([])
    with pytest.raises(ValueError, match="task labels"):
        sel.choose(["a", "b"], tasks=["t"])
    with pytest.raises(TypeError, match="single string"):
        sel.choose("a prompt")


def test_constructor_errors_name_the_fix() -> None:
    enc = HashingEncoder(dim=DIM)
    with pytest.raises(ValueError, match=r"unknown bandit reward 'bleu'; valid names: dpo\+nll"):
        make_selector(reward="bleu")
    with pytest.raises(ValueError, match="scope must be one of"):
        make_selector(scope="local")
    with pytest.raises(ValueError, match="granularity must be one of"):
        make_selector(granularity="token")
    with pytest.raises(ValueError, match="unknown normalizer 'rank'"):
        make_selector(normalizer="rank")
    with pytest.raises(ValueError, match="policy has 2 arms but there are 3 RMs"):
        RMSelector(LinUCB(2, DIM), enc, RMS)
    with pytest.raises(ValueError, match="encoder dim 32 != policy dim 8"):
        RMSelector(LinUCB(3, 8), enc, RMS)
    with pytest.raises(ValueError, match="contextual: pass a context encoder"):
        RMSelector(LinUCB(3, DIM), None, RMS)
    with pytest.raises(ValueError, match="duplicate RM names"):
        RMSelector(LinUCB(3, DIM), enc, ["a", "a", "b"])
    with pytest.raises(ValueError, match="probe_size >= 1"):
        make_selector(reward="agreement", probe_size=0)


def test_context_free_policy_needs_no_encoder() -> None:
    sel = RMSelector(EXP3(3, gamma=0.2, seed=1), None, RMS, granularity="instance")
    choices = sel.choose(["p0", "p1", "p2", "p3"])
    for label, idx in sel.groups(choices):
        log = sel.feedback(label, idx, step_result([0.7] * len(idx), [0.1] * len(idx)), StepInputs(pair_prompt=idx))
        assert log["rm"] == label and log["scope_key"] == "global"


# --------------------------------------------------------------------------- learning to route
def _routing_run(sel: RMSelector, best: dict[str, str], n_steps: int, *, offsets: dict[str, float],
                 batch: int = 4, seed: int = 0, tasks: bool = False) -> list[bool]:
    """Feed synthetic losses: the family's best RM gives 0.3 lower loss. Returns per-decision correctness."""
    rng = np.random.default_rng(seed)
    hits: list[bool] = []
    fams = list(FAMILIES)
    for _ in range(n_steps):
        if sel.granularity == "batch":
            fam = [fams[int(rng.integers(2))]] * batch
        else:
            fam = [fams[int(a)] for a in rng.integers(2, size=batch)]
        prompts = [FAMILIES[f](rng) for f in fam]
        choices = sel.choose(prompts, tasks=fam if tasks else None)
        for label, idx in sel.groups(choices):
            losses = [offsets[fam[i]] + (0.0 if best[fam[i]] == label else 0.3) + 0.05 * rng.normal()
                      for i in idx]
            hits.extend(best[fam[i]] == label for i in idx)
            sel.feedback(label, idx, step_result([0.69] * len(idx), [v - 0.69 for v in losses]),
                         StepInputs(pair_prompt=idx))
    return hits


@pytest.mark.parametrize("granularity", ["batch", "instance"])
def test_linucb_learns_to_route_families_to_their_rms(granularity: str) -> None:
    sel = make_selector(granularity=granularity)
    best = {"math": "rm-b", "reverse": "rm-c"}
    hits = _routing_run(sel, best, 150, offsets={"math": 1.0, "reverse": 1.0})
    tail = hits[-len(hits) // 4:]
    assert np.mean(tail) >= 0.95, np.mean(tail)
    assert np.mean(hits[: len(hits) // 10]) < np.mean(tail)


def test_paper_reward_baseline_locks_in_at_small_alpha() -> None:
    """Uncentered [0, 1] rewards (reward_baseline=0, the paper) let the first arm played win at alpha=0.1;
    the default baseline (0.75 for contextual policies) makes untried arms worth trying."""
    best = {"math": "rm-b", "reverse": "rm-c"}
    offsets = {"math": 1.0, "reverse": 1.0}
    paper = make_selector(reward_baseline=0.0)
    hits = _routing_run(paper, best, 150, offsets=offsets)
    assert np.mean(hits[-150:]) < 0.5
    default = make_selector()
    assert default.reward_baseline == 0.75
    hits = _routing_run(default, best, 150, offsets=offsets)
    assert np.mean(hits[-150:]) >= 0.95


def test_per_task_scope_routes_despite_task_offsets() -> None:
    """Task offsets (0.6) twice the RM gap (0.3): global quantiles blur the RMs' differences, per-task
    histories keep them visible."""
    best = {"math": "rm-b", "reverse": "rm-c"}
    offsets = {"math": 1.6, "reverse": 1.0}
    tails: dict[str, list[float]] = {"global": [], "per-context": []}
    for scope in tails:
        for seed in range(3):
            sel = RMSelector(LinUCB(len(RMS), DIM, alpha=0.1, seed=seed), HashingEncoder(dim=DIM), RMS,
                             scope=scope)
            hits = _routing_run(sel, best, 150, offsets=offsets, tasks=True, seed=seed)
            tails[scope].append(float(np.mean(hits[-150:])))
        if scope == "per-context":
            assert set(sel.normalization.normalizers) == {"task:math", "task:reverse"}
    assert min(tails["per-context"]) >= 0.9, tails
    assert np.mean(tails["global"]) < 0.8, tails


# --------------------------------------------------------------------------- normalization scope
def test_global_vs_per_task_scope_keys_and_clipping() -> None:
    """Task offsets (as measured: -1.42, -1.20, -0.98) larger than the RM effect (+-0.17): global quantiles
    clip most steps of the extreme tasks and shrink the good-vs-bad RM gap; per-task histories do not."""
    rng = np.random.default_rng(3)
    offsets = {"math": -1.42, "yesno": -1.20, "compare": -0.98}
    tasks = [list(offsets)[i % 3] for i in range(300)]
    good = rng.random(300) < 0.5
    rewards = [offsets[t] + (0.17 if g else -0.17) + 0.05 * rng.normal()
               for t, g in zip(tasks, good, strict=True)]
    out, keys = {}, {}
    for scope in ("global", "per-context"):
        norm = ScopedNormalizer(QuantileNormalizer, scope=scope)
        steps = [norm.step([r], tasks=[t]) for r, t in zip(rewards, tasks, strict=True)]
        out[scope] = np.array([v[0] for v, _ in steps])
        keys[scope] = {k[0] for _, k in steps}
    assert keys == {"global": {"global"}, "per-context": {"task:math", "task:yesno", "task:compare"}}
    is_task = {t: np.array([x == t for x in tasks]) & (np.arange(300) >= 30) for t in offsets}

    def clipped(scope: str, task: str, value: float) -> float:
        return float(np.mean(out[scope][is_task[task]] == value))

    def gap(scope: str, task: str) -> float:
        v = out[scope]
        return float(v[is_task[task] & good].mean() - v[is_task[task] & ~good].mean())

    assert clipped("global", "math", 0.0) > 0.5 and clipped("global", "compare", 1.0) > 0.4
    assert all(clipped("per-context", t, v) < 0.3 for t in offsets for v in (0.0, 1.0))
    assert gap("per-context", "math") > gap("global", "math") + 0.3
    assert gap("per-context", "compare") > gap("global", "compare") + 0.3


def test_mixed_task_batch_key_joins_labels() -> None:
    sel = make_selector(scope="per-context")
    prompts = ["a", "b", "c"]
    choices = sel.choose(prompts, tasks=["yesno", "math", "math"])
    run_pairs(sel, prompts, choices)
    label, idx = sel.groups(choices)[0]
    log = sel.feedback(label, idx, step_result([0.7], [0.2]))
    assert log["scope_key"] == "task:math+yesno"


def test_per_context_scope_clusters_unlabelled_contexts() -> None:
    sel = make_selector(scope="per-context", n_clusters=2, cluster_warmup=6)
    rng = np.random.default_rng(1)
    keys: list[tuple[str, str]] = []
    for step in range(30):
        fam = list(FAMILIES)[step % 2]
        prompts = [FAMILIES[fam](rng) for _ in range(4)]
        choices = sel.choose(prompts)
        label, idx = sel.groups(choices)[0]
        log = sel.feedback(label, idx, step_result([0.7], [0.3 + 0.01 * step]))
        keys.append((fam, log["scope_key"]))
    assert all(k == "warmup" for _, k in keys[:6])
    after = keys[6:]
    math_keys = {k for f, k in after if f == "math"}
    rev_keys = {k for f, k in after if f == "reverse"}
    assert len(math_keys) == 1 and len(rev_keys) == 1 and math_keys != rev_keys
    assert all(k.startswith("cluster:") for k in math_keys | rev_keys)
    assert "warmup" not in sel.normalization.normalizers
    # each cluster's history was seeded with its warm-up rewards (3 each) plus 12 later ones
    for key in math_keys | rev_keys:
        assert len(sel.normalization.normalizers[key].state_dict()["state"]["history"]) == 15


def test_context_clusters_state_round_trip() -> None:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.1, (6, 3)), rng.normal(3, 0.1, (6, 3))]
    a = ContextClusters(2, seed=4)
    a.assign(x)
    labels = a.fit()
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[-1]
    b = ContextClusters(2, seed=99)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    y = rng.normal(1.5, 2.0, (20, 3))
    assert a.assign(y) == b.assign(y)
    np.testing.assert_array_equal(a.centroids, b.centroids)


# --------------------------------------------------------------------------- rewards
def _one_step(reward: str, extra: dict[str, Any], *, granularity: str = "batch", probe_size: int = 2,
              scores: dict[str, list[float]] | None = None) -> tuple[RMSelector, dict[str, Any]]:
    sel = make_selector(reward=reward, granularity=granularity, probe_size=probe_size)
    prompts = ["q0", "q1", "q2"]
    choices = sel.choose(prompts)
    for i, (p, needed) in enumerate(zip(prompts, choices, strict=True)):
        s = scores or {rm: [0.0, 1.0, 0.5] for rm in RMS}
        sel.pairs_for(i, p, ["x", "y", "z"], {rm: np.array(s[rm]) for rm in needed}, max_pairs=1)
    label, idx = sel.groups(choices)[0]
    result = step_result([0.7, 0.6, 0.65], [0.3, 0.2, 0.1])
    return sel, sel.feedback(label, idx, result, StepInputs(pair_prompt=idx, **extra))


def test_registry_names_and_docstrings() -> None:
    assert list(BANDIT_REWARDS) == ["dpo+nll", "dpo", "nll", "loss-decrease", "agreement", "gold",
                                    "dev-gold", "consistency"]
    assert all(r.fn.__doc__ for r in BANDIT_REWARDS.values())
    assert {n: r.labels for n, r in BANDIT_REWARDS.items() if r.reads_labels} == {"gold": "all", "dev-gold": "dev"}
    names = r"valid names: dpo\+nll, dpo, nll, loss-decrease, agreement, gold, dev-gold, consistency"
    with pytest.raises(ValueError, match=names):
        get_reward("reward")


@pytest.mark.parametrize(("reward", "expected"), [("dpo+nll", -(1.0 + 0.8 + 0.75) / 3),
                                                  ("dpo", -0.65), ("nll", -0.2)])
def test_loss_rewards(reward: str, expected: float) -> None:
    _, log = _one_step(reward, {})
    assert log["raw_reward"] == pytest.approx(expected)


def test_loss_rewards_per_prompt_under_instance() -> None:
    _, log = _one_step("nll", {}, granularity="instance")
    # all three prompts share one RM before any learning (LinUCB ties go to the first arm)
    assert [p["raw_reward"] for p in log["per_prompt"]] == pytest.approx([-0.3, -0.2, -0.1])


def test_loss_decrease_reward() -> None:
    _, log = _one_step("loss-decrease", {"loss_after": 0.5})
    assert log["raw_reward"] == pytest.approx((1.0 + 0.8 + 0.75) / 3 - 0.5)
    after = step_result([0.6, 0.6, 0.6], [0.3, 0.1, 0.0])
    _, log = _one_step("loss-decrease", {"loss_after": after}, granularity="instance")
    assert [p["raw_reward"] for p in log["per_prompt"]] == pytest.approx([0.1, 0.1, 0.15])
    with pytest.raises(ValueError, match="needs loss_after:"):
        _one_step("loss-decrease", {})
    with pytest.raises(ValueError, match="per-pair losses"):
        _one_step("loss-decrease", {"loss_after": 0.5}, granularity="instance")


def test_agreement_reward_probes_every_rm() -> None:
    sel = make_selector(reward="agreement", probe_size=2)
    choices = sel.choose(["q0", "q1", "q2"])
    rm = choices[0][0]
    assert choices[0] == (rm, *[n for n in RMS if n != rm]) and choices[1] == choices[0]
    assert choices[2] == (rm,)
    # rm orders x > z > y; rm-b agrees on all 3 orderings of prompt 0, the other RM on 1 of 3;
    # prompt 1: the chosen RM ties x and y (not counted), so only 2 pairs count
    others = [n for n in RMS if n != rm]
    probe = {0: {rm: [2.0, 0.0, 1.0], others[0]: [5.0, 1.0, 3.0], others[1]: [0.0, 1.0, 2.0]},
             1: {rm: [1.0, 1.0, 0.0], others[0]: [1.0, 2.0, 0.0], others[1]: [0.0, 2.0, 1.0]}}
    for i, p in enumerate(["q0", "q1", "q2"]):
        sel.pairs_for(i, p, ["x", "y", "z"], {rm: np.array([1.0, 0.0, 0.5])}, max_pairs=1)
    label, idx = sel.groups(choices)[0]
    log = sel.feedback(label, idx, step_result([0.7], [0.2]), StepInputs(scores=probe))
    # prompt 0: (3 + 1) / 6 over 3 pairs; prompt 1: pairs (x,z), (y,z): others agree 2 + 1 of 4
    expected = (4 / 6 * 3 + 3 / 4 * 2) / 5
    assert log["raw_reward"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs scores:"):
        sel.feedback(label, idx, step_result([0.7], [0.2]))


def test_agreement_reward_direct() -> None:
    res = step_result([0.7], [0.2])
    fn = get_reward("agreement")
    scores = [{"a": [1.0, 0.0], "b": [0.0, 1.0]}, None, {"a": [2.0, 1.0], "b": [3.0, 0.0]}]
    assert fn(RewardInputs(result=res, rm="a", rm_names=["a", "b"], prompt_indices=[0, 1, 2],
                           step=StepInputs(scores=scores))) == 0.5
    assert fn(RewardInputs(result=res, rm="a", rm_names=["a", "b"], prompt_indices=[2],
                           step=StepInputs(scores=scores))) == 1.0
    with pytest.raises(ValueError, match="no probe prompt scored by 'c'"):
        fn(RewardInputs(result=res, rm="c", rm_names=["a", "b", "c"], step=StepInputs(scores=scores)))


def test_heldout_reward_uses_the_chosen_rms_top_response() -> None:
    # the routed RM ranks y top in every prompt (scores [0, 1, 0.5])
    correct = [[False, True, False], [True, False, False], [False, True, True]]
    _, log = _one_step("gold", {"correct": correct})
    assert log["raw_reward"] == pytest.approx(2 / 3)
    _, log = _one_step("gold", {"correct": {1: [False, True, False]}}, granularity="instance")
    assert [p["raw_reward"] for p in log["per_prompt"]] == [1.0]
    assert log["skipped_prompts"] == [0, 2]  # no answers to check
    with pytest.raises(ValueError, match="needs correct:"):
        _one_step("gold", {})
    with pytest.raises(ValueError, match="has 2 entries but 3 responses"):
        _one_step("gold", {"correct": [[True, False]] * 3})


# --------------------------------------------------------------------------- state
@pytest.mark.parametrize(("granularity", "scope"), [("batch", "per-context"), ("instance", "global")])
def test_state_dict_round_trip_continues_identically(granularity: str, scope: str) -> None:
    kw = {"granularity": granularity, "scope": scope, "n_clusters": 2, "cluster_warmup": 3}
    a = make_selector(**kw)
    best = {"math": "rm-b", "reverse": "rm-c"}
    _routing_run(a, best, 10, offsets={"math": 1.0, "reverse": 1.0}, seed=5)
    state = a.state_dict()
    json.dumps({k: v for k, v in state.items() if k != "policy"})  # selector's own state is plain data
    b = make_selector(**kw)
    b.load_state_dict(copy.deepcopy(state))
    ha = _routing_run(a, best, 10, offsets={"math": 1.0, "reverse": 1.0}, seed=6)
    hb = _routing_run(b, best, 10, offsets={"math": 1.0, "reverse": 1.0}, seed=6)
    assert ha == hb
    np.testing.assert_equal(a.state_dict(), b.state_dict())


def test_load_state_dict_rejects_other_rms() -> None:
    state = make_selector().state_dict()
    other = RMSelector(LinUCB(2, DIM), HashingEncoder(dim=DIM), ["x", "y"])
    with pytest.raises(ValueError, match="state is for RMs"):
        other.load_state_dict(state)


def test_new_iteration() -> None:
    sel = make_selector()
    sel.new_iteration(2)
    choices = sel.choose(["p"])
    sel.pairs_for(0, "p", ["a", "b"], {choices[0][0]: [1.0, 0.0]}, 1)
    assert sel.feedback(choices[0][0], [0], step_result([0.7], [0.1]))["iteration"] == 2
    with pytest.raises(ValueError, match="iteration must be an int >= 0"):
        sel.new_iteration(-1)


# --------------------------------------------------------------------------- diagnostics
def _evaluate(pairs: list[dict[str, Any]]) -> StepResult:
    """A stand-in for DPOStep.evaluate: loss = share of pairs whose chosen response is wrong."""
    wrong = [1.0 if p["chosen"] == "wrong" else 0.0 for p in pairs]
    return step_result([0.69] * len(pairs), wrong)


def test_counterfactual_losses_per_rm() -> None:
    samples = [("1+1=", ["2", "wrong", "3"]), ("2+2=", ["4", "wrong", "5"])]
    scores = {"good": [[1.0, 0.0, 0.5], [2.0, 0.0, 1.0]],
              "bad": [[0.0, 1.0, 0.5], [0.0, 1.0, 0.5]],
              "const": [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]}
    out = counterfactual_losses(samples, scores, _evaluate, max_pairs=1)
    assert out["good"] == pytest.approx(0.69) and out["bad"] == pytest.approx(1.69)
    assert np.isnan(out["const"])
    res = counterfactual_results(samples, scores, _evaluate, max_pairs=1)
    assert res["const"] is None and res["bad"] is not None and len(res["bad"].losses) == 2
    with pytest.raises(ValueError, match="scores for 1 prompts but there are 2"):
        counterfactual_losses(samples, {"good": [[1.0, 0.0, 0.5]]}, _evaluate, max_pairs=1)


def test_counterfactual_rewards_apply_the_bandit_reward_to_each_rms_pairs() -> None:
    samples = [("1+1=", ["2", "wrong", "3"]), ("2+2=", ["4", "wrong", "4"])]
    scores = {"good": [[1.0, 0.0, 0.5], [2.0, 0.0, 1.0]],
              "bad": [[0.0, 1.0, 0.5], [0.0, 1.0, 0.5]],
              "const": [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]}
    res = counterfactual_results(samples, scores, _evaluate, max_pairs=1)
    correct = [[True, False, False], [True, False, True]]
    responses = [r for _, r in samples]
    step = StepInputs(correct=correct, responses=responses)
    gold = counterfactual_rewards(res, scores, get_bandit_reward("gold"), step)
    assert gold == {"good": 1.0, "bad": 0.0, "const": None}  # no pair formed: no reward
    loss = counterfactual_rewards(res, scores, get_bandit_reward("dpo+nll"), step)
    assert loss["good"] == pytest.approx(-0.69) and loss["bad"] == pytest.approx(-1.69)
    # the majority answers are all-different (1/3 each) and "4" (2 of 3)
    consistency = counterfactual_rewards(res, scores, get_bandit_reward("consistency"), step)
    assert consistency["good"] == pytest.approx((1 / 3 + 1) / 2) and consistency["bad"] == pytest.approx(1 / 6)
    # a reward that needs a step taken (or dev probes) has no counterfactual
    assert counterfactual_rewards(res, scores, get_bandit_reward("loss-decrease"), step) == dict.fromkeys(scores)
    assert counterfactual_rewards(res, scores, get_bandit_reward("dev-gold"), step) == dict.fromkeys(scores)


@pytest.mark.slow
def test_counterfactual_losses_with_a_real_dpo_step(tmp_path: Any) -> None:
    """Each RM's counterfactual loss is DPOStep.evaluate on its pairs; the policy is left untouched."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser_adapters.dpo import DPOLoss, DPOStep
    from laser_adapters.pairs import make_pairs
    from laser_adapters.testing import tiny_causal_lm

    path = tiny_causal_lm(tmp_path, hidden=16)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    dpo = DPOStep(model, tok, torch.optim.SGD(model.parameters(), lr=0.1), DPOLoss(beta=0.1, nll_weight=1.0))
    before = [p.detach().clone() for p in model.parameters()]
    samples = [("2+2=", ["4", "5", "22"]), ("3+4=", ["7", "8", "34"])]
    scores = {"right": [[1.0, 0.0, 0.5], [1.0, 0.0, 0.5]], "long": [[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]]}
    out = counterfactual_losses(samples, scores, dpo.evaluate, max_pairs=1)
    for rm, per_prompt in scores.items():
        pairs = [pr for (p, r), s in zip(samples, per_prompt, strict=True)
                 for pr in make_pairs(p, r, np.array(s), 1).pairs]
        assert out[rm] == pytest.approx(dpo.evaluate(pairs).loss)
    assert out["right"] != out["long"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_dev_gold_reward_is_the_probe_share_of_the_units_prompts() -> None:
    _, log = _one_step("dev-gold", {"dev_probe": {0: 1.0, 1: 0.5, 2: 0.0}})
    assert log["raw_reward"] == pytest.approx(0.5)
    _, log = _one_step("dev-gold", {"dev_probe": [1.0, None, 0.5]})  # a prompt without a probe is left out
    assert log["raw_reward"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="needs dev_probe:"):
        _one_step("dev-gold", {})
    with pytest.raises(ValueError, match=r"shares in \[0, 1\]"):
        _one_step("dev-gold", {"dev_probe": [2.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="found no dev probe"):  # NoRewardSignal: skipped under instance
        _one_step("dev-gold", {"dev_probe": {}})


def test_consistency_reward_is_agreement_with_the_majority_answer() -> None:
    # the routed RM ranks the second response top in every prompt (scores [0, 1, 0.5])
    responses = [[" 3+4=7", " 2+5=7", " 9"],  # top gives 7, the majority answer: 1
                 [" yes", " no", " yes"],  # top says no, the majority yes: 0
                 [" A", " B", " C"]]  # a three-way tie, top among them: 1/3
    _, log = _one_step("consistency", {"responses": responses})
    assert log["raw_reward"] == pytest.approx((1 + 0 + 1 / 3) / 3)
    with pytest.raises(ValueError, match="needs responses:"):
        _one_step("consistency", {})
