"""DPOLoss + the DPOStep's tokenization and log-probs against TRL 1.16's ``DPOTrainer.compute_loss``.

TRL has no standalone DPO loss, so one trainer is built for the module and used as the oracle: the same
batch goes through TRL's own dataset preparation, collator and ``compute_loss``, and through ``DPOStep``.
The policy is moved away from the reference first (the same perturbation on both sides), otherwise every
DPO term would be log 2 whatever the log-probs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from laser_adapters.dpo import DPOLoss, DPOStep, collate_sequences, tokenize_pairs
from laser_adapters.testing import tiny_causal_lm

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

MAX_LENGTH = 48
PAIRS = [
    {"prompt": "What is 12+7? ", "chosen": "19", "rejected": "21 or maybe 20"},
    {"prompt": "Reverse 'abc': ", "chosen": "cba", "rejected": "abc"},
    {"prompt": "Is 47>38? ", "chosen": "yes, 47 is larger", "rejected": "no"},
    # Long enough that TRL's keep_start truncation cuts the rejected response.
    {"prompt": "Spell the word banana: ", "chosen": "b-a-n-a-n-a",
     "rejected": "b a n a n a n a n a n a n a n a n a n a n a n a"},
]
# (TRL loss types, TRL loss weights, beta)
CASES = [
    (["sigmoid"], [1.0], 0.1),
    (["sigmoid", "sft"], [1.0, 1.0], 0.1),
    (["sigmoid", "sft"], [1.0, 0.3], 0.5),
]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("trl")
    path = tiny_causal_lm(root / "policy", hidden=32, layers=2, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = DPOConfig(
        output_dir=str(root / "out"), use_cpu=True, bf16=False, activation_checkpointing=False,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        per_device_train_batch_size=len(PAIRS), max_length=MAX_LENGTH, beta=0.1,
        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], seed=0,
    )
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=config,
                         train_dataset=Dataset.from_list(PAIRS), processing_class=tokenizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    policy = AutoModelForCausalLM.from_pretrained(path)
    policy.load_state_dict(trainer.model.state_dict())
    reference = AutoModelForCausalLM.from_pretrained(path)  # TRL reloads its reference from the same folder
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    return {"trainer": trainer, "policy": policy, "reference": reference, "tokenizer": tokenizer,
            "batch": trainer.data_collator(rows), "rows": rows}


def test_tokenization_and_collation_match_trl(oracle: dict[str, Any]) -> None:
    tok = tokenize_pairs(oracle["tokenizer"], PAIRS, max_length=None)
    for row, p, c, r in zip(oracle["rows"], tok.prompts, tok.chosen, tok.rejected, strict=True):
        assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (p, c, r)

    tok = tokenize_pairs(oracle["tokenizer"], PAIRS, max_length=MAX_LENGTH)
    ours = collate_sequences(tok.prompts * 2, tok.chosen + tok.rejected,
                             pad_token_id=oracle["tokenizer"].pad_token_id)
    batch = oracle["batch"]
    assert batch["input_ids"].shape[1] == MAX_LENGTH  # the long pair was truncated
    torch.testing.assert_close(ours["input_ids"], batch["input_ids"])
    torch.testing.assert_close(ours["attention_mask"], batch["attention_mask"])
    torch.testing.assert_close(ours["response_mask"], batch["completion_mask"])


def _trl_loss(oracle: dict[str, Any], loss_types: list[str], weights: list[float],
              beta: float) -> tuple[torch.Tensor, dict[str, list[float]]]:
    trainer = oracle["trainer"]
    trainer.loss_types, trainer.loss_weights, trainer.beta = loss_types, weights, beta
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, dict(oracle["batch"]))
    loss.backward()
    mode = "train" if trainer.model.training else "eval"
    return loss.detach(), trainer._metrics[mode]


@pytest.mark.parametrize(("loss_types", "weights", "beta"), CASES)
def test_loss_rewards_and_gradients_match_trl(oracle: dict[str, Any], loss_types: list[str],
                                              weights: list[float], beta: float) -> None:
    trl_loss, metrics = _trl_loss(oracle, loss_types, weights, beta)

    nll_weight = weights[1] if "sft" in loss_types else 0.0
    policy = oracle["policy"]
    step = DPOStep(policy, oracle["tokenizer"], None, DPOLoss(beta=beta, nll_weight=nll_weight),
                   ref_model=oracle["reference"], max_length=MAX_LENGTH)
    policy.zero_grad(set_to_none=True)
    out = step.compute_loss(PAIRS)
    out.loss.backward()

    diff = abs(out.loss.item() - trl_loss.item())
    print(f"{loss_types} w={nll_weight} beta={beta}: ours {out.loss.item():.8f} TRL {trl_loss.item():.8f} "
          f"|diff| {diff:.2e}")
    assert diff <= 1e-5
    # The per-pair terms aggregate to TRL's metrics.
    assert abs(out.chosen_rewards.mean().item() - metrics["rewards/chosen"][-1]) <= 1e-5
    assert abs(out.rejected_rewards.mean().item() - metrics["rewards/rejected"][-1]) <= 1e-5
    assert out.dpo_losses.mean().item() > 0.0 and abs(out.chosen_rewards).max().item() > 1e-3
    # Same gradients: the loss is the same function of the parameters, not only the same number.
    trl_grads = dict(oracle["trainer"].model.named_parameters())
    worst = max((p.grad - trl_grads[name].grad).abs().max().item() for name, p in policy.named_parameters())
    print(f"max |grad diff| {worst:.2e}")
    assert worst <= 1e-5
