"""``FunctionRM``: a Python callable as a reward model, and exact-match / number-match verifiers."""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .base import FloatArray, check_pairs

Answers = Mapping[str, Any] | Callable[[str], Any]

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace and strip surrounding whitespace and punctuation.

    >>> normalize_text("  The  Answer. ")
    'the answer'
    """
    return " ".join(str(text).lower().split()).strip(" .,;:!?\"'")


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (commas as thousands separators allowed), or None.

    >>> last_number("3 apples cost $1,250.50 in total")
    1250.5
    >>> last_number("no digits") is None
    True
    """
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def import_callable(target: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"`` and return it, checking it is callable.

    >>> import_callable("math:hypot")(3, 4)
    5.0
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"callable must look like 'package.module:function', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for callable {target!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (callable {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


class FunctionRM:
    """A reward model from a Python callable.

    ``batched=True`` (default): ``fn(prompts, responses)`` gets both lists and returns one number per pair.
    ``batched=False``: ``fn(prompt, response)`` is called once per pair and returns one number. There is no
    guessing from the signature: say which one you pass.

    >>> rm = FunctionRM(lambda prompts, responses: [len(r) for r in responses], name="length")
    >>> rm.score(["q1", "q2"], ["short", "a longer one"])
    array([ 5., 12.])
    >>> per_pair = FunctionRM(lambda p, r: float(r in p), name="echo", batched=False)
    >>> per_pair.score(["say hi", "say hi"], ["hi", "bye"])
    array([1., 0.])
    """

    def __init__(self, fn: Callable[..., Any], *, name: str, batched: bool = True) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name
        self.batched = bool(batched)

    def __repr__(self) -> str:
        fn_name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"FunctionRM(name={self.name!r}, fn={fn_name}, batched={self.batched})"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> FloatArray:
        """One float64 score per pair, shape ``(n,)``."""
        p, r = check_pairs(prompts, responses)
        if self.batched:
            raw = self.fn(p, r)
        else:
            raw = [self.fn(a, b) for a, b in zip(p, r, strict=True)]
        scores = np.asarray(raw, dtype=np.float64)
        if scores.shape != (len(p),):
            hint = "; if fn scores one pair at a time, pass batched=False" if self.batched else ""
            raise ValueError(f"{self!r} returned shape {scores.shape} for {len(p)} pairs; "
                             f"expected ({len(p)},){hint}")
        return scores

    @classmethod
    def from_import(cls, target: str, *, name: str, batched: bool = True) -> FunctionRM:
        """A ``FunctionRM`` around the callable at ``"package.module:function"``."""
        return cls(import_callable(target), name=name, batched=batched)

    @classmethod
    def exact_match(cls, answers: Answers, *, name: str = "exact-match",
                    normalize: Callable[[str], str] = normalize_text,
                    extract: Callable[[str], str] | None = None) -> FunctionRM:
        """1.0 when the response equals the prompt's reference answer after ``normalize``, else 0.0.

        ``answers`` maps each prompt to its answer (a dict, or a callable ``prompt -> answer``); a prompt
        without an answer raises ``ValueError``. ``extract`` picks the answer out of a response first
        (for example the text after "answer:"); by default the whole response is compared.

        >>> rm = FunctionRM.exact_match({"Capital of France?": "Paris"})
        >>> rm.score(["Capital of France?"] * 3, ["paris.", "Lyon", " PARIS "])
        array([1., 0., 1.])
        """
        lookup = _answer_lookup(answers)

        def verify(prompt: str, response: str) -> float:
            text = extract(response) if extract is not None else response
            return float(normalize(text) == normalize(str(lookup(prompt))))

        return cls(verify, name=name, batched=False)

    @classmethod
    def number_match(cls, answers: Answers, *, name: str = "number-match", rel_tol: float = 1e-9,
                     abs_tol: float = 1e-9) -> FunctionRM:
        """1.0 when the last number in the response equals the prompt's numeric answer, else 0.0.

        The answer may be a number or a string holding one ("1,234", "-3.5"); a response with no number
        scores 0.0; a prompt without an answer raises ``ValueError``.

        >>> rm = FunctionRM.number_match(lambda prompt: 12 if "7+5" in prompt else None)
        >>> rm.score(["What is 7+5?"] * 3, ["7+5 = 12", "It is 13.", "twelve"])
        array([1., 0., 0.])
        """
        lookup = _answer_lookup(answers)

        def verify(prompt: str, response: str) -> float:
            answer = lookup(prompt)
            expected = answer if isinstance(answer, (int, float)) else last_number(str(answer))
            if expected is None:
                raise ValueError(f"the reference answer {answer!r} for prompt {prompt!r:.80} holds no number")
            got = last_number(response)
            return float(got is not None
                         and math.isclose(got, float(expected), rel_tol=rel_tol, abs_tol=abs_tol))

        return cls(verify, name=name, batched=False)


def _answer_lookup(answers: Answers) -> Callable[[str], Any]:
    if isinstance(answers, Mapping):
        table = answers

        def lookup(prompt: str) -> Any:
            if prompt not in table:
                raise ValueError(f"no reference answer for prompt {prompt!r:.80}; "
                                 f"the answers mapping holds {len(table)} prompts")
            return table[prompt]
    elif callable(answers):
        def lookup(prompt: str) -> Any:
            answer = answers(prompt)
            if answer is None:
                raise ValueError(f"no reference answer for prompt {prompt!r:.80} (the answers callable "
                                 "returned None)")
            return answer
    else:
        raise TypeError("answers must be a mapping prompt -> answer or a callable, got "
                        f"{type(answers).__name__}")
    return lookup
