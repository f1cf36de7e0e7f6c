"""``JudgeRM``: a causal LM asked to grade a response; the score is its expected grade."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from ._batching import length_batches, pad_right, render_user_turn, trim_to_fit
from ._loading import CausalLMRewardModel
from .base import FloatArray, check_pairs

DEFAULT_TEMPLATE = (
    "Grade the response to the question.\n"
    "Question: {prompt}\n"
    "Response: {response}\n"
    "Answer with one of {grades}.\n"
    "Grade:"
)


def _grade_values(grades: Sequence[str], values: Sequence[float] | None) -> list[float]:
    if values is not None:
        if len(values) != len(grades):
            raise ValueError(f"values must give one number per grade: {len(grades)} grades, "
                             f"{len(values)} values")
        return [float(v) for v in values]
    try:
        return [float(g) for g in grades]
    except ValueError:
        if len(grades) == 2:
            return [1.0, 0.0]
        raise ValueError(f"grades {list(grades)} are not numbers; pass values= (one number per "
                         "grade)") from None


class JudgeRM(CausalLMRewardModel):
    """A causal LM prompted to grade each response; score = the expected grade under the model.

    The prompt is ``template`` filled with ``{prompt}``, ``{response}`` and ``{grades}`` (the grades listed as
    "1, 2, 3, 4 or 5"), wrapped in the chat template as the user turn when the tokenizer has one. Let ``z_k``
    be the next-token logit of grade token ``k`` at the end of that prompt; the score is
    ``sum_k softmax(z)_k * value_k``, the softmax taken over the grade tokens only (probability the model
    puts on other tokens is ignored), so the score lies between the smallest and largest value.

    Values default to the grades read as numbers; for two non-numeric grades such as ``("Yes", "No")`` the
    first counts 1 and the second 0 (the score is then P(Yes)). Every grade must be exactly one token of
    the tokenizer (mind leading spaces: many BPE vocabularies spell the token after ``"Grade:"`` as ``" 5"``);
    a grade that is not raises ``ValueError`` showing how it was split. When the filled template exceeds
    ``max_length``, the question is trimmed from the left, then, if still needed, the response from the right.

    >>> import tempfile
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> tmp = tempfile.TemporaryDirectory()
    >>> judge = JudgeRM(str(tiny_causal_lm(tmp.name)), name="judge", max_length=128)
    >>> scores = judge.score(["2+2=?"], ["4"])
    >>> bool(1.0 <= scores[0] <= 5.0)
    True
    >>> yes_no = JudgeRM(judge.model, tokenizer=judge.tokenizer, name="yes-no", grades=("Y", "N"))
    >>> bool(0.0 <= yes_no.score(["2+2=?"], ["4"])[0] <= 1.0)
    True
    >>> tmp.cleanup()
    """

    def __init__(self, model: str | os.PathLike[str] | PreTrainedModel, *, tokenizer: Any = None, name: str,
                 template: str = DEFAULT_TEMPLATE, grades: Sequence[str] = ("1", "2", "3", "4", "5"),
                 values: Sequence[float] | None = None, batch_size: int = 8, max_length: int = 1024,
                 device: str = "cpu", dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                 gguf_file: str | None = None, use_chat_template: bool | None = None) -> None:
        if isinstance(grades, str) or len(grades) < 2:
            raise ValueError(f"grades must be a sequence of at least 2 strings, got {grades!r}")
        if len(set(grades)) != len(grades):
            raise ValueError(f"grades must be distinct, got {list(grades)}")
        self.template = template
        self.grades = tuple(grades)
        self.values = np.asarray(_grade_values(self.grades, values), dtype=np.float64)
        listed = ", ".join(g.strip() for g in self.grades[:-1]) + f" or {self.grades[-1].strip()}"
        self._grades_text = listed
        try:
            template.format(prompt="", response="", grades="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template may only use the fields {{prompt}}, {{response}} and {{grades}}; "
                             f"formatting it failed with {type(exc).__name__}: {exc}") from exc
        if "{prompt}" not in template or "{response}" not in template:
            raise ValueError("template must contain both {prompt} and {response}")
        super().__init__(model, tokenizer, name=name, batch_size=batch_size, max_length=max_length,
                         device=device, dtype=dtype, trust_remote_code=trust_remote_code, gguf_file=gguf_file,
                         use_chat_template=use_chat_template)
        self.grade_ids = self._grade_token_ids()

    def _grade_token_ids(self) -> list[int]:
        ids = []
        for grade in self.grades:
            pieces = list(self.tokenizer(grade, add_special_tokens=False)["input_ids"])
            if len(pieces) != 1:
                shown = self.tokenizer.convert_ids_to_tokens(pieces)
                raise ValueError(f"grade {grade!r} is {len(pieces)} tokens {shown} for this tokenizer; every "
                                 "grade must be a single token (try it with or without a leading space)")
            ids.append(int(pieces[0]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"grades {list(self.grades)} map to repeated token ids {ids}")
        return ids

    def _render(self, prompt: str, response: str) -> list[int]:
        text = self.template.format(prompt=prompt, response=response, grades=self._grades_text)
        if self.chat:
            text = render_user_turn(self.tokenizer, text)
        return list(self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"])

    def encode(self, prompt: str, response: str) -> list[int]:
        """The judge's input ids for one pair, trimmed to ``max_length``."""
        ids = trim_to_fit(self.tokenizer, lambda t: self._render(t, response), prompt, self.max_length)
        if ids is not None:
            return ids
        fitted = self._fit_response(response)
        if fitted is None:
            raise ValueError(f"max_length={self.max_length} is shorter than the judge template itself; "
                             "raise max_length or shorten the template")
        return fitted

    def _fit_response(self, response: str) -> list[int] | None:
        warnings.warn("a response is too long for the judge's max_length even without its question; "
                      "grading its beginning only", stacklevel=4)
        content = list(self.tokenizer(response, add_special_tokens=False)["input_ids"])
        keep = len(content)
        while keep > 0:
            ids = self._render("", self.tokenizer.decode(content[:keep]))
            if len(ids) <= self.max_length:
                return ids
            keep -= len(ids) - self.max_length
        ids = self._render("", "")
        return ids if len(ids) <= self.max_length else None

    def grade_probabilities(self, prompts: Sequence[str], responses: Sequence[str]) -> FloatArray:
        """The softmax over the grade tokens per pair, shape ``(n, len(grades))``."""
        p, r = check_pairs(prompts, responses)
        seqs = [self.encode(a, b) for a, b in zip(p, r, strict=True)]
        probs = np.zeros((len(seqs), len(self.grades)), dtype=np.float64)
        grade_ids = torch.tensor(self.grade_ids, device=self.device)
        for idx in length_batches([len(s) for s in seqs], self.batch_size):
            ids, mask = pad_right([seqs[i] for i in idx], self.tokenizer.pad_token_id, self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            last = mask.sum(dim=1) - 1
            z = logits[torch.arange(len(idx), device=ids.device), last][:, grade_ids].float()
            probs[idx] = torch.softmax(z, dim=-1).double().cpu().numpy()
        return probs

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> FloatArray:
        """The expected grade per pair, shape ``(n,)``."""
        return self.grade_probabilities(prompts, responses) @ self.values
