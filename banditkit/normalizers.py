"""Reward normalizers: map raw rewards (losses, scores, any scale) into [0, 1] from their running history.

Every normalizer follows one rule: the reward being normalized counts as part of the history it is
normalized against. ``normalizer(r)`` equals ``normalizer.normalize(r)`` followed by
``normalizer.observe(r)``. ``Normalized`` wraps any policy so that its ``update``/``update_batch``
see normalized rewards, which is what policies that need rewards in [0, 1] (EXP3, Beta Thompson
sampling) ask for.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from banditkit.base import STATE_VERSION, BasePolicy, Policy, policy_class
from banditkit.validation import (
    FloatArray,
    IntArray,
    check_batch,
    check_positive_int,
    check_real,
    check_reward,
)

__all__ = [
    "BaseNormalizer",
    "MinMaxNormalizer",
    "Normalized",
    "Normalizer",
    "QuantileNormalizer",
    "ZScoreNormalizer",
    "normalizer_from_state_dict",
]


@runtime_checkable
class Normalizer(Protocol):
    """What every reward normalizer offers.

    >>> isinstance(QuantileNormalizer(), Normalizer), isinstance(object(), Normalizer)
    (True, False)
    """

    def __call__(self, reward: float) -> float: ...

    def normalize(self, reward: float) -> float: ...

    def observe(self, reward: float) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


_NORMALIZERS: dict[str, type[BaseNormalizer]] = {}


def normalizer_from_state_dict(state: dict[str, Any]) -> BaseNormalizer:
    """Rebuild a normalizer from what its ``state_dict`` returned.

    >>> q = QuantileNormalizer()
    >>> _ = [q(r) for r in (1.0, 2.0, 3.0)]
    >>> normalizer_from_state_dict(q.state_dict()).normalize(2.5) == q.normalize(2.5)
    True
    """
    name = state.get("normalizer")
    try:
        klass = _NORMALIZERS[str(name)]
    except KeyError:
        raise ValueError(f"unknown normalizer {name!r}; known: {', '.join(sorted(_NORMALIZERS))}") from None
    normalizer = klass(**state["params"])
    normalizer.load_state_dict(state)
    return normalizer


class BaseNormalizer(ABC):
    """Validation and state plumbing; subclasses implement ``_normalize``, ``_observe`` and the state hooks.

    Subclasses are registered by class name so that ``normalizer_from_state_dict`` can rebuild them.

    >>> class Sign(BaseNormalizer):  # 1 for positive rewards, 0 otherwise; no history
    ...     def _normalize(self, reward): return float(reward > 0)
    ...     def _observe(self, reward): pass
    ...     def _params(self): return {}
    ...     def _set_params(self, params): pass
    ...     def _get_state(self): return {}
    ...     def _set_state(self, state): pass
    >>> Sign()(2.5), type(normalizer_from_state_dict(Sign().state_dict())).__name__
    (1.0, 'Sign')
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None):
            _NORMALIZERS[cls.__name__] = cls

    def __call__(self, reward: float) -> float:
        """Normalize ``reward`` against the history including it, then add it to the history."""
        r = check_reward(reward)
        value = self._normalize(r)
        self._observe(r)
        return value

    def normalize(self, reward: float) -> float:
        """Normalize ``reward`` as ``__call__`` would, without changing the history."""
        return self._normalize(check_reward(reward))

    def observe(self, reward: float) -> None:
        """Add ``reward`` to the history without normalizing it."""
        self._observe(check_reward(reward))

    def state_dict(self) -> dict[str, Any]:
        """Parameters and history as plain numbers and lists (JSON-serializable)."""
        return {
            "normalizer": type(self).__name__,
            "version": STATE_VERSION,
            "params": self._params(),
            "state": self._get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (parameters included)."""
        name = state.get("normalizer")
        if name != type(self).__name__:
            raise ValueError(f"state is for normalizer {name!r}, not {type(self).__name__!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}; expected {STATE_VERSION}")
        self._set_params(state["params"])
        self._set_state(state["state"])

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    @abstractmethod
    def _normalize(self, reward: float) -> float: ...

    @abstractmethod
    def _observe(self, reward: float) -> None: ...

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serializable)."""

    @abstractmethod
    def _set_params(self, params: dict[str, Any]) -> None: ...

    @abstractmethod
    def _get_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None: ...


class QuantileNormalizer(BaseNormalizer):
    """LASeR's normalizer: the ``low``/``high`` quantiles of the reward history map to 0 and 1, clipped.

    The history includes the reward being normalized. Quantiles interpolate linearly between order
    statistics (numpy's default). With fewer than two distinct values in the history the result is
    0.5; if the two quantiles coincide, rewards below/at/above them give 0/0.5/1. With ``window`` only
    the last ``window`` rewards (the new one included) count.

    >>> q = QuantileNormalizer(low=0.2, high=0.8)
    >>> for r in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0):
    ...     q.observe(r)
    >>> q.normalize(5.0)  # history + 5.0 is 0..10, whose 20th/80th percentiles are 2.0 and 8.0
    0.5
    >>> [q.normalize(r) for r in (-1.0, 2.0, 8.0, 100.0)]
    [0.0, 0.0, 1.0, 1.0]
    >>> q(5.0), len(q)  # normalize, then keep
    (0.5, 11)
    """

    def __init__(self, low: float = 0.2, high: float = 0.8, window: int | None = None) -> None:
        self._set_params({"low": low, "high": high, "window": window})
        self._sorted: list[float] = []
        self._recent: deque[float] = deque()

    @property
    def low(self) -> float:
        """The quantile mapped to 0."""
        return self._low

    @property
    def high(self) -> float:
        """The quantile mapped to 1."""
        return self._high

    @property
    def window(self) -> int | None:
        """How many recent rewards count (``None``: all of them)."""
        return self._window

    def __len__(self) -> int:
        return len(self._recent)

    def _set_params(self, params: dict[str, Any]) -> None:
        low = check_real("low", params["low"], low=0.0, high=1.0)
        high = check_real("high", params["high"], low=0.0, high=1.0)
        if not low < high:
            raise ValueError(f"low must be < high, got low={low} and high={high}; e.g. low=0.2, high=0.8")
        window: int | None = params["window"]
        if window is not None:
            window = check_positive_int("window", window)
            if window < 2:
                raise ValueError(f"window must be >= 2 (or None for the whole history), got {window}")
        self._low, self._high, self._window = low, high, window

    def _params(self) -> dict[str, Any]:
        return {"low": self._low, "high": self._high, "window": self._window}

    def _normalize(self, reward: float) -> float:
        base = self._sorted
        if self._window is not None and len(self._recent) >= self._window:
            # the oldest reward leaves the window when this one enters
            base = base.copy()
            del base[bisect.bisect_left(base, self._recent[0])]
        n = len(base) + 1
        pos = bisect.bisect_left(base, reward)

        def order_stat(k: int) -> float:  # k-th smallest of base + [reward]
            return base[k] if k < pos else reward if k == pos else base[k - 1]

        if order_stat(0) == order_stat(n - 1):
            return 0.5
        q_low = _interpolate(order_stat, self._low * (n - 1))
        q_high = _interpolate(order_stat, self._high * (n - 1))
        if q_high <= q_low:
            return 0.0 if reward < q_low else 1.0 if reward > q_low else 0.5
        return min(1.0, max(0.0, (reward - q_low) / (q_high - q_low)))

    def _observe(self, reward: float) -> None:
        if self._window is not None and len(self._recent) >= self._window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(reward)
        bisect.insort(self._sorted, reward)

    def _get_state(self) -> dict[str, Any]:
        return {"history": list(self._recent)}

    def _set_state(self, state: dict[str, Any]) -> None:
        history = [check_reward(v) for v in state["history"]]
        if self._window is not None:
            history = history[-self._window:]
        self._recent = deque(history)
        self._sorted = sorted(history)


def _interpolate(order_stat: Any, position: float) -> float:
    """Linear interpolation between order statistics at a fractional ``position``."""
    nearest = round(position)
    if abs(position - nearest) < 1e-9:  # 0.2 * 15 is 3.0000000000000004
        return float(order_stat(nearest))
    below = math.floor(position)
    a, b = float(order_stat(below)), float(order_stat(below + 1))
    return a + (b - a) * (position - below)


class MinMaxNormalizer(BaseNormalizer):
    """Running min-max scaling: ``(r - min) / (max - min)`` over the history including ``r``.

    Returns 0.5 while the history holds a single distinct value.

    >>> m = MinMaxNormalizer()
    >>> [m(r) for r in (2.0, 4.0, 3.0, 0.0)]
    [0.5, 1.0, 0.5, 0.0]
    >>> m.normalize(1.0)
    0.25
    """

    def __init__(self) -> None:
        self._min = math.inf
        self._max = -math.inf
        self._count = 0

    def _params(self) -> dict[str, Any]:
        return {}

    def _set_params(self, params: dict[str, Any]) -> None:
        if params:
            raise ValueError(f"MinMaxNormalizer takes no parameters, got {sorted(params)}")

    def _normalize(self, reward: float) -> float:
        lo, hi = min(self._min, reward), max(self._max, reward)
        if hi == lo:
            return 0.5
        return min(1.0, max(0.0, (reward - lo) / (hi - lo)))

    def _observe(self, reward: float) -> None:
        self._min = min(self._min, reward)
        self._max = max(self._max, reward)
        self._count += 1

    def _get_state(self) -> dict[str, Any]:
        if self._count == 0:
            return {"count": 0, "min": None, "max": None}
        return {"count": self._count, "min": self._min, "max": self._max}

    def _set_state(self, state: dict[str, Any]) -> None:
        count = int(state["count"])
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count == 0:
            self._min, self._max, self._count = math.inf, -math.inf, 0
            return
        lo, hi = check_reward(state["min"]), check_reward(state["max"])
        if lo > hi:
            raise ValueError(f"min must be <= max, got min={lo} and max={hi}")
        self._min, self._max, self._count = lo, hi, count


class ZScoreNormalizer(BaseNormalizer):
    """Running z-score, clipped to ``[-clip, clip]`` and mapped to [0, 1] as ``(z + clip) / (2 clip)``.

    Mean and (population) variance are kept by Welford's algorithm over the history including the
    reward being normalized. Returns 0.5 while the history has zero variance.

    >>> z = ZScoreNormalizer(clip=2.0)
    >>> [z(r) for r in (1.0, 2.0, 3.0, 4.0, 5.0)][-1]  # z = 1.414 -> (1.414 + 2) / 4
    0.8535533905932737
    >>> z.normalize(3.0)  # the mean of the history + 3.0: z = 0
    0.5
    >>> round(z.mean, 3), round(z.std, 3)
    (3.0, 1.414)
    """

    def __init__(self, clip: float = 3.0) -> None:
        self._set_params({"clip": clip})
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0

    @property
    def clip(self) -> float:
        """The z-score mapped to 1 (and ``-clip`` to 0)."""
        return self._clip

    @property
    def mean(self) -> float:
        """The running mean (0.0 before any reward)."""
        return self._mean

    @property
    def std(self) -> float:
        """The running population standard deviation."""
        return math.sqrt(self._m2 / self._count) if self._count else 0.0

    def _params(self) -> dict[str, Any]:
        return {"clip": self._clip}

    def _set_params(self, params: dict[str, Any]) -> None:
        self._clip = check_real("clip", params["clip"], low=0.0, low_open=True)

    def _welford(self, reward: float) -> tuple[int, float, float]:
        count = self._count + 1
        delta = reward - self._mean
        mean = self._mean + delta / count
        m2 = self._m2 + delta * (reward - mean)
        return count, mean, m2

    def _normalize(self, reward: float) -> float:
        count, mean, m2 = self._welford(reward)
        var = m2 / count
        if var <= 0.0:
            return 0.5
        z = (reward - mean) / math.sqrt(var)
        c = self._clip
        return (min(c, max(-c, z)) + c) / (2.0 * c)

    def _observe(self, reward: float) -> None:
        self._count, self._mean, self._m2 = self._welford(reward)

    def _get_state(self) -> dict[str, Any]:
        return {"count": self._count, "mean": self._mean, "m2": self._m2}

    def _set_state(self, state: dict[str, Any]) -> None:
        count = int(state["count"])
        mean = check_real("mean", state["mean"])
        m2 = check_real("m2", state["m2"], low=0.0)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._count, self._mean, self._m2 = count, mean, m2


class Normalized(BasePolicy, register=True):
    """Wrap ``policy`` so that ``update``/``update_batch`` normalize rewards first; everything else delegates.

    The normalizer's history only changes once the wrapped policy has accepted the feedback, so a
    rejected update (bad arm, bad context) leaves both untouched. Saved state nests the wrapped
    policy's state and the normalizer's.

    >>> class BestTotal(BasePolicy):  # a tiny policy that needs rewards in [0, 1]
    ...     unit_rewards = True
    ...     def __init__(self, n_arms, *, seed=None):
    ...         super().__init__(n_arms, seed=seed)
    ...         self.total = np.zeros(n_arms)
    ...     def _select(self, context): return int(np.argmax(self.total))
    ...     def _probabilities(self, context): return np.eye(self.n_arms)[self._select(context)]
    ...     def _update(self, arm, reward, context): self.total[arm] += reward
    ...     def _hyperparams(self): return {}
    ...     def _get_state(self): return {"total": self.total}
    ...     def _set_state(self, state): self.total = np.asarray(state["total"], dtype=float)
    ...     def _add_arm(self): self.total = np.append(self.total, 0.0)
    ...     def _remove_arm(self, arm): self.total = np.delete(self.total, arm)
    >>> policy = Normalized(BestTotal(2), QuantileNormalizer())
    >>> policy.update_batch([0, 1, 1], [-3.0, -1.0, -2.0])  # losses as rewards
    >>> policy.inner.total.tolist()
    [0.5, 1.5]
    >>> policy.select()
    1
    """

    contextual: ClassVar[bool] = False  # per instance: the wrapped policy's flag (set in __init__)

    def __init__(self, policy: Policy, normalizer: Normalizer) -> None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must follow the banditkit Policy protocol, got {type(policy).__name__}")
        if not isinstance(normalizer, Normalizer):
            raise TypeError(
                f"normalizer must follow the banditkit Normalizer protocol, got {type(normalizer).__name__}"
            )
        self._policy = policy
        self._normalizer = normalizer
        # an instance attribute shadows the class flag, so code asking `policy.contextual` sees the inner one
        object.__setattr__(self, "contextual", bool(getattr(policy, "contextual", False)))
        dim: int | None = getattr(policy, "dim", None)
        self.dim = dim
        self._rng = np.random.default_rng(0)  # unused: all randomness lives in the wrapped policy

    @property
    def inner(self) -> Policy:
        """The wrapped policy."""
        return self._policy

    @property
    def normalizer(self) -> Normalizer:
        """The reward normalizer."""
        return self._normalizer

    @property
    def n_arms(self) -> int:
        return self._policy.n_arms

    # ----------------------------------------------------------------- delegation
    def select(self, context: ArrayLike | None = None) -> int:
        return self._policy.select(context)

    def select_batch(self, contexts: ArrayLike | None = None, *, n: int | None = None) -> IntArray:
        return self._policy.select_batch(contexts, n=n)

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray:
        return self._policy.select_topk(context, k)

    def probabilities(self, context: ArrayLike | None = None) -> FloatArray:
        return self._policy.probabilities(context)

    def arm_scores(self, context: ArrayLike | None = None) -> FloatArray:
        """The wrapped policy's ``arm_scores`` (learned from normalized rewards)."""
        return self._policy.arm_scores(context)

    def update(self, arm: int, reward: float, context: ArrayLike | None = None) -> None:
        """Normalize ``reward`` against the history, update the wrapped policy, then record ``reward``."""
        r = check_reward(reward)
        self._policy.update(arm, self._normalizer.normalize(r), context)
        self._normalizer.observe(r)

    def update_batch(self, arms: ArrayLike, rewards: ArrayLike, contexts: ArrayLike | None = None) -> None:
        """Normalize the rewards in order (each against the history up to and including it), then update."""
        a, r = check_batch(arms, rewards, self.n_arms)
        before = self._normalizer.state_dict()
        normalized = np.array([self._normalizer(float(x)) for x in r], dtype=np.float64)
        try:
            self._policy.update_batch(a, normalized, contexts)
        except BaseException:
            self._normalizer.load_state_dict(before)
            raise

    def add_arm(self) -> int:
        return self._policy.add_arm()

    def remove_arm(self, arm: int) -> None:
        self._policy.remove_arm(arm)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The wrapped policy's state dict and the normalizer's, nested."""
        return {
            "policy": self._state_name(),
            "version": STATE_VERSION,
            "n_arms": self.n_arms,
            "hyperparams": {},
            "inner": self._policy.state_dict(),
            "normalizer": self._normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_header(state)
        self._policy.load_state_dict(state["inner"])
        self._normalizer.load_state_dict(state["normalizer"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BasePolicy:
        """Rebuild the wrapped policy and the normalizer from their nested states."""
        if not cls._names_self(state.get("policy")):
            raise ValueError(f"state is for policy {state.get('policy')!r}, not {cls.__name__!r}")
        inner_state = state["inner"]
        inner = policy_class(inner_state["policy"]).from_state_dict(inner_state)
        policy = cls(inner, normalizer_from_state_dict(state["normalizer"]))
        policy.load_state_dict(state)
        return policy

    def __repr__(self) -> str:
        return f"Normalized({self._policy!r}, {self._normalizer!r})"

    # ----------------------------------------------------------------- BasePolicy hooks (unused above)
    def _select(self, context: FloatArray | None) -> int:
        return self._policy.select(context)

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        return self._policy.probabilities(context)

    def _arm_scores(self, context: FloatArray | None) -> FloatArray:
        return self._policy.arm_scores(context)

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        self.update(arm, reward, context)

    def _hyperparams(self) -> dict[str, Any]:
        return {}

    def _get_state(self) -> dict[str, Any]:
        return {"inner": self._policy.state_dict(), "normalizer": self._normalizer.state_dict()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._policy.load_state_dict(state["inner"])
        self._normalizer.load_state_dict(state["normalizer"])

    def _add_arm(self) -> None:
        self._policy.add_arm()

    def _remove_arm(self, arm: int) -> None:
        self._policy.remove_arm(arm)
