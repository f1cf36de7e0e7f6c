"""The method table: its entries are consistent, and every consumer reads it (a new entry needs nothing else)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from banditkit.policies.epsilon_greedy import EpsilonGreedy
from laser_adapters.encoders import HashingEncoder
from laser_adapters.methods import (
    BANDIT_KEYWORDS,
    COMMON_KEYWORDS,
    GOLD_RM,
    METHODS,
    Method,
    get_method,
    make_selector,
    method_names,
    methods_help,
)
from laser_adapters.selector import RMSelector, Selector

RMS = ["rm-a", "rm-b", "rm-c"]


def test_entries_are_consistent() -> None:
    for name, method in METHODS.items():
        assert method.name == name and method.help
        if method.learns:
            assert method.build is None and not method.takes
            signature = inspect.signature(method.policy)  # type: ignore[arg-type]
            for setting, keyword in {**method.settings, **{k: k for k in method.fixed}}.items():
                assert keyword in signature.parameters, (name, setting, keyword)
            assert method.contextual == bool(method.policy.contextual)  # type: ignore[union-attr]
        else:
            assert method.build is not None and not method.settings
            assert set(method.takes) <= set(COMMON_KEYWORDS)


def test_settings_are_run_config_fields_with_one_meaning() -> None:
    from laser_app.config import RunConfig

    seen: dict[str, set[str]] = {}
    for method in METHODS.values():
        for setting, keyword in method.settings.items():
            assert setting in RunConfig.model_fields, setting
            assert setting not in BANDIT_KEYWORDS
            seen.setdefault(setting, set()).add(keyword)
    assert "gamma" not in seen  # EXP3's mixing rate and LinUCB's discount no longer share a name
    assert seen["mixing"] == {"gamma"} and seen["discount"] == {"discount"}


def test_every_method_builds_a_selector() -> None:
    enc = HashingEncoder(dim=16)
    for name in method_names():
        concrete = "fixed:rm-b" if name == "fixed:NAME" else name
        rms = [*RMS, GOLD_RM] if name == GOLD_RM else RMS  # the run registers the answer checker as an RM
        sel = make_selector(concrete, rms, encoder=enc, seed=1, rm_for_task={"t": "rm-a"})
        assert isinstance(sel, Selector) and sel.name == concrete
        assert isinstance(sel, RMSelector) == get_method(concrete).learns


def test_settings_reach_the_policy() -> None:
    sel = make_selector("linucb", RMS, encoder=HashingEncoder(dim=8), alpha=0.3, ridge=2.0, discount=0.9)
    assert isinstance(sel, RMSelector)
    assert (sel.policy.alpha, sel.policy.ridge, sel.policy.discount) == (0.3, 2.0, 0.9)  # type: ignore[attr-defined]
    ucb = make_selector("ucb1", RMS, ucb_c=0.5)
    assert isinstance(ucb, RMSelector) and ucb.policy.c == 0.5  # type: ignore[attr-defined]
    eg = make_selector("egreedy", RMS, epsilon=0.2, epsilon_decay=0.01)
    assert isinstance(eg, RMSelector) and eg.policy.decay == 0.01  # type: ignore[attr-defined]
    lints = make_selector("lints", RMS, encoder=HashingEncoder(dim=8), alpha=0.7)
    assert isinstance(lints, RMSelector) and lints.policy.v == 0.7  # type: ignore[attr-defined]


def test_fixed_needs_an_rm_name() -> None:
    with pytest.raises(ValueError, match="fixed:NAME needs an RM name"):
        get_method("fixed:")
    with pytest.raises(ValueError, match="unknown RM 'NAME'"):
        make_selector("fixed:NAME", RMS)


def test_a_new_entry_reaches_config_help_compare_and_make_selector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a method is one table entry: config validation, --help, compare's parser and the factory
    all pick it up."""
    from laser_app.compare import parse_method
    from laser_app.config import RunConfig

    entry = Method("egreedy-decay", "epsilon-greedy with a decaying rate", policy=EpsilonGreedy,
                   settings={"epsilon": "epsilon"}, fixed={"decay": 0.05})
    monkeypatch.setitem(METHODS, entry.name, entry)
    assert RunConfig(policy="egreedy-decay").policy == "egreedy-decay"
    assert "egreedy-decay" in methods_help().split(";")[0]  # listed among the bandits
    method = parse_method("egreedy-decay[epsilon=0.3]")
    assert method.learns and dict(method.settings) == {"policy": "egreedy-decay", "epsilon": 0.3}
    sel = make_selector("egreedy-decay", RMS, epsilon=0.3, seed=0)
    assert isinstance(sel, RMSelector) and sel.policy.decay == 0.05  # type: ignore[attr-defined]
    choices = sel.choose(["p0", "p1"])
    assert len(choices) == 2 and np.isfinite(sel.policy.arm_scores()).sum() == len(RMS)


def test_gaussian_thompson_routes_to_the_rm_with_the_lower_loss() -> None:
    """A context-free method learns the better RM from the bandit reward (the paper's: minus the loss)."""
    from laser_adapters.bandit_rewards import StepInputs
    from laser_adapters.dpo import StepResult

    sel = make_selector("thompson-gaussian", RMS, seed=0)
    assert isinstance(sel, RMSelector)
    loss = {"rm-a": 1.2, "rm-b": 0.6, "rm-c": 1.0}  # rm-b's pairs train best
    rng = np.random.default_rng(0)
    chosen = []
    for step in range(80):
        (label, idx), = sel.groups(sel.choose([f"p{step}"]))
        sel.pairs_for(0, f"p{step}", ["a", "b"], {label: np.array([1.0, 0.0])}, 1)
        value = loss[label] + 0.05 * rng.normal()
        z = np.zeros(1)
        result = StepResult(loss=value, losses=np.array([value]), dpo_losses=np.array([value]),
                            nll_losses=z, chosen_rewards=z, rejected_rewards=z, dpo_loss=value, nll_loss=0.0)
        sel.feedback(label, idx, result, StepInputs(pair_prompt=idx))
        chosen.append(label)
    assert chosen[-30:].count("rm-b") >= 25, chosen[-30:]
