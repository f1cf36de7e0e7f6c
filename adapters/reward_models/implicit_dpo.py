"""``ImplicitDPORM``: the implicit reward of a DPO-trained chat model, beta * log(pi / pi_ref)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from ._batching import pair_tokens, response_logprobs
from ._loading import CausalLMRewardModel, load_model
from .base import FloatArray, check_pairs


class ImplicitDPORM(CausalLMRewardModel):
    """Score = ``beta * (log pi(y|x) - log pi_ref(y|x))``, log-probabilities summed over the response tokens.

    ``model`` is the DPO-trained policy and ``ref_model`` its reference (usually the SFT model it started
    from); both must share ``model``'s tokenizer. With ``ref_model=None`` the RM is reference-free:
    score = ``beta * log pi(y|x)``. The chat template is used when the tokenizer has one (the prompt as the
    user turn, the response as the assistant turn, end-of-turn tokens counted as response tokens); prompts
    beyond ``max_length`` lose tokens from the left. ``gguf_file`` / ``ref_gguf_file`` load either model from
    a GGUF file inside its folder (a path ending in ``.gguf`` works too).

    >>> import tempfile
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> tmp = tempfile.TemporaryDirectory()
    >>> policy = str(tiny_causal_lm(f"{tmp.name}/policy", seed=1))
    >>> reference = str(tiny_causal_lm(f"{tmp.name}/ref", seed=2))
    >>> rm = ImplicitDPORM(policy, reference, beta=0.1, name="dpo-rm", max_length=64)
    >>> rm.score(["2+2="], ["4"]).shape
    (1,)
    >>> bool(ImplicitDPORM(policy, None, name="ref-free").score(["2+2="], ["4"])[0] < 0)
    True
    >>> tmp.cleanup()
    """

    def __init__(self, model: str | os.PathLike[str] | PreTrainedModel,
                 ref_model: str | os.PathLike[str] | PreTrainedModel | None = None, *,
                 tokenizer: Any = None, name: str, beta: float = 0.1, batch_size: int = 8,
                 max_length: int = 512, device: str = "cpu",
                 dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                 gguf_file: str | None = None, ref_gguf_file: str | None = None,
                 use_chat_template: bool | None = None) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not np.isfinite(beta) or beta <= 0:
            raise ValueError(f"beta must be a finite float > 0, got {beta!r}")
        super().__init__(model, tokenizer, name=name, batch_size=batch_size, max_length=max_length,
                         device=device, dtype=dtype, trust_remote_code=trust_remote_code, gguf_file=gguf_file,
                         use_chat_template=use_chat_template)
        self.beta = float(beta)
        self.ref_model = None if ref_model is None else load_model(
            ref_model, task="causal", dtype=dtype, device=self.device, trust_remote_code=trust_remote_code,
            gguf_file=ref_gguf_file)
        if self.ref_model is not None:
            vocab, ref_vocab = self.model.config.vocab_size, self.ref_model.config.vocab_size
            if vocab != ref_vocab:
                raise ValueError(f"model and ref_model must share a tokenizer, but their vocab sizes differ "
                                 f"({vocab} vs {ref_vocab})")

    @property
    def reference_free(self) -> bool:
        """True when there is no reference model (score = beta * log pi(y|x))."""
        return self.ref_model is None

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model] if self.ref_model is None else [self.model, self.ref_model]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> FloatArray:
        """One float64 score per pair, shape ``(n,)``."""
        p, r = check_pairs(prompts, responses)
        pairs = [pair_tokens(self.tokenizer, a, b, max_length=self.max_length, chat=self.chat)
                 for a, b in zip(p, r, strict=True)]
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        kwargs: dict[str, Any] = dict(pad_id=self.tokenizer.pad_token_id, batch_size=self.batch_size,
                                      device=self.device)
        logp, _ = response_logprobs(self.model, pairs, **kwargs)
        if self.ref_model is not None:
            ref_logp, _ = response_logprobs(self.ref_model, pairs, **kwargs)
            logp = logp - ref_logp
        return self.beta * logp
