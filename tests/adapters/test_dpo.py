from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from laser_adapters.dpo import DPOLoss, DPOStep, StepResult, collate_sequences, sequence_logps, tokenize_pairs
from laser_adapters.testing import tiny_causal_lm

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

PAIRS = [
    {"prompt": "12+7=", "chosen": "19", "rejected": "21"},
    {"prompt": "Reverse abc: ", "chosen": "cba", "rejected": "abc cab"},
    {"prompt": "Is 47>38? ", "chosen": "yes", "rejected": "no"},
]
NEW_PAIR = {"prompt": "3+4=", "chosen": "7", "rejected": "8"}


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ------------------------------------------------------------------------------------------------ DPOLoss
def test_sigmoid_loss_by_hand() -> None:
    out = DPOLoss(beta=0.1)(_t(-10.0, -5.0), _t(-12.0, -4.0), _t(-11.0, -5.0), _t(-11.0, -6.0))
    # pair 0: logratios +1 and -1 -> d = 2; pair 1: 0 and +2 -> d = -2
    expected = _t(-_log_sigmoid(0.2), -_log_sigmoid(-0.2))
    torch.testing.assert_close(out.dpo_losses, expected)
    torch.testing.assert_close(out.losses, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    torch.testing.assert_close(out.chosen_rewards, _t(0.1, 0.0))
    torch.testing.assert_close(out.rejected_rewards, _t(-0.1, 0.2))
    torch.testing.assert_close(out.nll_losses, _t(0.0, 0.0))


def test_label_smoothing_is_conservative_dpo() -> None:
    eps, beta, d = 0.2, 0.5, 3.0
    out = DPOLoss(beta=beta, label_smoothing=eps)(_t(0.0), _t(-d), _t(0.0), _t(0.0))
    expected = -(1 - eps) * _log_sigmoid(beta * d) - eps * _log_sigmoid(-beta * d)
    torch.testing.assert_close(out.dpo_losses, _t(expected))


def test_nll_term_token_and_sequence_reduction() -> None:
    args = (_t(-1.0, -2.0), _t(-3.0, -2.0), _t(-2.0, -2.0), _t(-2.0, -2.0))
    nll, tokens = _t(0.5, 2.0), torch.tensor([3, 1])
    dpo = _t(-_log_sigmoid(0.2), -_log_sigmoid(0.0))
    token = DPOLoss(beta=0.1, nll_weight=0.4)(*args, nll, chosen_tokens=tokens)
    torch.testing.assert_close(token.losses, dpo + 0.4 * nll)
    token_mean_nll = (0.5 * 3 + 2.0 * 1) / 4  # TRL's "sft": mean over all chosen tokens of the batch
    torch.testing.assert_close(token.nll_loss, torch.tensor(token_mean_nll, dtype=torch.float64))
    torch.testing.assert_close(token.loss, dpo.mean() + 0.4 * token_mean_nll)
    sequence = DPOLoss(beta=0.1, nll_weight=0.4, nll_reduction="sequence")(*args, nll, chosen_tokens=tokens)
    torch.testing.assert_close(sequence.loss, sequence.losses.mean())
    torch.testing.assert_close(DPOLoss(beta=0.1, nll_weight=0.4)(*args, nll).loss, sequence.loss)


def test_loss_gradient_flows_to_policy_only() -> None:
    policy = _t(-1.0, -2.0).requires_grad_()
    out = DPOLoss(beta=1.0)(policy[:1], policy[1:], _t(-1.0), _t(-1.0))
    out.loss.backward()
    assert policy.grad is not None and policy.grad[0] < 0 < policy.grad[1]  # raise chosen, lower rejected
    assert not out.chosen_rewards.requires_grad


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"beta": 0.0}, "beta must be > 0.0"), ({"nll_weight": -1.0}, "nll_weight must be >= 0.0"),
    ({"label_smoothing": 0.5}, "label_smoothing must be < 0.5"), ({"nll_reduction": "mean"}, "nll_reduction"),
])
def test_loss_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DPOLoss(**kwargs)


def test_loss_bad_inputs() -> None:
    with pytest.raises(ValueError, match="needs chosen_nll"):
        DPOLoss(nll_weight=1.0)(_t(0.0), _t(0.0), _t(0.0), _t(0.0))
    with pytest.raises(ValueError, match=r"ref_chosen_logps has shape \(2,\), expected \(1,\)"):
        DPOLoss()(_t(0.0), _t(0.0), _t(0.0, 1.0), _t(0.0))


# -------------------------------------------------------------------------------------------- log-probs
@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("dpo") / "llama", hidden=32, layers=2, seed=0)


