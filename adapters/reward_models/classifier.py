"""``SequenceClassifierRM``: any ``AutoModelForSequenceClassification`` used as a reward model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from ._batching import length_batches, pad_right, pair_tokens, wants_chat_template
from ._loading import (
    TorchRewardModel,
    check_sizes,
    load_model,
    load_tokenizer,
    max_positions,
    resolve_device,
    set_pad_token_id,
)
from .base import FloatArray, check_pairs


class SequenceClassifierRM(TorchRewardModel):
    """A sequence-classification model (hub id, local path or loaded model) scoring (prompt, response) pairs.

    The input is the tokenizer's chat template with the prompt as the user turn and the response as the
    assistant turn when the tokenizer has a template (``use_chat_template=None``), else the prompt's tokens
    followed by the response's. Pairs are scored in batches of ``batch_size`` sorted by length; a sequence
    longer than ``max_length`` loses tokens from the left of the prompt, never from the response.

    The score is read from the head's logits:

    * one label (the usual reward-model head): ``logits[:, 0]``;
    * two or more labels: the log-odds of the preferred class ``label``,
      ``logit[label] - logsumexp(other logits)``; for two labels with ``label=1`` (the default) that is
      ``logit[1] - logit[0]``, the preferred-class logit difference. More than two labels need ``label``.

    >>> import tempfile
    >>> from laser_adapters.testing import tiny_classifier
    >>> tmp = tempfile.TemporaryDirectory()
    >>> rm = SequenceClassifierRM(str(tiny_classifier(tmp.name)), name="tiny-rm", max_length=64)
    >>> scores = rm.score(["What is 2+2?", "Name a colour."], ["4", "blue"])
    >>> scores.shape, scores.dtype, bool(np.isfinite(scores).all())
    ((2,), dtype('float64'), True)
    >>> tmp.cleanup()
    """

    def __init__(self, model: str | os.PathLike[str] | PreTrainedModel, tokenizer: Any = None, *, name: str,
                 batch_size: int = 16, max_length: int = 512, device: str = "cpu",
                 dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                 label: int | None = None, use_chat_template: bool | None = None) -> None:
        check_sizes(batch_size, max_length)
        self.name = name
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.trust_remote_code = trust_remote_code
        self.model = load_model(model, task="classifier", dtype=dtype, device=self.device,
                                trust_remote_code=trust_remote_code)
        self.tokenizer = load_tokenizer(tokenizer, model, trust_remote_code=trust_remote_code)
        set_pad_token_id(self.model, self.tokenizer)
        self.max_length = max_positions(self.model, max_length)
        self.chat = wants_chat_template(self.tokenizer, use_chat_template)
        n_labels = int(self.model.config.num_labels)
        if label is None and n_labels > 2:
            raise ValueError(f"the model has {n_labels} labels; pass label= (the index of the "
                             "preferred class)")
        if label is not None and not (n_labels >= 2 and 0 <= label < n_labels):
            raise ValueError(f"label must be in [0, {n_labels}) for a {n_labels}-label head, got {label!r}"
                             + ("; a one-label head needs no label" if n_labels == 1 else ""))
        self.label = label if label is not None else (1 if n_labels == 2 else 0)
        self.num_labels = n_labels

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        """The token ids the model sees for each pair (after the chat template and left truncation).

        Train a classifier RM on exactly these sequences to score with the same format.
        """
        p, r = check_pairs(prompts, responses)
        return [pair_tokens(self.tokenizer, a, b, max_length=self.max_length, chat=self.chat).ids
                for a, b in zip(p, r, strict=True)]

    def _read(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.num_labels == 1:
            return logits[:, 0]
        others = torch.cat([logits[:, :self.label], logits[:, self.label + 1:]], dim=1)
        return logits[:, self.label] - torch.logsumexp(others, dim=1)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> FloatArray:
        """One float64 score per pair, shape ``(n,)``."""
        seqs = self.encode(prompts, responses)
        out = np.zeros(len(seqs), dtype=np.float64)
        for idx in length_batches([len(s) for s in seqs], self.batch_size):
            ids, mask = pad_right([seqs[i] for i in idx], self.tokenizer.pad_token_id, self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            out[idx] = self._read(logits).double().cpu().numpy()
        return out
