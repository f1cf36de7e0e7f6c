"""Input checks shared by policies, normalizers and environments, public for reuse by other packages.

Every check raises ``ValueError`` (bad value or shape) or ``TypeError`` (wrong kind) with the
offending value in the message, so a caller can tell what to fix from one line, and returns the
value converted to its plain type.

>>> from banditkit.validation import check_positive_int
>>> check_positive_int("batch_size", 8)
8
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FloatArray",
    "IntArray",
    "check_arm",
    "check_batch",
    "check_context",
    "check_contexts",
    "check_k",
    "check_n_arms",
    "check_positive_int",
    "check_real",
    "check_reward",
]

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]

_NORMALIZER_HINT = (
    "rescale rewards into [0, 1] first, e.g. with banditkit.QuantileNormalizer, "
    "banditkit.MinMaxNormalizer or banditkit.ZScoreNormalizer wrapped by banditkit.Normalized"
)


def check_n_arms(n_arms: int) -> int:
    """Return ``n_arms`` as an int, rejecting zero, negatives and non-integers.

    >>> check_n_arms(3)
    3
    >>> check_n_arms(0)
    Traceback (most recent call last):
    ...
    ValueError: n_arms must be >= 1, got 0
    """
    if isinstance(n_arms, bool) or not isinstance(n_arms, numbers.Integral):
        raise TypeError(f"n_arms must be an int, got {type(n_arms).__name__}")
    if n_arms < 1:
        raise ValueError(f"n_arms must be >= 1, got {n_arms}")
    return int(n_arms)


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` as an int, rejecting non-integers and values below 1; ``name`` goes in the message.

    >>> check_positive_int("max_pairs", 4)
    4
    >>> check_positive_int("max_pairs", 2.5)
    Traceback (most recent call last):
    ...
    TypeError: max_pairs must be an int, got float
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_real(name: str, value: float, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite float inside the given bounds (``low_open``/``high_open`` exclude them).

    >>> check_real("alpha", 0.5, low=0.0)
    0.5
    >>> check_real("alpha", -1.0, low=0.0)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be >= 0.0, got -1.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def check_arm(arm: int, n_arms: int) -> int:
    """Return ``arm`` as an int in ``[0, n_arms)``.

    >>> check_arm(2, 3)
    2
    >>> check_arm(3, 3)
    Traceback (most recent call last):
    ...
    ValueError: arm 3 is out of range: this policy has arms 0..2
    """
    if isinstance(arm, bool) or not isinstance(arm, numbers.Integral):
        raise TypeError(f"arm must be an int, got {type(arm).__name__}")
    if not 0 <= arm < n_arms:
        raise ValueError(f"arm {arm} is out of range: this policy has arms 0..{n_arms - 1}")
    return int(arm)


def check_reward(reward: float, *, unit_interval: bool = False) -> float:
    """Return ``reward`` as a finite float; with ``unit_interval`` it must lie in [0, 1].

    >>> check_reward(-2)
    -2.0
    >>> check_reward(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: reward must be finite, got nan
    """
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
        raise TypeError(f"reward must be a real number, got {type(reward).__name__}")
    r = float(reward)
    if not np.isfinite(r):
        raise ValueError(f"reward must be finite, got {r}")
    if unit_interval and not 0.0 <= r <= 1.0:
        raise ValueError(f"reward must lie in [0, 1] for this policy, got {r}: {_NORMALIZER_HINT}")
    return r


def check_context(context: ArrayLike | None, dim: int,
                  dtype: type[np.floating[Any]] = np.float64) -> FloatArray:
    """Return ``context`` as a 1-D finite array of length ``dim``.

    >>> check_context([1, 2], 2)
    array([1., 2.])
    >>> check_context([1, 2, 3], 2)
    Traceback (most recent call last):
    ...
    ValueError: context must have shape (2,), got (3,)
    """
    if context is None:
        raise ValueError(f"this policy is contextual: pass a context vector of dimension {dim}")
    x = np.asarray(context, dtype=dtype)
    if x.ndim != 1 or x.shape[0] != dim:
        raise ValueError(f"context must have shape ({dim},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("context contains NaN or inf")
    return x


def check_contexts(contexts: ArrayLike | None, dim: int,
                   dtype: type[np.floating[Any]] = np.float64) -> FloatArray:
    """Return ``contexts`` as a 2-D finite array of shape ``(n, dim)``.

    >>> check_contexts([[1, 2], [3, 4]], 2).shape
    (2, 2)
    """
    if contexts is None:
        raise ValueError(f"this policy is contextual: pass contexts of shape (n, {dim})")
    x = np.asarray(contexts, dtype=dtype)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"contexts must have shape (n, {dim}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("contexts contain NaN or inf")
    return x


def check_batch(arms: ArrayLike, rewards: ArrayLike, n_arms: int, *,
                unit_interval: bool = False) -> tuple[IntArray, FloatArray]:
    """Validate a batch of (arm, reward) feedback and return them as int64 and float64 arrays.

    >>> arms, rewards = check_batch([0, 2], [1, 0.5], n_arms=3)
    >>> arms.tolist(), rewards.tolist()
    ([0, 2], [1.0, 0.5])
    """
    a = np.asarray(arms)
    r = np.asarray(rewards, dtype=np.float64)
    if a.ndim != 1 or r.ndim != 1 or a.shape[0] != r.shape[0]:
        raise ValueError(f"arms and rewards must be 1-D of equal length, got shapes {a.shape} and {r.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"arms must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    bad = (a < 0) | (a >= n_arms)
    if np.any(bad):
        raise ValueError(f"arm {int(a[bad][0])} is out of range: this policy has arms 0..{n_arms - 1}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards contain NaN or inf")
    if unit_interval and np.any((r < 0) | (r > 1)):
        bad_r = float(r[(r < 0) | (r > 1)][0])
        raise ValueError(f"reward must lie in [0, 1] for this policy, got {bad_r}: {_NORMALIZER_HINT}")
    return a, r


def check_k(k: int, n_arms: int) -> int:
    """Return the slate size ``k`` as an int in ``[1, n_arms]``.

    >>> check_k(2, 3)
    2
    """
    k = check_positive_int("k", k)
    if k > n_arms:
        raise ValueError(f"k must be <= n_arms ({n_arms}), got {k}")
    return k
