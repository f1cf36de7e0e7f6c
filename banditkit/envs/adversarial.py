"""An oblivious adversarial sequence: Bernoulli rewards whose means shift in phases of growing length."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
from numpy.typing import ArrayLike

from banditkit.base import Policy
from banditkit.envs.base import BaseEnvironment, Seed
from banditkit.validation import FloatArray, check_n_arms, check_positive_int, check_real

__all__ = ["AdversarialEnv"]


class AdversarialEnv(BaseEnvironment):
    """Rewards in {0, 1} drawn from means that an oblivious adversary fixed in advance.

    By default the means follow the "stochastically constrained adversarial" pattern of Zimmert and
    Seldin (2021): phases of geometrically growing length (``first_phase * growth**k`` steps)
    alternate between low means (``gap`` for the best arm, 0 for the others) and high means (1 for
    the best arm, ``1 - gap`` for the others). The best arm (``best_arm``, drawn from ``seed`` when
    ``None``) leads by ``gap`` in every round, so it is also the best fixed arm in hindsight at
    every horizon; but the shifts bias sample means by when each arm was sampled, which misleads
    index policies built for stationary rewards (UCB1's regret here can grow linearly), while EXP3's
    guarantee against the best fixed arm holds. Every arm's reward is drawn in each round whether
    pulled or not, so the sequence does not depend on the policy.

    ``means`` instead gives an explicit ``(n_steps, n_arms)`` table of means, played in order and
    repeated. ``AdversarialEnv.against(policy, n_steps)`` builds such a table against a
    deterministic policy: the arm it would pick pays 0 and every other arm pays 1.

    >>> env = AdversarialEnv(n_arms=3, gap=0.2, first_phase=4, growth=2.0, best_arm=0, seed=0)
    >>> env.expected_rewards()  # phase 0 (4 steps): low
    array([0.2, 0. , 0. ])
    >>> for _ in range(4):
    ...     env.step()
    >>> env.expected_rewards()  # phase 1 (8 steps): high
    array([1. , 0.8, 0.8])
    >>> env.pull(0)
    1.0
    """

    def __init__(self, n_arms: int = 3, *, gap: float = 0.2, first_phase: int = 50, growth: float = 2.0,
                 best_arm: int | None = None, means: ArrayLike | None = None, seed: Seed = None) -> None:
        self.gap = check_real("gap", gap, low=0.0, high=1.0, low_open=True)
        self.first_phase = check_positive_int("first_phase", first_phase)
        self.growth = check_real("growth", growth, low=1.0)
        self._table: FloatArray | None = None
        if means is not None:
            table = np.asarray(means, dtype=np.float64)
            if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] != check_n_arms(n_arms):
                raise ValueError(f"means must have shape (n_steps, n_arms={n_arms}), got {table.shape}")
            if not np.all(np.isfinite(table)) or np.any((table < 0) | (table > 1)):
                raise ValueError("means must be finite and lie in [0, 1]")
            self._table = table
        super().__init__(n_arms, seed=seed)
        if best_arm is None:
            best_arm = int(self._problem_rng.integers(self._n_arms))
        elif not 0 <= best_arm < self._n_arms:
            raise ValueError(f"best_arm must be in 0..{self._n_arms - 1}, got {best_arm}")
        self.best_arm = int(best_arm)
        self._reset()

    @classmethod
    def against(cls, policy: Policy, n_steps: int, *, seed: Seed = None) -> AdversarialEnv:
        """A sequence of ``n_steps`` rounds on which the deterministic ``policy`` earns nothing.

        A deep copy of ``policy`` (the policy itself is untouched) is run
        ahead: in each round the arm it picks pays 0 and the others pay 1, and the copy learns its 0.
        The table is fixed before play starts, so the adversary is oblivious; a randomized policy
        (whose ``probabilities`` are not one-hot) is rejected, since a fixed sequence cannot target
        its random draws. The best fixed arm in hindsight earns at least ``(n_arms - 1) / n_arms``
        per round, and so does uniform play.
        """
        n_steps = check_positive_int("n_steps", n_steps)
        if getattr(policy, "contextual", False):
            raise ValueError(f"{type(policy).__name__} is contextual; AdversarialEnv is context-free")
        copy = deepcopy(policy)
        table = np.ones((n_steps, copy.n_arms))
        for t in range(n_steps):
            p = copy.probabilities()
            arm = copy.select()
            if p[arm] < 1.0 - 1e-12:
                probs = np.round(p, 3).tolist()
                raise ValueError(
                    f"{type(policy).__name__} randomizes (probabilities {probs} at round {t}); "
                    "an oblivious sequence can only defeat a deterministic policy"
                )
            table[t, arm] = 0.0
            copy.update(arm, 0.0)
        return cls(copy.n_arms, means=table, seed=seed)

    def expected_rewards(self) -> FloatArray:
        return self._means.copy()

    def phase(self) -> int:
        """The index of the current phase (-1 with an explicit ``means`` table)."""
        return self._phase if self._table is None else -1

    def _means_now(self) -> FloatArray:
        if self._table is not None:
            row: FloatArray = self._table[self._t % self._table.shape[0]]
            return row
        high = self._phase % 2 == 1
        means = np.full(self._n_arms, 1.0 - self.gap if high else 0.0)
        means[self.best_arm] = 1.0 if high else self.gap
        return means

    def _reset(self) -> None:
        self._phase = 0
        self._phase_end = self.first_phase
        self._refresh()

    def _advance(self) -> None:
        while self._t >= self._phase_end:
            self._phase += 1
            self._phase_end += max(1, round(self.first_phase * self.growth**self._phase))
        self._refresh()

    def _refresh(self) -> None:
        self._means = self._means_now()
        self._rewards = (self._reward_rng.random(self._n_arms) < self._means).astype(np.float64)

    def _pull(self, arm: int) -> float:
        return float(self._rewards[arm])

    def __repr__(self) -> str:
        if self._table is not None:
            return f"AdversarialEnv(n_arms={self._n_arms}, means=<table of {self._table.shape[0]} rounds>)"
        return (f"AdversarialEnv(n_arms={self._n_arms}, gap={self.gap}, first_phase={self.first_phase}, "
                f"growth={self.growth}, best_arm={self.best_arm})")
