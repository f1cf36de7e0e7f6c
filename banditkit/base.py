"""The ``Policy`` protocol every bandit policy follows, and the base class that implements its plumbing.

One signature serves context-free and contextual policies alike: context-free policies accept and
ignore a context, contextual ones require it. Arms are the integers ``0..n_arms-1``; ``remove_arm``
shifts the arms above the removed one down by one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from banditkit._validation import (
    FloatArray,
    IntArray,
    check_arm,
    check_batch,
    check_context,
    check_contexts,
    check_k,
    check_n_arms,
    check_positive_int,
    check_reward,
)

Seed = int | np.random.Generator | None

STATE_VERSION = 1


@runtime_checkable
class Policy(Protocol):
    """What every banditkit policy offers."""

    @property
    def n_arms(self) -> int: ...

    def select(self, context: ArrayLike | None = None) -> int: ...

    def select_batch(self, contexts: ArrayLike | None = None, *, n: int | None = None) -> IntArray: ...

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray: ...

    def probabilities(self, context: ArrayLike | None = None) -> FloatArray: ...

    def update(self, arm: int, reward: float, context: ArrayLike | None = None) -> None: ...

    def update_batch(self, arms: ArrayLike, rewards: ArrayLike,
                     contexts: ArrayLike | None = None) -> None: ...

    def add_arm(self) -> int: ...

    def remove_arm(self, arm: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


_REGISTRY: dict[str, type[BasePolicy]] = {}


def policy_class(name: str) -> type[BasePolicy]:
    """Return the policy class registered under ``name`` (its class name)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy class {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


class BasePolicy(ABC):
    """Validation, randomness, batching and state plumbing shared by all policies.

    Subclasses implement ``_select``, ``_probabilities``, ``_update``, ``_hyperparams``,
    ``_get_state``/``_set_state`` and ``_add_arm``/``_remove_arm``; they set ``contextual``
    (a context of dimension ``dim`` is required) and ``unit_rewards`` (rewards must be in [0, 1]).
    """

    contextual: ClassVar[bool] = False
    unit_rewards: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None):
            _REGISTRY[cls.__name__] = cls

    def __init__(self, n_arms: int, *, dim: int | None = None, seed: Seed = None) -> None:
        self._n_arms = check_n_arms(n_arms)
        if self.contextual:
            if dim is None:
                raise ValueError(f"{type(self).__name__} is contextual: pass dim, the context dimension")
            self.dim: int | None = check_positive_int("dim", dim)
        else:
            self.dim = None if dim is None else check_positive_int("dim", dim)
        self._rng = np.random.default_rng(seed)

    # ----------------------------------------------------------------- public API
    @property
    def n_arms(self) -> int:
        """The number of arms."""
        return self._n_arms

    def select(self, context: ArrayLike | None = None) -> int:
        """Choose one arm for ``context`` (ignored by context-free policies)."""
        return int(self._select(self._context(context)))

    def select_batch(self, contexts: ArrayLike | None = None, *, n: int | None = None) -> IntArray:
        """Choose an arm for each row of ``contexts`` (or ``n`` times without context), no update between."""
        xs = self._contexts(contexts, n)
        return np.array([self._select(x) for x in xs], dtype=np.int64)

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray:
        """Choose a slate of ``k`` distinct arms, best first."""
        k = check_k(k, self._n_arms)
        scores = self._ranking_scores(self._context(context))
        return np.argsort(-scores, kind="stable")[:k].astype(np.int64)

    def probabilities(self, context: ArrayLike | None = None) -> FloatArray:
        """The probability of each arm under the policy's own randomization (one-hot if deterministic)."""
        p = np.asarray(self._probabilities(self._context(context)), dtype=np.float64)
        out: FloatArray = p / p.sum()
        return out

    def update(self, arm: int, reward: float, context: ArrayLike | None = None) -> None:
        """Learn from the ``reward`` observed for ``arm`` in ``context``."""
        a = check_arm(arm, self._n_arms)
        r = check_reward(reward, unit_interval=self.unit_rewards)
        self._update(a, r, self._context(context))

    def update_batch(self, arms: ArrayLike, rewards: ArrayLike, contexts: ArrayLike | None = None) -> None:
        """Learn from a batch of (possibly delayed) feedback, applied in order."""
        a, r = check_batch(arms, rewards, self._n_arms, unit_interval=self.unit_rewards)
        xs = self._contexts(contexts, len(a))
        if len(xs) != len(a):
            raise ValueError(f"got {len(a)} arms but {len(xs)} contexts")
        self._update_batch(a, r, xs)

    def add_arm(self) -> int:
        """Add a new arm with no history and return its index (``n_arms - 1``)."""
        self._add_arm()
        self._n_arms += 1
        return self._n_arms - 1

    def remove_arm(self, arm: int) -> None:
        """Remove ``arm``; arms above it shift down by one."""
        a = check_arm(arm, self._n_arms)
        if self._n_arms == 1:
            raise ValueError("cannot remove the last arm: a policy needs at least one")
        self._remove_arm(a)
        self._n_arms -= 1

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: hyperparameters, learned state and the generator state."""
        return {
            "policy": type(self).__name__,
            "version": STATE_VERSION,
            "n_arms": self._n_arms,
            "hyperparams": self._hyperparams(),
            "rng": self._rng.bit_generator.state,
            "state": self._get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (hyperparameters included)."""
        name = state.get("policy")
        if name != type(self).__name__:
            raise ValueError(f"state is for policy {name!r}, not {type(self).__name__!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}; expected {STATE_VERSION}")
        for key, value in state["hyperparams"].items():
            setattr(self, key, value)
        self._n_arms = check_n_arms(state["n_arms"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._set_state(state["state"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BasePolicy:
        """Build a policy of the class named in ``state`` and restore it."""
        klass = policy_class(state["policy"])
        if not issubclass(klass, cls):
            raise ValueError(f"state is for {klass.__name__}, which is not a {cls.__name__}")
        policy = klass(n_arms=state["n_arms"], **state["hyperparams"])
        policy.load_state_dict(state)
        return policy

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._hyperparams().items())
        return f"{type(self).__name__}(n_arms={self._n_arms}, {params})"

    # ----------------------------------------------------------------- helpers
    def _context(self, context: ArrayLike | None) -> FloatArray | None:
        if not self.contextual:
            return None
        assert self.dim is not None
        return check_context(context, self.dim, self._dtype())

    def _contexts(self, contexts: ArrayLike | None, n: int | None) -> list[FloatArray | None] | FloatArray:
        if self.contextual:
            assert self.dim is not None
            return check_contexts(contexts, self.dim, self._dtype())
        if contexts is not None:
            n_rows = int(np.shape(contexts)[0]) if np.ndim(contexts) else 0
            if n is not None and n != n_rows:
                raise ValueError(f"n={n} disagrees with {n_rows} context rows")
            n = n_rows
        if n is None:
            raise ValueError("pass contexts or n, the number of choices to make")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [None] * n

    def _dtype(self) -> type[np.floating[Any]]:
        return np.float64

    def _update_batch(self, arms: IntArray, rewards: FloatArray,
                      contexts: list[FloatArray | None] | FloatArray) -> None:
        for a, r, x in zip(arms, rewards, contexts, strict=True):
            self._update(int(a), float(r), x)

    def _ranking_scores(self, context: FloatArray | None) -> FloatArray:
        """Scores whose descending order is the slate; the default ranks by the selection probabilities
        with random tie-breaking noise below their resolution."""
        p = self._probabilities(context)
        return np.asarray(p, dtype=np.float64) + self._rng.random(self._n_arms) * 1e-12

    # ----------------------------------------------------------------- for subclasses
    @abstractmethod
    def _select(self, context: FloatArray | None) -> int: ...

    @abstractmethod
    def _probabilities(self, context: FloatArray | None) -> FloatArray: ...

    @abstractmethod
    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None: ...

    @abstractmethod
    def _hyperparams(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serializable) that rebuild this policy, ``n_arms`` excluded."""

    @abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """Learned state: scalars, lists and numpy arrays only."""

    @abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None: ...

    @abstractmethod
    def _add_arm(self) -> None: ...

    @abstractmethod
    def _remove_arm(self, arm: int) -> None: ...
