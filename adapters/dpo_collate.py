"""Preference pairs as token ids and padded batches, as TRL's ``DPOTrainer`` prepares non-conversational
data: eos appended to both responses, the response starting where the prompt's tokens stop being a common
prefix, sequences cut at ``max_length`` keeping their start, rows right-padded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from laser_adapters.pairs import check_pair


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class TokenizedPairs:
    """Token ids per pair: the prompt and the two responses (eos included, truncated to ``max_length``)."""

    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]


def tokenize_pairs(tokenizer: Any, pairs: Sequence[Mapping[str, Any]], *,
                   max_length: int | None = None, append_eos: bool = True) -> TokenizedPairs:
    """Tokenize pairs as TRL's ``DPOTrainer`` does for non-conversational data (see the module docstring).
    ``append_eos=False`` is for chat-templated replies, which end with the template's end of turn already.

    >>> from laser_adapters.tokenization import char_tokenizer
    >>> t = tokenize_pairs(char_tokenizer("ab"), [{"prompt": "a", "chosen": "b", "rejected": "ab"}])
    >>> t.prompts, t.chosen, t.rejected
    ([[1, 4]], [[5, 2]], [[4, 5, 2]])
    """
    pairs = _check_pairs(pairs)
    eos = tokenizer.eos_token or ""

    def with_eos(text: str) -> str:
        return text if not append_eos or text.endswith(eos) else text + eos

    prompts = [p["prompt"] for p in pairs]
    prompt_ids = tokenizer(prompts)["input_ids"]
    chosen_ids = tokenizer([p + with_eos(x["chosen"]) for p, x in zip(prompts, pairs, strict=True)])
    rejected_ids = tokenizer([p + with_eos(x["rejected"]) for p, x in zip(prompts, pairs, strict=True)])
    out = TokenizedPairs([], [], [])
    triples = zip(prompt_ids, chosen_ids["input_ids"], rejected_ids["input_ids"], strict=True)
    for i, (p, c, r) in enumerate(triples):
        n = min(_common_prefix(p, c), _common_prefix(p, r))
        if max_length is not None and n >= max_length:
            raise ValueError(f"pair {i}: the prompt alone has {n} tokens, at least max_length={max_length}, "
                             "so no response token would be trained on: raise max_length or shorten the "
                             "prompt")
        out.prompts.append(list(p[:n]))
        out.chosen.append(list(c[n:max_length]))
        out.rejected.append(list(r[n:max_length]))
    return out


def collate_sequences(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
                      pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``prompt + response`` rows: ``input_ids``, ``attention_mask`` and ``response_mask``.

    >>> b = collate_sequences([[1, 4], [1]], [[5, 2], [2]], pad_token_id=0)
    >>> b["input_ids"].tolist(), b["response_mask"].tolist()
    ([[1, 4, 5, 2], [1, 2, 0, 0]], [[0, 0, 1, 1], [0, 1, 0, 0]])
    """
    width = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    input_ids = torch.full((len(prompts), width), int(pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    response_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        n, m = len(p), len(r)
        input_ids[row, :n + m] = torch.tensor(list(p) + list(r), dtype=torch.long)
        attention_mask[row, :n + m] = 1
        response_mask[row, n:n + m] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def _check_pairs(pairs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(pairs, Mapping) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of dicts, got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise ValueError("pairs is empty: skip the DPO step when no preference pair formed")
    for i, pair in enumerate(pairs):
        check_pair(pair, i)
    return list(pairs)
