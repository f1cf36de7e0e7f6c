"""The built-in policy: a small character-level Llama trained by supervised fine-tuning (SFT).

A plain torch loop rather than a trainer (one forward, backward, clip, step per batch; seeded; no
per-step overhead from a trainer object on a model this small): batches mixing the tasks, AdamW with
warm-up and cosine decay, and the loss on the target tokens only.

The size and the budget were chosen by measurement on the dev split (2 cores): two layers of width 64
learned these tasks in fewer seconds than wider or deeper models (hidden 128 x 2 layers, 64 x 4 layers);
a learning rate of 1.5e-3 learned steadily where 3e-3 to 1e-2 stalled on plateaus. The policy is the
checkpoint at a fixed step where every task is middling on dev (room for DPO), never chosen on test.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from laser_adapters.tokenization import char_tokenizer
from laser_app.world.specs import PolicySpec
from laser_app.world.tasks import STOP, Example, check_answer

Progress = Callable[[int], None]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded, restoring its state afterwards.

    transformers draws initial weights and samples from the global generator; this keeps that use local.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def new_policy(spec: PolicySpec, *, seed: int) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A freshly initialised policy and its character tokenizer.

    >>> model, tok = new_policy(PolicySpec(hidden=32, layers=1, intermediate=64), seed=0)
    >>> model.config.num_hidden_layers, tok.padding_side
    (1, 'left')
    """
    tokenizer = char_tokenizer()
    with seeded(seed):
        model = LlamaForCausalLM(spec.llama_config(tokenizer))
    return model, tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- SFT
Row = tuple[str, str]
"""An SFT row ``(context, target)``: the model reads both, the loss is on the target's tokens only."""


def rows_of(examples: Sequence[Example]) -> list[Row]:
    """``(prompt, " answer\\n")`` rows for SFT."""
    return [(ex.prompt, ex.target) for ex in examples]


def _encode(tokenizer: PreTrainedTokenizerBase, row: Row) -> tuple[list[int], list[int]]:
    context_ids = tokenizer(row[0])["input_ids"]
    target_ids = tokenizer(row[1], add_special_tokens=False)["input_ids"]
    return context_ids + target_ids, [-100] * len(context_ids) + target_ids


def _collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):  # right padding: positions start at 0 for every row
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def mixed_batches(rows: Sequence[Row], batch_size: int, *, seed: int) -> Iterator[list[Row]]:
    """Endless batches drawn without replacement from a seeded shuffle, reshuffled each epoch.

    Batches mix the tasks: task-homogeneous batches made the model swing its output prior from task to
    task and learn far slower (measured).
    """
    if not rows:
        raise ValueError("no SFT rows to draw batches from")
    rng = random.Random(seed)
    queue: list[Row] = []
    while True:
        if len(queue) < batch_size:
            fresh = list(rows)
            rng.shuffle(fresh)
            queue.extend(fresh)
        yield [queue.pop() for _ in range(min(batch_size, len(queue)))]


def sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batches: Iterator[list[Row]],
        spec: PolicySpec, *, on_step: Progress | None = None) -> list[float]:
    """Train ``model`` in place for ``spec.steps`` batches; return the loss per step.

    ``on_step(step)`` is called after each optimizer step with the 1-based step number (progress bars,
    checkpoints).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay,
                                  betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, spec.warmup, spec.steps))
    encoded: dict[Row, tuple[list[int], list[int]]] = {}
    model.train()
    losses: list[float] = []
    for step in range(1, spec.steps + 1):
        batch = next(batches)
        for row in batch:
            if row not in encoded:
                encoded[row] = _encode(tokenizer, row)
        loss = model(**_collate([encoded[row] for row in batch], tokenizer.pad_token_id)).loss
        losses.append(optimizer_step(model, optimizer, schedule, loss))
        if on_step is not None:
            on_step(step)
    model.eval()
    return losses


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   schedule: torch.optim.lr_scheduler.LRScheduler,
                   loss: torch.Tensor) -> float:
    """Backward, clip the gradient norm to 1, step the optimizer and the schedule, clear the gradients;
    returns the loss as a float (the world's SFT and RM training share this step)."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


# ----------------------------------------------------------------------------------------------- generation
@torch.no_grad()  # type: ignore[untyped-decorator]
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
             n: int = 1, temperature: float = 0.0, max_new_tokens: int = 8, seed: int = 0,
             batch_size: int = 256) -> list[list[str]]:
    """``n`` continuations per prompt, cut at the stop string (greedy when ``temperature`` is 0)."""
    out: list[list[str]] = []
    sample = temperature > 0
    tokenizer.padding_side = "left"
    flat = [p for p in prompts for _ in range(n)]
    stop_ids = [tokenizer.eos_token_id, *tokenizer(STOP, add_special_tokens=False)["input_ids"][:1]]
    texts: list[str] = []
    with seeded(seed):
        for start in range(0, len(flat), batch_size):
            chunk = flat[start: start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True)
            gen = model.generate(**enc, do_sample=sample, temperature=temperature if sample else None,
                                 top_p=None, top_k=None, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids)
            new = gen[:, enc["input_ids"].shape[1]:]
            texts.extend(t.split(STOP, 1)[0] for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    for i in range(len(prompts)):
        out.append(texts[i * n: (i + 1) * n])
    return out


def accuracy_by_task(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                     *, temperature: float = 0.0, n: int = 1, seed: int = 0,
                     max_new_tokens: int = 8) -> dict[str, float]:
    """Mean correctness per task of ``n`` continuations per prompt (greedy when ``temperature`` is 0)."""
    responses = generate(model, tokenizer, [ex.prompt for ex in examples], n=n, temperature=temperature,
                         seed=seed, max_new_tokens=max_new_tokens)
    hits: dict[str, list[float]] = {}
    for ex, rs in zip(examples, responses, strict=True):
        if ex.answer is None:
            raise ValueError(f"example has no answer to check against: {ex.prompt!r}")
        hits.setdefault(ex.task, []).extend(float(check_answer(ex.task, r, ex.answer)) for r in rs)
    return {t: float(np.mean(v)) for t, v in sorted(hits.items())}
