"""DPOStep in micro-batches (``grad_accum``) and on one process's share of the pairs (data parallelism): the
same numbers and the same update as one pass over every pair, within float rounding."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser_adapters.dpo import DPOLoss, DPOStep, Share, StepResult
from laser_adapters.testing import tiny_causal_lm

# responses of different lengths, so the token-averaged NLL weighs the pairs unequally
PAIRS = [
    {"prompt": "12+7=", "chosen": "19", "rejected": "21"},
    {"prompt": "Reverse abc: ", "chosen": "cba", "rejected": "abc cab"},
    {"prompt": "Is 47>38? ", "chosen": "yes, it is", "rejected": "no"},
    {"prompt": "3+4=", "chosen": "7", "rejected": "8 or 9"},
    {"prompt": "Capital of France? ", "chosen": "Paris", "rejected": "Lyon, I think"},
]
FIELDS = ("losses", "dpo_losses", "nll_losses", "chosen_rewards", "rejected_rewards")


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    path: Path = tiny_causal_lm(tmp_path_factory.mktemp("accum") / "policy", hidden=32, layers=1, seed=0)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def make_step(policy: tuple[Any, Any], *, optimizer: str = "adamw", **kwargs: Any) -> DPOStep:
    model, tok = copy.deepcopy(policy[0]), policy[1]
    opt = (torch.optim.AdamW(model.parameters(), lr=1e-2) if optimizer == "adamw"
           else torch.optim.SGD(model.parameters(), lr=0.5))
    loss = DPOLoss(beta=0.5, nll_weight=0.7, label_smoothing=0.1,
                   nll_reduction=kwargs.pop("nll_reduction", "token"))
    return DPOStep(model, tok, opt, loss, **kwargs)


def assert_same_result(a: StepResult, b: StepResult) -> None:
    for name in FIELDS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5, err_msg=name)
    for name in ("loss", "dpo_loss", "nll_loss"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-5, abs=1e-5), name


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-6) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        diff = (x - y).abs().max().item()
        assert diff <= atol, f"{name}: max difference {diff:.3g} > {atol:.3g}"


# AdamW divides by the root of its second moments, which magnifies float rounding in near-zero gradients:
# its weights agree to 1% of one step (lr 1e-2), plain SGD's to float rounding
@pytest.mark.parametrize(("optimizer", "atol"), [("sgd", 1e-6), ("adamw", 1e-4)])
@pytest.mark.parametrize("grad_accum", [2, 3, 5, 8])  # 8 > pairs: one pair per micro-batch
@pytest.mark.parametrize("nll_reduction", ["token", "sequence"])
def test_micro_batches_give_the_same_steps(policy: tuple[Any, Any], grad_accum: int, nll_reduction: str,
                                           optimizer: str, atol: float) -> None:
    whole = make_step(policy, optimizer=optimizer, nll_reduction=nll_reduction)
    parts = make_step(policy, optimizer=optimizer, nll_reduction=nll_reduction, grad_accum=grad_accum)
    for _ in range(3):  # the later steps start from the earlier steps' weights (and AdamW's moments)
        assert_same_result(whole.step(PAIRS), parts.step(PAIRS))
    assert_same_weights(whole.model, parts.model, atol)
    assert_same_result(whole.evaluate(PAIRS), parts.evaluate(PAIRS))
    assert parts.steps == whole.steps == 3


def test_micro_batches_with_gradient_clipping(policy: tuple[Any, Any]) -> None:
    whole = make_step(policy, optimizer="sgd", max_grad_norm=0.05)
    parts = make_step(policy, optimizer="sgd", max_grad_norm=0.05, grad_accum=3)
    assert_same_result(whole.step(PAIRS), parts.step(PAIRS))
    assert_same_weights(whole.model, parts.model)


def test_shares_average_to_the_whole_step(policy: tuple[Any, Any]) -> None:
    # two processes: rows 0-2 and rows 3-4 (+ one padding row); averaging their plain-SGD updates is what
    # data parallelism does with their gradients, and must give the one-process update
    shares = [Share((0, 1, 2), 3, world=2), Share((3, 4, 4), 2, world=2)]
    whole = make_step(policy, optimizer="sgd")
    before = {k: v.clone() for k, v in whole.model.state_dict().items()}
    expected = whole.step(PAIRS)
    steps = [make_step(policy, optimizer="sgd", grad_accum=2) for _ in shares]
    results = [step.step(PAIRS, share=share) for step, share in zip(steps, shares, strict=True)]
    for name in FIELDS:  # each share's rows, padding dropped, in order
        np.testing.assert_allclose(np.concatenate([getattr(r, name) for r in results]), getattr(expected, name),
                                   rtol=1e-5, atol=1e-6)
    for name in ("loss", "dpo_loss", "nll_loss"):  # the mean over processes is the whole step's
        assert np.mean([getattr(r, name) for r in results]) == pytest.approx(getattr(expected, name), rel=1e-5)
    for key, start in before.items():
        moves = [step.model.state_dict()[key] - start for step in steps]
        torch.testing.assert_close((moves[0] + moves[1]) / 2, whole.model.state_dict()[key] - start,
                                   rtol=1e-4, atol=1e-6)


def test_a_share_of_padding_only_trains_nothing(policy: tuple[Any, Any]) -> None:
    step = make_step(policy, optimizer="sgd")
    before = {k: v.clone() for k, v in step.model.state_dict().items()}
    result = step.step(PAIRS[:1], share=Share((0,), 0, world=2))  # more processes than pairs
    assert result.losses.shape == (0,) and result.loss == 0.0
    for key, value in step.model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_grad_accum_must_be_a_positive_int(policy: tuple[Any, Any]) -> None:
    with pytest.raises(ValueError, match="grad_accum"):
        make_step(policy, grad_accum=0)