def _load(path: Path) -> tuple[Any, Any]:
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_sequence_logps_by_hand(model_path: Path) -> None:
    model, _ = _load(model_path)
    ids = torch.tensor([[1, 20, 21, 22, 23, 2], [1, 30, 31, 2, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    response = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]])
    logps, nll = sequence_logps(model, ids, attention, response)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits.log_softmax(-1)
    expected0 = sum(logits[0, t - 1, ids[0, t]].item() for t in (2, 3, 4, 5))
    expected1 = logits[1, 2, ids[1, 3]].item()
    torch.testing.assert_close(logps.detach(), torch.tensor([expected0, expected1]))
    torch.testing.assert_close(nll.detach(), torch.tensor([-expected0 / 4, -expected1]))


def test_tokenize_pairs_appends_eos_and_truncates(model_path: Path) -> None:
    _, tok = _load(model_path)
    tp = tokenize_pairs(tok, [{"prompt": "ab", "chosen": "c", "rejected": "dddddd"}], max_length=6)
    assert tp.prompts == [tok("ab")["input_ids"]]
    assert tp.chosen == [tok("c", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert len(tp.prompts[0]) + len(tp.rejected[0]) == 6  # keep_start: eos cut off the long response
    with pytest.raises(ValueError, match="the prompt alone has 3 tokens, at least max_length=3"):
        tokenize_pairs(tok, [{"prompt": "ab", "chosen": "c", "rejected": "d"}], max_length=3)


# ------------------------------------------------------------------------------------------------ DPOStep
def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_steps_lower_the_loss_on_their_batch(model_path: Path) -> None:
    model, tok = _load(model_path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step = DPOStep(model, tok, optimizer, DPOLoss(beta=0.1, nll_weight=1.0))
    results = [step.step(PAIRS) for _ in range(5)]
    assert all(isinstance(r, StepResult) for r in results) and step.steps == 5
    assert results[-1].loss < results[0].loss - 0.1
    after = step.evaluate(PAIRS)
    assert after.loss < results[-1].loss
    assert after.reward_accuracy == 1.0 and np.all(after.chosen_rewards > after.rejected_rewards)
    first = results[0]
    assert first.losses.shape == (3,) and first.losses.dtype == np.float64 and first.n_pairs == 3
    np.testing.assert_allclose(first.dpo_losses, math.log(2), rtol=1e-6)  # policy == reference at step 0
    np.testing.assert_allclose(first.losses, first.dpo_losses + first.nll_losses)
    assert first.loss == pytest.approx(first.dpo_loss + first.nll_loss)


def test_reference_log_probs_are_computed_once_per_pair(model_path: Path) -> None:
    model, tok = _load(model_path)
    step = DPOStep(model, tok, torch.optim.SGD(model.parameters(), lr=0.05), DPOLoss(beta=0.1))
    calls: list[int] = []
    step.reference_model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]
                                                                                          if args else 1))
    step.step(PAIRS)
    step.step(PAIRS)
    step.evaluate(PAIRS)
    assert len(calls) == 1 and step.reference_forwards == 1 and step.cache_size == 6
    step.step([*PAIRS, NEW_PAIR])  # only the new pair's two sequences are scored
    assert step.reference_forwards == 2 and step.cache_size == 8
    step.sync_reference()
    assert step.cache_size == 0
    synced = step.evaluate(PAIRS)
    assert step.reference_forwards == 3
    np.testing.assert_allclose(synced.chosen_rewards, 0.0, atol=1e-6)
    np.testing.assert_allclose(synced.rejected_rewards, 0.0, atol=1e-6)


def test_reference_is_the_policy_at_the_last_sync(model_path: Path) -> None:
    model, tok = _load(model_path)
    initial = _state(model)
    step = DPOStep(model, tok, torch.optim.SGD(model.parameters(), lr=0.5), DPOLoss(beta=0.1))
    for _ in range(3):
        step.step(PAIRS)
    trained = step.evaluate(PAIRS)
    assert np.abs(trained.chosen_rewards).max() > 1e-3
    for name, value in step.reference_model.state_dict().items():  # frozen at construction
        torch.testing.assert_close(value, initial[name])
    assert not any(p.requires_grad for p in step.reference_model.parameters())
    step.sync_reference()
    for name, value in step.reference_model.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name])
    assert step.evaluate(PAIRS).dpo_losses == pytest.approx([math.log(2)] * 3, rel=1e-6)


def test_explicit_reference_model_is_used_as_given(model_path: Path) -> None:
    model, tok = _load(model_path)
    other_path = tiny_causal_lm(model_path.parent / "other", hidden=32, seed=9)
    other = AutoModelForCausalLM.from_pretrained(other_path)
    step = DPOStep(model, tok, None, DPOLoss(beta=0.1), ref_model=other)
    assert step.reference_model is other
    assert np.abs(step.evaluate(PAIRS).chosen_rewards).max() > 1e-3  # not overwritten by the policy
    with pytest.raises(ValueError, match="built without an optimizer"):
        step.step(PAIRS)


