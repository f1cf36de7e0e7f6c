"""Preference pairs from scored samples: LASeR's top-vs-bottom pairing, in TRL's preference format.

For one prompt, the sampled responses are ranked by the chosen reward model's scores; the best is paired with
the worst, the second best with the second worst, and so on, up to ``max_pairs`` pairs. Exact duplicate texts
are collapsed first (the highest-scored copy stays) and pairs whose two scores tie are dropped, since neither
carries a preference. Both are counted so a run can report how much signal it threw away.

Pairs are plain dicts with TRL's keys (``prompt``, ``chosen``, ``rejected``) plus the two scores, so they can
be written as JSONL and read back by ``datasets.load_dataset("json", ...)`` or ``trl dpo``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from numpy.typing import ArrayLike

from banditkit.validation import check_positive_int

PAIR_KEYS = ("prompt", "chosen", "rejected")


class PreferencePair(TypedDict):
    """One preference pair in TRL's (non-conversational) preference format, with the RM's scores."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float


@dataclass(frozen=True)
class PairResult:
    """The pairs formed for one prompt and what was dropped on the way."""

    pairs: list[PreferencePair] = field(default_factory=list)
    dropped_ties: int = 0
    dropped_duplicates: int = 0


def _check_responses(responses: Sequence[str]) -> list[str]:
    if isinstance(responses, str) or not isinstance(responses, Sequence):
        raise TypeError(f"responses must be a sequence of strings, got {type(responses).__name__}")
    if len(responses) == 0:
        raise ValueError("responses is empty: sample at least 2 responses per prompt to form pairs")
    for i, r in enumerate(responses):
        if not isinstance(r, str):
            raise TypeError(f"responses[{i}] must be a str, got {type(r).__name__}")
    if len(responses) < 2:
        raise ValueError(f"need at least 2 responses to form a pair, got {len(responses)}: sample n >= 2")
    return list(responses)


def _check_scores(scores: ArrayLike, n: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"got {arr.shape[0]} scores for {n} responses: pass one score per response")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"scores must be finite, got {arr[bad[0]]} at index {int(bad[0])}: "
                         "check the reward model")
    return arr


def make_pairs(prompt: str, responses: Sequence[str], scores: ArrayLike, max_pairs: int) -> PairResult:
    """Pair the best-scored responses with the worst-scored ones (LASeR's top-vs-bottom pairing).

    Responses are ranked by score (descending; equal scores keep their sampling order). Pair ``i`` is the
    ``i``-th best against the ``i``-th worst, for ``i < min(max_pairs, n_unique // 2)``; candidate pairs whose
    scores tie are dropped and counted in ``dropped_ties``.

    >>> result = make_pairs("2+2=", ["4", "5", "4", "22", "8"], [0.9, 0.1, 0.7, 0.3, 0.5], max_pairs=2)
    >>> [(p["chosen"], p["rejected"]) for p in result.pairs]
    [('4', '5'), ('8', '22')]
    >>> result.dropped_duplicates, result.dropped_ties
    (1, 0)
    >>> make_pairs("q", ["a", "b"], [1.0, 1.0], max_pairs=1).dropped_ties
    1
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    texts = _check_responses(responses)
    values = _check_scores(scores, len(texts))
    check_positive_int("max_pairs", max_pairs)

    # Highest-scored copy of each distinct text; ties between copies keep the first sampled.
    best: dict[str, int] = {}
    for i, text in enumerate(texts):
        j = best.get(text)
        if j is None or values[i] > values[j]:
            best[text] = i
    kept = sorted(best.values())
    dropped_duplicates = len(texts) - len(kept)

    order = sorted(kept, key=lambda i: (-values[i], i))
    pairs: list[PreferencePair] = []
    dropped_ties = 0
    for k in range(min(max_pairs, len(order) // 2)):
        hi, lo = order[k], order[len(order) - 1 - k]
        if values[hi] == values[lo]:
            dropped_ties += 1
            continue
        pairs.append(PreferencePair(prompt=prompt, chosen=texts[hi], rejected=texts[lo],
                                    chosen_score=float(values[hi]), rejected_score=float(values[lo])))
    return PairResult(pairs=pairs, dropped_ties=dropped_ties, dropped_duplicates=dropped_duplicates)


def check_pair(pair: Mapping[str, Any], index: int = 0) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``pair`` has ``prompt``, ``chosen`` and ``rejected``, either
    all strings (TRL's standard format) or all lists of ``{"role", "content"}`` messages (its conversational
    format).

    >>> check_pair({"prompt": "q", "chosen": "a"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: pair 0 is missing key 'rejected' (has ['chosen', 'prompt']): ...
    """
    if not isinstance(pair, Mapping):
        raise TypeError(f"pair {index} must be a dict, got {type(pair).__name__}")
    for key in PAIR_KEYS:
        if key not in pair:
            raise ValueError(f"pair {index} is missing key {key!r} (has {sorted(pair)}): "
                             "pairs need 'prompt', 'chosen', 'rejected'")
    if all(_is_conversation(pair[key]) for key in PAIR_KEYS):
        return
    for key in PAIR_KEYS:
        if not isinstance(pair[key], str):
            raise TypeError(f"pair {index} key {key!r} must be a str (or every key a list of messages), got "
                            f"{type(pair[key]).__name__}")


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value)


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{where} must be finite to be written as JSON, got {v}")
        return v
    if _is_conversation(value):  # TRL's conversational format: a list of messages
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise TypeError(f"{where} has type {type(value).__name__}, which JSONL pairs do not hold")


def write_pairs_jsonl(pairs: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write pairs as JSON Lines, atomically (a temp file in the same folder, then ``os.replace``).

    >>> import tempfile, pathlib
    >>> pairs = make_pairs("q", ["good", "bad"], [1.0, 0.0], max_pairs=1).pairs
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = write_pairs_jsonl(pairs, pathlib.Path(d) / "pairs.jsonl")
    ...     read_pairs_jsonl(out) == pairs
    True
    """
    lines = []
    for i, pair in enumerate(pairs):
        check_pair(pair, i)
        row = {key: _jsonable(value, f"pair {i} key {key!r}") for key, value in pair.items()}
        lines.append(json.dumps(row, ensure_ascii=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_pairs_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read pairs written by :func:`write_pairs_jsonl` (one JSON object per non-empty line)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno} is not valid JSON: {exc}") from None
            check_pair(row, lineno - 1)
            rows.append(row)
    return rows
