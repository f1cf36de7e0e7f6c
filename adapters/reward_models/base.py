"""The ``RewardModel`` protocol and the one gate every score passes through: ``checked_scores``.

A reward model maps (prompt, response) pairs to one finite float each. RMs themselves may fail in
many ways (a raising callable, NaN from a half-precision overflow, a wrong-length result);
``checked_scores`` turns every such failure into a ``RewardModelError`` naming the RM and the batch,
so nothing downstream ever sees a bad score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@runtime_checkable
class RewardModel(Protocol):
    """Anything with a ``name`` and ``score(prompts, responses) -> (n,) float64 array``."""

    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> FloatArray:
        """Return one finite float64 score per (prompt, response) pair, shape ``(n,)``."""
        ...


class RewardModelError(RuntimeError):
    """A reward model failed or returned unusable scores; the message names the RM and the batch."""


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return ``prompts`` and ``responses`` as lists of str, rejecting mismatched lengths and non-strings.

    Empty sequences are allowed here (an RM scores zero pairs as an empty array);
    ``checked_scores`` rejects them because a caller asking for no scores is a bug upstream.

    >>> check_pairs(["a"], ["b", "c"])
    Traceback (most recent call last):
    ...
    ValueError: got 1 prompts but 2 responses; pass one prompt per response
    """
    if isinstance(prompts, str) or isinstance(responses, str):
        raise TypeError("prompts and responses must be sequences of str, not a single str; wrap it in a list")
    p, r = list(prompts), list(responses)
    if len(p) != len(r):
        raise ValueError(f"got {len(p)} prompts but {len(r)} responses; pass one prompt per response")
    for what, items in (("prompts", p), ("responses", r)):
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise TypeError(f"{what}[{i}] must be a str, got {type(x).__name__}: {x!r:.80}")
    return p, r


def _label(rm: Any, batch: str | int | None) -> str:
    name = getattr(rm, "name", None) or type(rm).__name__
    where = f"reward model {name!r}"
    return where if batch is None else f"{where} on batch {batch}"


def checked_scores(rm: RewardModel, prompts: Sequence[str], responses: Sequence[str], *,
                   batch: str | int | None = None) -> FloatArray:
    """Score with ``rm`` and return a finite float64 array of shape ``(n,)``, or raise ``RewardModelError``.

    The error names the RM and ``batch`` (any label: a step number, ``"iter 2 step 5"``) and says what
    went wrong: an exception inside the RM (chained as ``__cause__``), NaN or inf scores (with their
    positions), a result of the wrong shape, or bad inputs (mismatched lengths, no pairs at all).

    >>> from laser_adapters.reward_models.function import FunctionRM
    >>> rm = FunctionRM(lambda ps, rs: [len(r) for r in rs], name="length")
    >>> checked_scores(rm, ["q", "q"], ["ab", "abcd"], batch=0)
    array([2., 4.])
    >>> broken = FunctionRM(lambda ps, rs: [float("nan")] * len(rs), name="broken")
    >>> try:
    ...     checked_scores(broken, ["q"], ["a"], batch=3)
    ... except RewardModelError as err:
    ...     print(err)
    reward model 'broken' on batch 3 returned non-finite scores at positions [0] (values [nan]) for 1 pairs
    """
    where = _label(rm, batch)
    try:
        p, r = check_pairs(prompts, responses)
    except (TypeError, ValueError) as exc:
        raise RewardModelError(f"{where}: bad input: {exc}") from exc
    n = len(p)
    if n == 0:
        raise RewardModelError(f"{where}: asked to score 0 pairs; pass at least one (prompt, response)")
    try:
        raw = rm.score(p, r)
    except Exception as exc:
        raise RewardModelError(f"{where} raised {type(exc).__name__} on {n} pairs: {exc}") from exc
    try:
        scores = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RewardModelError(
            f"{where} returned {type(raw).__name__} that is not convertible to floats: {exc}") from exc
    if scores.shape != (n,):
        raise RewardModelError(f"{where} returned scores of shape {scores.shape} for {n} pairs; "
                               f"expected ({n},)")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        shown = bad[:10].tolist()
        raise RewardModelError(
            f"{where} returned non-finite scores at positions {shown}"
            f"{' ...' if bad.size > 10 else ''} (values {scores[shown].tolist()}) for {n} pairs")
    return scores
