"""Supervised-to-bandit: a classification dataset becomes a contextual bandit (reward 1 for the label)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from banditkit.envs.base import BaseEnvironment, Seed
from banditkit.validation import FloatArray, IntArray

__all__ = ["SupervisedEnv"]


class SupervisedEnv(BaseEnvironment):
    """Each round shows one row of ``X`` as the context; arm ``k`` pays 1 if ``classes[k]`` is its label.

    Arms are the sorted distinct labels (``classes``); for labels ``0..K-1`` arm ``k`` is label
    ``k``. Rows are visited in a random order (``shuffle=True``, reshuffled every pass) or in order.

    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> env = SupervisedEnv(X, ["b", "a", "b"], seed=0, shuffle=False)
    >>> env.n_arms, env.dim, env.classes.tolist()
    (2, 2, ['a', 'b'])
    >>> env.context(), env.pull(1), env.expected_rewards()
    (array([0., 1.]), 1.0, array([0., 1.]))
    >>> env.step()
    >>> env.pull(0)
    1.0
    """

    def __init__(self, X: ArrayLike, y: ArrayLike, seed: Seed = None, shuffle: bool = True) -> None:
        x = np.asarray(X, dtype=np.float64)
        labels = np.asarray(y)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"X must be a non-empty 2-D array (rows, features), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("X contains NaN or inf")
        if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
            raise ValueError(
                f"y must be 1-D with one label per row of X ({x.shape[0]}), got shape {labels.shape}"
            )
        classes, codes = np.unique(labels, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(f"y must hold at least 2 distinct labels (one arm each), got {classes.tolist()}")
        super().__init__(int(classes.shape[0]), dim=int(x.shape[1]), seed=seed)
        self._X = x
        self._codes: IntArray = codes.astype(np.int64).reshape(-1)
        self._classes: NDArray[Any] = classes
        self.shuffle = bool(shuffle)
        self._reset()

    @property
    def classes(self) -> NDArray[Any]:
        """The label of each arm."""
        return self._classes.copy()

    @property
    def n_rows(self) -> int:
        """The number of rows in the dataset."""
        return int(self._X.shape[0])

    def label(self) -> int:
        """The correct arm for the current context."""
        return int(self._codes[self._row])

    def context(self) -> FloatArray:
        """The current row of ``X``."""
        row: FloatArray = self._X[self._row].copy()
        return row

    def expected_rewards(self) -> FloatArray:
        out = np.zeros(self._n_arms)
        out[self._codes[self._row]] = 1.0
        return out

    def _new_order(self) -> None:
        n = self._X.shape[0]
        self._order = self._context_rng.permutation(n) if self.shuffle else np.arange(n)

    def _reset(self) -> None:
        self._new_order()
        self._row = int(self._order[0])

    def _advance(self) -> None:
        i = self._t % self._X.shape[0]
        if i == 0:
            self._new_order()
        self._row = int(self._order[i])

    def _pull(self, arm: int) -> float:
        return 1.0 if arm == self._codes[self._row] else 0.0

    def __repr__(self) -> str:
        return (f"SupervisedEnv(n_rows={self.n_rows}, n_arms={self._n_arms}, dim={self._dim}, "
                f"shuffle={self.shuffle})")
