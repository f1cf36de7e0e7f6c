"""Sampling and greedy decoding helpers around ``model.generate`` for policy training and evaluation.

Prompts are tokenized with the tokenizer's special tokens (as TRL tokenizes DPO prompts), left-padded so
that every continuation starts at the same column, and only the continuation is decoded. A ``stop`` string
ends a response: a row stops generating once its decoded text holds it, and the text is cut before it.

Seeding: ``seed=None`` draws from torch's global generator. With an int seed the draw happens inside
``torch.random.fork_rng``, so the same seed gives the same samples and the caller's global RNG state is left
exactly as it was (``generate`` has no ``generator`` argument, so this is how its sampling is scoped).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from banditkit.validation import check_positive_int, check_real


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a sequence of strings (wrap one prompt in a list), "
                        f"got {type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}] must be a str, got {type(p).__name__}")
    return list(prompts)


def ensure_pad_token(tokenizer: Any) -> int:
    """The pad token id; sets ``pad_token = eos_token`` (with a warning) when the tokenizer has none."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token: "
                             "set tokenizer.pad_token")
        warnings.warn(f"tokenizer has no pad token; using its eos token {tokenizer.eos_token!r} for padding",
                      UserWarning, stacklevel=3)
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.pad_token_id)


def left_pad(tokenizer: Any, prompts: Sequence[str], *, max_length: int | None = None,
             pad_token_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize ``prompts`` (special tokens added) and left-pad them: ``(input_ids, attention_mask)``.

    Longer prompts keep their last ``max_length`` tokens. The pad id defaults to the tokenizer's pad (or eos)
    token; padded positions are masked, so its value does not change results.

    >>> from laser_adapters.tokenization import char_tokenizer
    >>> ids, mask = left_pad(char_tokenizer("ab"), ["a", "abb"])
    >>> ids.tolist(), mask.tolist()
    ([[0, 0, 1, 4], [1, 4, 5, 5]], [[0, 0, 1, 1], [1, 1, 1, 1]])
    """
    prompts = _check_prompts(prompts)
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    if max_length is not None:
        encoded = [ids[-max_length:] for ids in encoded]
    for i, ids in enumerate(encoded):
        if len(ids) == 0:
            raise ValueError(f"prompt {i} ({prompts[i]!r}) tokenizes to no tokens: give it some text")
    if pad_token_id is None:
        pad_token_id = tokenizer.pad_token_id
        if pad_token_id is None:
            pad_token_id = tokenizer.eos_token_id
    pad_id = 0 if pad_token_id is None else int(pad_token_id)
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


def cut_at_stop(text: str, stop: str | None, *, keep: bool = False) -> str:
    """Text before the first occurrence of ``stop`` (all of it when ``stop`` is None or absent); with
    ``keep`` the stop string itself stays at the end.

    >>> cut_at_stop("42\\nQ: next", "\\n"), cut_at_stop("42", None), cut_at_stop("42\\nQ", "\\n", keep=True)
    ('42', '42', '42\\n')
    """
    if not stop:
        return text
    index = text.find(stop)
    return text if index < 0 else text[:index + len(stop) if keep else index]


class _StopOnText(StoppingCriteria):  # type: ignore[misc]
    """Per-row stop once the decoded continuation (special tokens skipped) contains ``stop``."""

    def __init__(self, tokenizer: Any, stop: str, prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([self.stop in t for t in texts], dtype=torch.bool, device=input_ids.device)


def _generate(model: Any, tokenizer: Any, prompts: list[str], *, num_return_sequences: int,
              stop: str | None, keep_stop: bool = False, **generate_kwargs: Any) -> list[str]:
    pad_id = ensure_pad_token(tokenizer)
    input_ids, attention_mask = left_pad(tokenizer, prompts, pad_token_id=pad_id)
    device = next(model.parameters()).device
    if stop:
        # Ends rows early once their decoded text holds `stop`. Not `stop_strings`: it matches raw token
        # strings, so a sampled special token such as '<pad>' would stop a row on 'a' with no 'a' in its text.
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList(
            [_StopOnText(tokenizer, stop, input_ids.shape[1])])
    with torch.no_grad():
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                num_return_sequences=num_return_sequences, pad_token_id=pad_id,
                                **generate_kwargs)
    continuations = output[:, input_ids.shape[1]:].cpu()
    texts = tokenizer.batch_decode(continuations, skip_special_tokens=True)
    return [cut_at_stop(t, stop, keep=keep_stop) for t in texts]


def _eval_mode(model: Any) -> bool:
    was_training = bool(model.training)
    model.eval()
    return was_training


def sample_responses(model: Any, tokenizer: Any, prompts: Sequence[str], *, n: int, temperature: float = 0.8,
                     top_p: float = 1.0, max_new_tokens: int = 32, seed: int | None = None,
                     stop: str | None = None, keep_stop: bool = False) -> list[list[str]]:
    """Sample ``n`` continuations per prompt in one batched ``generate`` call: ``result[i][j]``.

    The model is put in eval mode for the call and its training mode restored after. Each continuation
    ends before ``stop``; with ``keep_stop`` it ends with ``stop`` when the model produced it, which is
    what training on the samples needs (the policy must keep learning where its answers end).

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = tiny_causal_lm(d, hidden=16)
    ...     model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    ...     out = sample_responses(model, tok, ["1+1=", "2+2="], n=3, max_new_tokens=4, seed=0)
    ...     [len(r) for r in out], out == sample_responses(model, tok, ["1+1=", "2+2="], n=3,
    ...                                                    max_new_tokens=4, seed=0)
    ([3, 3], True)
    """
    prompts = _check_prompts(prompts)
    check_positive_int("n", n)
    check_real("temperature", temperature, low=0.0, low_open=True)
    check_real("top_p", top_p, low=0.0, high=1.0, low_open=True)
    check_positive_int("max_new_tokens", max_new_tokens)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if not prompts:
        return []
    device = next(model.parameters()).device
    was_training = _eval_mode(model)
    try:
        kwargs: dict[str, Any] = dict(do_sample=True, temperature=float(temperature), top_p=float(top_p),
                                      top_k=0, max_new_tokens=max_new_tokens, stop=stop, keep_stop=keep_stop)
        if seed is None:
            flat = _generate(model, tokenizer, prompts, num_return_sequences=n, **kwargs)
        else:
            cuda = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                flat = _generate(model, tokenizer, prompts, num_return_sequences=n, **kwargs)
    finally:
        model.train(was_training)
    return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]


def greedy_answers(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                   stop: str | None = None, batch_size: int = 64) -> list[str]:
    """Greedy continuation of each prompt (for evaluation), ``batch_size`` prompts per ``generate`` call.

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = tiny_causal_lm(d, hidden=16)
    ...     model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    ...     len(greedy_answers(model, tok, ["1+1=", "2+2=", "3+3="], max_new_tokens=3, batch_size=2))
    3
    """
    prompts = _check_prompts(prompts)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("batch_size", batch_size)
    answers: list[str] = []
    was_training = _eval_mode(model)
    try:
        for start in range(0, len(prompts), batch_size):
            answers += _generate(model, tokenizer, prompts[start:start + batch_size], num_return_sequences=1,
                                 stop=stop, do_sample=False, max_new_tokens=max_new_tokens)
    finally:
        model.train(was_training)
    return answers
