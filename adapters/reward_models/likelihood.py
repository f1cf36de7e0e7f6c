"""``LikelihoodRM``: the response's log-likelihood under a causal LM, as a reward."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from ._batching import pair_tokens, response_logprobs
from ._loading import CausalLMRewardModel
from .base import FloatArray, check_pairs

NORMALIZE = ("mean", "sum")


class LikelihoodRM(CausalLMRewardModel):
    """Score = log-likelihood of the response given the prompt under a causal LM.

    ``normalize="mean"`` (default) averages the log-probabilities of the response tokens (so long and short
    responses compare fairly); ``"sum"`` sums them. Sequences follow the rules of the other causal RMs: the
    chat template when the tokenizer has one, left truncation of the prompt beyond ``max_length``. An empty
    response (zero tokens, possible without a chat template) has no mean: it raises ``ValueError``, or scores
    ``empty_score`` when one is given (e.g. a large negative number, so an empty answer is never picked).
    ``gguf_file`` loads the LM from a GGUF file inside ``model``'s folder.

    >>> import tempfile
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> tmp = tempfile.TemporaryDirectory()
    >>> rm = LikelihoodRM(str(tiny_causal_lm(tmp.name)), name="lm-likelihood", max_length=64)
    >>> scores = rm.score(["2+2=", "2+2="], ["4", "5"])
    >>> scores.shape, bool((scores < 0).all())
    ((2,), True)
    >>> tmp.cleanup()
    """

    def __init__(self, model: str | os.PathLike[str] | PreTrainedModel, *, tokenizer: Any = None, name: str,
                 normalize: str = "mean", batch_size: int = 8, max_length: int = 512, device: str = "cpu",
                 dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                 gguf_file: str | None = None, use_chat_template: bool | None = None,
                 empty_score: float | None = None) -> None:
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        super().__init__(model, tokenizer, name=name, batch_size=batch_size, max_length=max_length,
                         device=device, dtype=dtype, trust_remote_code=trust_remote_code, gguf_file=gguf_file,
                         use_chat_template=use_chat_template)
        self.normalize = normalize
        if empty_score is not None and not np.isfinite(empty_score):
            raise ValueError(f"empty_score must be a finite number, got {empty_score!r}")
        self.empty_score = empty_score

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> FloatArray:
        """One float64 score per pair, shape ``(n,)``."""
        p, r = check_pairs(prompts, responses)
        pairs = [pair_tokens(self.tokenizer, a, b, max_length=self.max_length, chat=self.chat)
                 for a, b in zip(p, r, strict=True)]
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        sums, counts = response_logprobs(self.model, pairs, pad_id=self.tokenizer.pad_token_id,
                                         batch_size=self.batch_size, device=self.device)
        if self.normalize == "sum":
            return sums
        empty = np.flatnonzero(counts == 0)
        if empty.size and self.empty_score is not None:
            return np.where(counts == 0, float(self.empty_score), sums / np.maximum(counts, 1)).astype(np.float64)
        if empty.size:
            raise ValueError(f"responses at positions {empty[:10].tolist()} have no tokens, so their mean "
                             "log-likelihood is undefined; drop empty responses or use normalize='sum'")
        return np.asarray(sums / counts, dtype=np.float64)
