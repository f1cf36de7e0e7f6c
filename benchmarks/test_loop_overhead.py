"""The bandit's share of a LASeR step: under 2%.

A step of the loop on a policy the size of the built-in one (Llama, hidden 64, 2 layers, character
tokens): sample 6 responses for each of 8 prompts (10 new tokens) and take one DPO + NLL step on 8 pairs.
RM scoring is left out, so the real step is longer and the real share smaller. The bandit's part is what
the loop adds for it: turning the prefill's hidden states into contexts, ``RMSelector.choose`` (LinUCB,
batch granularity) and ``feedback`` (reward, quantile normalization, LinUCB update). Both run in the same
process on one thread; the share is bandit time / step time.

    pytest benchmarks/test_loop_overhead.py --benchmark-only
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser_adapters.dpo import DPOLoss, DPOStep, StepResult
from laser_adapters.encoders import PolicyHiddenStateEncoder, PrefillCapture, contexts_from_states
from laser_adapters.generation import sample_responses
from laser_adapters.methods import make_selector
from laser_adapters.testing import tiny_causal_lm

MAX_SHARE = 0.02
RMS = ["rm-a", "rm-b", "rm-c"]
PROMPTS = [f"Q: Ann has {i} pens and gets {i + 2} more. How many now? A:" for i in range(8)]
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path: Path = tiny_causal_lm(tmp_path_factory.mktemp("policy"), hidden=64, layers=2)
    yield AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    torch.set_num_threads(threads)


def best_seconds(benchmark: Any) -> float:
    if benchmark.stats is None:  # benchmarks disabled: the body ran once, untimed
        pytest.skip("benchmarks are disabled; run with --benchmark-only")
    return float(benchmark.stats.stats.min)


@pytest.mark.benchmark(timer=time.process_time)
def test_step_without_the_bandit(benchmark: Any, policy: tuple[Any, Any]) -> None:
    model, tok = policy
    dpo = DPOStep(model, tok, torch.optim.AdamW(model.parameters(), lr=1e-4), DPOLoss(nll_weight=1.0))

    def step() -> None:
        samples = sample_responses(model, tok, PROMPTS, n=6, max_new_tokens=10, seed=0)
        pairs = [{"prompt": p, "chosen": s[0] + "a", "rejected": s[1] + "b"} for p, s in zip(PROMPTS, samples,
                                                                                          strict=True)]
        dpo.step(pairs)

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    RESULTS["step"] = best_seconds(benchmark)


@pytest.mark.benchmark(timer=time.process_time)
def test_bandit_share_of_a_step(benchmark: Any, policy: tuple[Any, Any]) -> None:
    model, tok = policy
    encoder = PolicyHiddenStateEncoder(model, tok)
    selector = make_selector("linucb", RMS, encoder=encoder, alpha=0.1, seed=0)
    with PrefillCapture(model) as capture:
        sample_responses(model, tok, PROMPTS, n=6, max_new_tokens=2, seed=0)
    states = capture.features(len(PROMPTS))
    rng = np.random.default_rng(0)

    def bandit() -> None:
        contexts = contexts_from_states(encoder, states)
        choices = selector.choose(PROMPTS, contexts=contexts)
        for label, idx in selector.groups(choices):
            losses = rng.uniform(0.5, 2.0, size=len(idx))
            zeros = np.zeros(len(idx))
            result = StepResult(loss=float(losses.mean()), losses=losses, dpo_losses=zeros, nll_losses=losses,
                                chosen_rewards=zeros, rejected_rewards=zeros, dpo_loss=0.0,
                                nll_loss=float(losses.mean()))
            selector.feedback(label, idx, result)

    for _ in range(20):  # a history for the quantile normalizer, as mid-run
        bandit()
    benchmark.pedantic(bandit, rounds=50, iterations=1, warmup_rounds=2)
    seconds = best_seconds(benchmark)
    if "step" not in RESULTS:
        pytest.skip("the step case did not run first, so there is no share")
    share = seconds / RESULTS["step"]
    benchmark.extra_info["share_of_step"] = round(share, 4)
    assert share < MAX_SHARE, f"the bandit takes {100 * share:.1f}% of a step (target < {100 * MAX_SHARE:.0f}%)"
