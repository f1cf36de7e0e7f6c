"""Token sequences for (prompt, response) pairs, padding, length-sorted batches and response log-probs.

Every torch RM builds its inputs here, so the chat-template rule and the truncation rule are the same
for all of them:

* With a chat template (auto-detected, or forced with ``use_chat_template``), the prompt is the user
  turn and the response the assistant turn; the sequence is the rendered conversation, and the response
  tokens are whatever the template adds after the generation prompt (end-of-turn tokens included).
  Without one, the sequence is ``tokenizer(prompt)`` (special tokens included) followed by
  ``tokenizer(response)`` without special tokens.
* When the sequence is longer than ``max_length``, tokens are dropped from the left of the prompt
  (leading special tokens such as BOS are kept; with a chat template, the start of the user's text is
  trimmed and the template re-rendered, so the template's own tokens survive). The response is kept
  whole; only when the response alone does not fit is its end cut, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .base import FloatArray


@dataclass(frozen=True)
class PairTokens:
    """The token ids of one (prompt, response) pair; ``ids[response_start:]`` are the response's tokens."""

    ids: list[int]
    response_start: int


def wants_chat_template(tokenizer: Any, use_chat_template: bool | None) -> bool:
    """Resolve ``use_chat_template`` (None = use it when the tokenizer has one)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is None:
        return has
    if use_chat_template and not has:
        raise ValueError("use_chat_template=True but the tokenizer has no chat_template; set one or "
                         "pass False")
    return bool(use_chat_template)


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _leading_special(tokenizer: Any, ids: Sequence[int]) -> int:
    special = set(getattr(tokenizer, "all_special_ids", ()))
    n = 0
    while n < len(ids) and ids[n] in special:
        n += 1
    return n


def render_user_turn(tokenizer: Any, text: str) -> str:
    """The chat template applied to one user turn, with the generation prompt for the assistant."""
    return str(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True))


def trim_to_fit(tokenizer: Any, render: Callable[[str], list[int]], text: str,
                budget: int) -> list[int] | None:
    """``render(text)``, with the start of ``text`` trimmed (by tokens) until it fits in ``budget`` tokens.

    Returns None when even ``render("")`` does not fit.
    """
    ids = render(text)
    if len(ids) <= budget:
        return ids
    content = _ids(tokenizer, text, special=False)
    drop = len(ids) - budget
    while drop < len(content):
        ids = render(tokenizer.decode(content[drop:]))
        if len(ids) <= budget:
            return ids
        drop += len(ids) - budget
    ids = render("")
    return ids if len(ids) <= budget else None


def _cut_response(response_ids: list[int], budget: int) -> list[int]:
    warnings.warn(f"a response of {len(response_ids)} tokens does not fit in max_length with its prompt; "
                  f"keeping its first {max(budget, 0)} tokens (raise max_length to score it whole)",
                  stacklevel=4)
    return response_ids[:max(budget, 0)]


def pair_tokens(tokenizer: Any, prompt: str, response: str, *, max_length: int, chat: bool) -> PairTokens:
    """Token ids of one pair under the module's chat-template and left-truncation rules."""
    if chat:
        prefix_text = render_user_turn(tokenizer, prompt)
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        full_text = str(tokenizer.apply_chat_template(turns, tokenize=False))
        completion = full_text[len(prefix_text):] if full_text.startswith(prefix_text) else response
        response_ids = _ids(tokenizer, completion, special=False)
        min_prompt = len(_ids(tokenizer, render_user_turn(tokenizer, ""), special=False))
        if min_prompt + len(response_ids) > max_length:
            response_ids = _cut_response(response_ids, max_length - min_prompt)
        prompt_ids = trim_to_fit(
            tokenizer, lambda t: _ids(tokenizer, render_user_turn(tokenizer, t), special=False), prompt,
            max_length - len(response_ids))
        if prompt_ids is None:  # the template alone exceeds max_length
            raise ValueError(f"max_length={max_length} is shorter than the chat template's own tokens "
                             f"({min_prompt}); raise max_length")
    else:
        prompt_ids = _ids(tokenizer, prompt, special=True)
        response_ids = _ids(tokenizer, response, special=False)
        keep_head = _leading_special(tokenizer, prompt_ids)
        if keep_head + len(response_ids) > max_length:
            response_ids = _cut_response(response_ids, max_length - keep_head)
        overflow = len(prompt_ids) + len(response_ids) - max_length
        if overflow > 0:
            prompt_ids = prompt_ids[:keep_head] + prompt_ids[keep_head + overflow:]
    return PairTokens(ids=prompt_ids + response_ids, response_start=len(prompt_ids))


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask``; right padding keeps positions 0..L-1 exact."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids.to(device), mask.to(device)


def response_logprobs(model: Any, pairs: Sequence[PairTokens], *, pad_id: int, batch_size: int,
                      device: str) -> tuple[FloatArray, np.ndarray]:
    """Per pair, the summed log-probability of the response tokens and their count.

    ``sum_t log p(y_t | x, y_<t)`` over the response tokens, computed in float32 from one forward pass
    per batch of right-padded sequences.
    """
    sums = np.zeros(len(pairs), dtype=np.float64)
    # a response token at position 0 has no predecessor to predict it, so it cannot be scored
    counts = np.array([len(p.ids) - max(p.response_start, 1) for p in pairs], dtype=np.int64)
    for idx in length_batches([len(p.ids) for p in pairs], batch_size):
        batch = [pairs[i] for i in idx]
        ids, mask = pad_right([p.ids for p in batch], pad_id, device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits
        # logits[:, t] predicts token t + 1
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        positions = torch.arange(ids.shape[1] - 1, device=ids.device)
        starts = torch.tensor([p.response_start for p in batch], device=ids.device)
        ends = torch.tensor([len(p.ids) for p in batch], device=ids.device)
        # target token t+1 is a response token when start <= t+1 < end
        in_response = (positions[None] + 1 >= starts[:, None]) & (positions[None] + 1 < ends[:, None])
        sums[idx] = (token_logp * in_response).sum(-1).double().cpu().numpy()
    return sums, counts
