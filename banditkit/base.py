"""The ``Policy`` protocol every bandit policy follows, and the base class that implements its plumbing.

One signature serves context-free and contextual policies alike: context-free policies accept and
ignore a context, contextual ones require it. Arms are the integers ``0..n_arms-1``; ``remove_arm``
shifts the arms above the removed one down by one.

``arm_scores(context)`` is the one way to read the per-arm values behind a policy's choice, for every
policy: float64, one per arm, computed without drawing randomness or changing the policy. They are
LinUCB's upper confidence bounds, the posterior means of linear and plain Thompson sampling, EXP3's
probabilities, epsilon-greedy's empirical means, UCB1's indices (``inf`` for unplayed arms), uniform
probabilities for ``RandomPolicy`` and a one-hot of the next arm for ``FixedArm`` and ``RoundRobin``.

Saved states name their class; ``policy_class`` maps the name back (``banditkit.load`` uses it). Only
classes declared with ``register=True`` are registered, as banditkit's own are. States name
banditkit's classes by their bare name and any other by its ``module.QualName``, so a class of the
same name elsewhere (a user's, a test's) never shadows one of banditkit's.

>>> import numpy as np
>>> class Greedy(BasePolicy, register=True):  # a policy of one's own that banditkit.load can rebuild
...     def __init__(self, n_arms, *, seed=None):
...         super().__init__(n_arms, seed=seed)
...         self.total = np.zeros(n_arms)
...     def _select(self, context): return int(np.argmax(self.total))
...     def _probabilities(self, context): return np.eye(self.n_arms)[self._select(context)]
...     def _update(self, arm, reward, context): self.total[arm] += reward
...     def _hyperparams(self): return {}
...     def _get_state(self): return {"total": self.total.copy()}
...     def _set_state(self, state): self.total = np.array(state["total"], dtype=float)
...     def _add_arm(self): self.total = np.append(self.total, 0.0)
...     def _remove_arm(self, arm): self.total = np.delete(self.total, arm)
>>> state = Greedy(2).state_dict()
>>> state["policy"].endswith(".Greedy"), policy_class(state["policy"]) is Greedy
(True, True)
"""

from __future__ import annotations

