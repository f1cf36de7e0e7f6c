"""Off-policy evaluation from logged bandit feedback: replay (Li et al. 2011), IPS and self-normalized IPS."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from banditkit.base import Policy
from banditkit.validation import FloatArray, IntArray

__all__ = ["LoggedData", "OfflineEstimate", "evaluate_offline"]

_METHODS = ("both", "replay", "ips")


@dataclass(frozen=True, eq=False)
class LoggedData:
    """Rounds logged by some policy: the context (``None`` for context-free logs), the arm it played,
    the reward observed and the probability with which it played that arm (its propensity).

    >>> logged = LoggedData(None, [0, 1, 1], [1.0, 0.0, 1.0], [0.5, 0.5, 0.5])
    >>> len(logged), logged.n_arms
    (3, 2)
    >>> LoggedData(None, [0], [1.0], [0.0])
    Traceback (most recent call last):
    ...
    ValueError: propensities must lie in (0, 1], got 0.0 at round 0: a logged arm needs a positive probability
    """

    contexts: FloatArray | None
    arms: IntArray
    rewards: FloatArray
    propensities: FloatArray

    def __init__(self, contexts: ArrayLike | None, arms: ArrayLike, rewards: ArrayLike,
                 propensities: ArrayLike) -> None:
        a = np.asarray(arms)
        r = np.asarray(rewards, dtype=np.float64)
        p = np.asarray(propensities, dtype=np.float64)
        if a.ndim != 1 or a.shape[0] < 1:
            raise ValueError(f"arms must be a non-empty 1-D array, got shape {a.shape}")
        n = a.shape[0]
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"arms must be integers, got dtype {a.dtype}")
        if np.any(a < 0):
            raise ValueError(f"arms must be >= 0, got {int(a.min())}")
        if r.shape != (n,) or p.shape != (n,):
            raise ValueError(f"arms, rewards and propensities must have equal lengths, got shapes "
                             f"{a.shape}, {r.shape} and {p.shape}")
        if not np.all(np.isfinite(r)):
            raise ValueError("rewards contain NaN or inf")
        bad = ~(np.isfinite(p) & (p > 0) & (p <= 1))
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(f"propensities must lie in (0, 1], got {p[i]} at round {i}: "
                             "a logged arm needs a positive probability")
        x: FloatArray | None = None
        if contexts is not None:
            x = np.asarray(contexts, dtype=np.float64)
            if x.ndim != 2 or x.shape[0] != n:
                raise ValueError(f"contexts must have shape ({n}, dim), got {x.shape}")
            if not np.all(np.isfinite(x)):
                raise ValueError("contexts contain NaN or inf")
        object.__setattr__(self, "contexts", x)
        object.__setattr__(self, "arms", a.astype(np.int64))
        object.__setattr__(self, "rewards", r)
        object.__setattr__(self, "propensities", p)

    def __len__(self) -> int:
        return int(self.arms.shape[0])

    @property
    def n_arms(self) -> int:
        """The smallest number of arms consistent with the log (the highest arm + 1)."""
        return int(self.arms.max()) + 1


@dataclass(frozen=True)
class OfflineEstimate:
    """Estimates of a policy's mean reward per round from logged data.

    ``replay`` is the mean reward on the ``n_matched`` rounds where the policy chose the logged arm
    (NaN if none did); ``ips`` the inverse-propensity estimate with standard error ``ips_se``;
    ``snips`` the self-normalized IPS; ``ess`` the effective sample size of the importance weights,
    ``(sum w)^2 / sum w^2``. Estimates of a method not requested are ``None``.

    >>> from banditkit.policies.baselines import RandomPolicy
    >>> logged = LoggedData(None, [0, 1, 1, 0], [1.0, 0.0, 1.0, 0.0], [0.5] * 4)
    >>> est = evaluate_offline(RandomPolicy(2, seed=0), logged, method="ips", learn=False)
    >>> est.ips, round(est.ips_se, 4), est.snips, est.ess, est.replay
    (0.5, 0.2887, 0.5, 4.0, None)
    """

    n_rounds: int
    n_matched: int | None = None
    replay: float | None = None
    replay_se: float | None = None
    ips: float | None = None
    ips_se: float | None = None
    snips: float | None = None
    ess: float | None = None


def _se(values: FloatArray) -> float:
    n = values.shape[0]
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan


def evaluate_offline(policy: Policy, logged: LoggedData, *, method: str = "both",
                     learn: bool = True) -> OfflineEstimate:
    """Estimate ``policy``'s mean reward from ``logged`` rounds, in order.

    - Replay (Li et al., 2011): in each round the policy chooses; rounds where it matches the
      logged arm count, and with ``learn`` the policy updates on them (and only them). Unbiased for
      the policy's online mean reward when the log came from uniform random play; then about
      ``1 / n_arms`` of the rounds match.
    - IPS: the mean of ``w * reward`` with ``w = policy.probabilities(x)[arm] / propensity``; SNIPS
      divides by the sum of the weights instead of the number of rounds. Any logging policy with
      positive propensities works. With ``learn``, each round's probabilities come from the policy as
      it is at that round of the replay pass.

    ``method`` is ``"both"``, ``"replay"`` or ``"ips"``. ``learn=False`` evaluates the policy as it
    is (``policy.select`` is then not called for ``method="ips"``).

    >>> from banditkit.base import BasePolicy
    >>> class Always0(BasePolicy):
    ...     def _select(self, context): return 0
    ...     def _probabilities(self, context): return np.array([1.0, 0.0])
    ...     def _update(self, arm, reward, context): pass
    ...     def _hyperparams(self): return {}
    ...     def _get_state(self): return {}
    ...     def _set_state(self, state): pass
    ...     def _add_arm(self): pass
    ...     def _remove_arm(self, arm): pass
    >>> logged = LoggedData(None, [0, 1, 0, 1], [1.0, 0.0, 0.5, 1.0], [0.5, 0.5, 0.5, 0.5])
    >>> est = evaluate_offline(Always0(2), logged)
    >>> est.n_matched, est.replay, est.ips, est.snips
    (2, 0.75, 0.75, 0.75)
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if logged.n_arms > policy.n_arms:
        raise ValueError(
            f"the log has arm {logged.n_arms - 1} but the policy has arms 0..{policy.n_arms - 1}"
        )
    do_replay = method in ("both", "replay")
    do_ips = method in ("both", "ips")
    choose = do_replay or learn
    n = len(logged)
    weights = np.empty(n)
    matched_rewards: list[float] = []
    for i in range(n):
        x = None if logged.contexts is None else logged.contexts[i]
        arm = int(logged.arms[i])
        reward = float(logged.rewards[i])
        if do_ips:
            weights[i] = policy.probabilities(x)[arm] / logged.propensities[i]
        if choose and policy.select(x) == arm:
            matched_rewards.append(reward)
            if learn:
                policy.update(arm, reward, x)
    estimate = OfflineEstimate(n_rounds=n)
    if do_replay:
        m = np.asarray(matched_rewards)
        estimate = replace(estimate, n_matched=m.size, replay=float(m.mean()) if m.size else math.nan,
                           replay_se=_se(m))
    if do_ips:
        weighted = weights * logged.rewards
        total = float(weights.sum())
        estimate = replace(
            estimate, ips=float(weighted.mean()), ips_se=_se(weighted),
            snips=float(weighted.sum()) / total if total > 0 else math.nan,
            ess=total**2 / float((weights**2).sum()) if total > 0 else 0.0,
        )
    return estimate
