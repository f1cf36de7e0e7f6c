"""Comparing state dicts value by value, nested dicts and lists included."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_same_state(first: Any, second: Any, where: str = "state") -> None:
    """Assert that two state dicts (or any values inside them) hold equal values: arrays of the same
    dtype and contents, the same keys at every depth, equal scalars."""
    if isinstance(first, dict):
        assert isinstance(second, dict), f"{where}: {type(second).__name__} instead of a dict"
        assert first.keys() == second.keys(), f"{where}: keys {sorted(first)} != {sorted(second)}"
        for key in first:
            assert_same_state(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, list | tuple):
        assert isinstance(second, list | tuple) and len(first) == len(second), f"{where}: {first!r} != {second!r}"
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_same_state(a, b, f"{where}[{i}]")
    elif isinstance(first, np.ndarray):
        assert isinstance(second, np.ndarray), f"{where}: {type(second).__name__} instead of an array"
        assert first.dtype == second.dtype, f"{where}: dtype {first.dtype} != {second.dtype}"
        np.testing.assert_array_equal(first, second, err_msg=where)
    else:
        assert first == second, f"{where}: {first!r} != {second!r}"