import inspect
import sys
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from banditkit.validation import (
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
    """What every banditkit policy offers (``arm_scores``: see the module docstring)."""

    @property
    def n_arms(self) -> int: ...

    def select(self, context: ArrayLike | None = None) -> int: ...

    def select_batch(self, contexts: ArrayLike | None = None, *, n: int | None = None) -> IntArray: ...

    def select_topk(self, context: ArrayLike | None = None, k: int = 1) -> IntArray: ...

    def probabilities(self, context: ArrayLike | None = None) -> FloatArray: ...

    def arm_scores(self, context: ArrayLike | None = None) -> FloatArray: ...

    def update(self, arm: int, reward: float, context: ArrayLike | None = None) -> None: ...

    def update_batch(self, arms: ArrayLike, rewards: ArrayLike,
                     contexts: ArrayLike | None = None) -> None: ...

    def add_arm(self) -> int: ...

    def remove_arm(self, arm: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# Classes declared with register=True, by ``module.QualName``.
_REGISTRY: dict[str, type[BasePolicy]] = {}


def _full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_builtin(cls: type) -> bool:
    """Whether ``cls`` is banditkit's own: importable from a banditkit module under its name (a class
    defined in an example or a function is not)."""
    module = cls.__module__
    in_package = module == "banditkit" or module.startswith("banditkit.")
    return in_package and getattr(sys.modules.get(module), cls.__qualname__, None) is cls


def policy_class(name: str) -> type[BasePolicy]:
    """Return the registered policy class that saved states call ``name``.

    ``name`` is a registered class's ``module.QualName``, the bare class name of one of banditkit's own
    (``"LinUCB"``), or the bare class name of exactly one other registered class (as states saved
    before full names were used call it).

    >>> policy_class("LinUCB") is policy_class("banditkit.policies.linucb.LinUCB")
    True
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    same_name = [c for c in _REGISTRY.values() if c.__name__ == name]
    builtin = [c for c in same_name if _is_builtin(c)]
    if builtin or len(same_name) == 1:
        return (builtin or same_name)[0]
    known = sorted(c._state_name() for c in _REGISTRY.values())
    raise ValueError(f"unknown policy class {name!r}; known: {', '.join(known)}. A policy class of your "
                     "own is found once declared with register=True: class MyPolicy(BasePolicy, register=True)")


class BasePolicy(ABC):
    """Validation, randomness, batching and state plumbing shared by all policies.

    Subclasses implement ``_select``, ``_probabilities``, ``_update``, ``_hyperparams``,
    ``_get_state``/``_set_state`` and ``_add_arm``/``_remove_arm``; they set ``contextual``
    (a context of dimension ``dim`` is required) and ``unit_rewards`` (rewards must be in [0, 1]).
    ``_arm_scores`` defaults to the selection probabilities. A subclass declared with
    ``register=True`` (``class MyPolicy(BasePolicy, register=True)``) can be rebuilt by
    ``from_state_dict`` and ``banditkit.load`` from its saved state.
    """

    contextual: ClassVar[bool] = False
    unit_rewards: ClassVar[bool] = False

    def __init_subclass__(cls, *, register: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register:
            _REGISTRY[_full_name(cls)] = cls

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

    def arm_scores(self, context: ArrayLike | None = None) -> FloatArray:
        """The per-arm values that drive the choice for ``context`` (see the module docstring), float64
        of shape ``(n_arms,)``; draws nothing and changes nothing.

        >>> from banditkit import UCB1
        >>> policy = UCB1(3)
        >>> policy.update(0, 1.0)
        >>> policy.arm_scores().tolist()  # the indices; inf for arms never played
        [1.0, inf, inf]
        """
        scores: FloatArray = np.asarray(self._arm_scores(self._context(context)), dtype=np.float64)
        return scores

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
            "policy": self._state_name(),
            "version": STATE_VERSION,
            "n_arms": self._n_arms,
            "hyperparams": self._hyperparams(),
            "rng": self._rng.bit_generator.state,
            "state": self._get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (hyperparameters included)."""
        self._check_state_header(state)
        for key, value in self._saved_hyperparams(state["hyperparams"]).items():
            setattr(self, key, value)
        self._n_arms = check_n_arms(state["n_arms"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._set_state(state["state"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BasePolicy:
        """Build a policy of the class named in ``state`` (``cls`` itself when it is that class, else the
        registered one) and restore it."""
        klass = cls if cls._names_self(state.get("policy")) else policy_class(str(state.get("policy")))
        if not issubclass(klass, cls):
            raise ValueError(f"state is for {klass.__name__}, which is not a {cls.__name__}")
        policy = klass(n_arms=state["n_arms"], **klass._saved_hyperparams(state["hyperparams"]))
        policy.load_state_dict(state)
        return policy

    @classmethod
    def _state_name(cls) -> str:
        """The class name states record: the bare name for banditkit's own, else ``module.QualName``."""
        return cls.__name__ if _is_builtin(cls) else _full_name(cls)

    @classmethod
    def _names_self(cls, name: object) -> bool:
        """Whether a state naming ``name`` is for this very class (by either of its names)."""
        return not inspect.isabstract(cls) and name in (cls.__name__, _full_name(cls))

    @classmethod
    def _saved_hyperparams(cls, hyperparams: dict[str, Any]) -> dict[str, Any]:
        """The constructor keyword arguments for ``hyperparams`` read from a state (which classes that
        renamed one may have saved under its old name)."""
        return hyperparams

    def _check_state_header(self, state: dict[str, Any]) -> None:
        name = state.get("policy")
        if name not in (type(self).__name__, _full_name(type(self))):
            raise ValueError(f"state is for policy {name!r}, not {type(self).__name__!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}; expected {STATE_VERSION}")

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

    def _arm_scores(self, context: FloatArray | None) -> FloatArray:
        """What ``arm_scores`` returns for a checked context: by default the selection probabilities,
        for policies whose choice they drive."""
        p = np.asarray(self._probabilities(context), dtype=np.float64)
        out: FloatArray = p / p.sum()
        return out

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
