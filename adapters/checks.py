"""Input checks shared by the selectors: RM name lists, choices among fixed names, finite float arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def check_rm_names(rm_names: Sequence[str]) -> list[str]:
    """Return ``rm_names`` as a list, rejecting an empty list, non-strings and duplicates."""
    if isinstance(rm_names, str):
        raise TypeError(f"rm_names must be a list of names, got the string {rm_names!r}; split it first")
    names = list(rm_names)
    if not names:
        raise ValueError("rm_names is empty: name at least one reward model")
    for n in names:
        if not isinstance(n, str) or not n:
            raise TypeError(f"each RM name must be a non-empty string, got {n!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate RM names {dupes}; each RM may appear once")
    return names


def check_choice(name: str, value: str, valid: Sequence[str]) -> str:
    """``value`` when it is one of ``valid``, else ``ValueError`` naming ``name`` and the valid values."""
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}, got {value!r}")
    return value


def as_float_array(x: Any, what: str) -> FloatArray:
    """``x`` as a float64 array; ``ValueError`` naming ``what`` when it holds NaN or inf."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr
