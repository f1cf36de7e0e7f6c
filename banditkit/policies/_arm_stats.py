"""Per-arm reward counts and sums, the learned state of the sample-mean policies."""

from __future__ import annotations

from typing import Any

import numpy as np

from banditkit.base import BasePolicy


class ArmStatistics(BasePolicy):
    """A policy whose learned state is each arm's count and reward sum (UCB1, epsilon-greedy, Thompson).

    Subclasses call ``_init_stats()`` in ``__init__``; saving, loading and adding or removing arms are
    handled here.
    """

    def _init_stats(self) -> None:
        self._counts = np.zeros(self._n_arms)
        self._sums = np.zeros(self._n_arms)

    def _get_state(self) -> dict[str, Any]:
        return {"counts": self._counts.copy(), "sums": self._sums.copy()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._counts = np.asarray(state["counts"], dtype=np.float64).copy()
        self._sums = np.asarray(state["sums"], dtype=np.float64).copy()

    def _add_arm(self) -> None:
        self._counts = np.append(self._counts, 0.0)
        self._sums = np.append(self._sums, 0.0)

    def _remove_arm(self, arm: int) -> None:
        self._counts = np.delete(self._counts, arm)
        self._sums = np.delete(self._sums, arm)