def test_evaluate_has_no_side_effects_on_parameters(model_path: Path) -> None:
    model, tok = _load(model_path)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step = DPOStep(model, tok, optimizer, DPOLoss(beta=0.1, nll_weight=0.5))
    step.step(PAIRS)
    before, opt_state = _state(model), {k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)}
                                        for k, v in optimizer.state.items()}
    first, second = step.evaluate(PAIRS), step.evaluate(PAIRS)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())
    assert model.training and step.steps == 1
    for k, v in optimizer.state.items():
        for n, t in v.items():
            if torch.is_tensor(t):
                assert torch.equal(t, opt_state[k][n])
    assert first.loss == second.loss
    np.testing.assert_array_equal(first.losses, second.losses)


def _count_models() -> int:
    gc.collect()
    return sum(type(o) is LlamaForCausalLM for o in gc.get_objects())


def test_lora_step_uses_the_adapter_disabled_model_as_reference(model_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base, tok = _load(model_path)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    trainable = [p for p in model.parameters() if p.requires_grad]
    models_before = _count_models()
    step = DPOStep(model, tok, torch.optim.AdamW(trainable, lr=2e-2), DPOLoss(beta=0.1, nll_weight=1.0),
                   reference="adapter")
    assert _count_models() == models_before and step.reference_model is None  # no second copy
    with_copy = DPOStep(model, tok, None, reference="copy")
    assert _count_models() == models_before + 1  # what a copy would have cost
    del with_copy

    results = [step.step(PAIRS) for _ in range(4)]
    assert results[-1].loss < results[0].loss
    assert step.reference_forwards == 1
    for k, v in model.state_dict().items():  # only the adapter moved
        if k in frozen:
            assert torch.equal(v, frozen[k]), k

    out = step.evaluate(PAIRS)  # reference = base model = adapter disabled
    tp = tokenize_pairs(tok, PAIRS, max_length=256)
    batch = collate_sequences(tp.prompts, tp.chosen, pad_token_id=tok.pad_token_id)
    inputs = (batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    with torch.no_grad():
        base_chosen, _ = sequence_logps(AutoModelForCausalLM.from_pretrained(model_path), *inputs)
        with model.disable_adapter():
            disabled_chosen, _ = sequence_logps(model, *inputs)
        policy_chosen, _ = sequence_logps(model, *inputs)
    torch.testing.assert_close(disabled_chosen, base_chosen)
    np.testing.assert_allclose(out.chosen_rewards, 0.1 * (policy_chosen - base_chosen).numpy(), atol=1e-5)
    assert np.abs(out.chosen_rewards).max() > 1e-3


def test_lora_sync_reference_snapshots_the_adapter(model_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base, tok = _load(model_path)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    step = DPOStep(model, tok, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2),
                   DPOLoss(beta=0.1), reference="adapter")
    for _ in range(3):
        step.step(PAIRS)
    step.sync_reference()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable_names
    assert model.active_adapter == "default"
    synced = step.evaluate(PAIRS)
    np.testing.assert_allclose(synced.chosen_rewards, 0.0, atol=1e-6)
    np.testing.assert_allclose(synced.dpo_losses, math.log(2), rtol=1e-6)
    after = step.step(PAIRS)  # training goes on against the snapshot
    assert step.evaluate(PAIRS).loss < after.loss
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable_names


def test_step_errors(model_path: Path) -> None:
    model, tok = _load(model_path)
    step = DPOStep(model, tok, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="pairs is empty"):
        step.step([])
    with pytest.raises(ValueError, match="pair 1 is missing key 'rejected'"):
        step.step([PAIRS[0], {"prompt": "p", "chosen": "c"}])
    with pytest.raises(TypeError, match="pairs must be a list of dicts"):
        step.evaluate(PAIRS[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference='adapter' needs a peft model"):
        DPOStep(model, tok, None, reference="adapter")
    with pytest.raises(ValueError, match="needs the policy model"):
        DPOStep(None, tok, None)
    with pytest.raises(ValueError, match="not the policy itself"):
        DPOStep(model, tok, None, ref_model=model)
    with pytest.raises(ValueError, match="reference must be 'copy' or 'adapter'"):
        DPOStep(model, tok, None, reference="frozen")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss must be a DPOLoss"):
        DPOStep(model, tok, None, torch.nn.MSELoss())  # type: ignore[arg-type]
    long_prompt = [{"prompt": "x" * 40, "chosen": "a", "rejected": "b"}]
    with pytest.raises(ValueError, match="raise max_length"):
        DPOStep(model, tok, None, max_length=16).evaluate(long_prompt)
