"""Run a policy online against an environment and record rewards, regret, choices and propensities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from banditkit.base import Policy
from banditkit.envs.base import Environment, Seed
from banditkit.offline import LoggedData
from banditkit.validation import FloatArray, IntArray, check_positive_int

__all__ = ["SimulationResult", "simulate"]


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Per-step records of one simulated run (arrays of length ``n_steps``).

    ``expected_rewards`` is the chosen arm's expected reward and ``optimal_rewards`` the best arm's,
    so ``regret`` is the per-step pseudo-regret against the best arm of each round.
    ``propensities`` (the probability the policy gave its chosen arm) is ``None`` unless recorded;
    ``contexts`` (shape ``(n_steps, dim)``) is ``None`` unless recorded or for context-free
    environments.

    >>> from banditkit.envs.stochastic import BernoulliEnv
    >>> from banditkit.policies.baselines import RandomPolicy
    >>> result = simulate(RandomPolicy(2, seed=0), BernoulliEnv([0.2, 0.6], seed=0), n_steps=1000)
    >>> result.n_steps, result.choices.shape, float(result.propensities[0])
    (1000, (1000,), 0.5)
    >>> round(result.total_regret / 1000, 1)  # uniform play loses 0.2 per step on average
    0.2
    """

    rewards: FloatArray
    expected_rewards: FloatArray
    optimal_rewards: FloatArray
    regret: FloatArray
    cumulative_regret: FloatArray
    choices: IntArray
    propensities: FloatArray | None = None
    contexts: FloatArray | None = None

    @property
    def n_steps(self) -> int:
        """The number of simulated steps."""
        return int(self.rewards.shape[0])

    @property
    def mean_reward(self) -> float:
        """The mean observed reward."""
        return float(self.rewards.mean())

    @property
    def total_regret(self) -> float:
        """The regret summed over all steps."""
        return float(self.cumulative_regret[-1])

    def to_logged_data(self) -> LoggedData:
        """The run as logged bandit feedback, for ``evaluate_offline`` (needs recorded propensities)."""
        if self.propensities is None:
            raise ValueError("this run did not record propensities: simulate(..., record_propensities=True)")
        return LoggedData(self.contexts, self.choices, self.rewards, self.propensities)


def simulate(policy: Policy, env: Environment, n_steps: int, seed: Seed = None, *,
             record_propensities: bool = True, record_contexts: bool = False) -> SimulationResult:
    """Run ``policy`` online on ``env`` for ``n_steps`` rounds: observe, choose, learn, advance.

    ``env.reset(seed)`` starts the run (``seed=None`` replays the environment's current seed); the
    policy keeps its own generator. Context-free and contextual policies go through the same loop:
    the context is ``env.context()``, which is ``None`` for context-free environments.
    ``record_propensities`` calls ``policy.probabilities`` before each choice; for a policy whose
    probabilities are estimated by sampling, turning it off changes the random choices (and saves
    time).

    >>> from banditkit.envs.stochastic import BernoulliEnv
    >>> from banditkit.base import BasePolicy
    >>> class AlwaysLast(BasePolicy):
    ...     def _select(self, context): return self.n_arms - 1
    ...     def _probabilities(self, context): return np.eye(self.n_arms)[-1]
    ...     def _update(self, arm, reward, context): pass
    ...     def _hyperparams(self): return {}
    ...     def _get_state(self): return {}
    ...     def _set_state(self, state): pass
    ...     def _add_arm(self): pass
    ...     def _remove_arm(self, arm): pass
    >>> result = simulate(AlwaysLast(3), BernoulliEnv([0.9, 0.5, 0.1], seed=0), n_steps=100, seed=1)
    >>> result.choices[:5], result.regret[0], round(result.total_regret, 6)
    (array([2, 2, 2, 2, 2]), np.float64(0.8), 80.0)
    >>> result.propensities[0]
    np.float64(1.0)
    """
    n_steps = check_positive_int("n_steps", n_steps)
    env.reset(seed)
    n_arms = env.n_arms
    if policy.n_arms != n_arms:
        raise ValueError(f"the policy has {policy.n_arms} arms but the environment has {n_arms}")
    rewards = np.empty(n_steps)
    chosen_means = np.empty(n_steps)
    best_means = np.empty(n_steps)
    choices = np.empty(n_steps, dtype=np.int64)
    propensities = np.empty(n_steps) if record_propensities else None
    contexts = np.empty((n_steps, env.dim)) if record_contexts and env.dim is not None else None
    for t in range(n_steps):
        x = env.context()
        if propensities is not None:
            p = policy.probabilities(x)
        arm = policy.select(x)
        means = env.expected_rewards()
        reward = env.pull(arm)
        policy.update(arm, reward, x)
        env.step()
        rewards[t] = reward
        chosen_means[t] = means[arm]
        best_means[t] = means.max()
        choices[t] = arm
        if propensities is not None:
            propensities[t] = p[arm]
        if contexts is not None:
            contexts[t] = x
    regret = best_means - chosen_means
    return SimulationResult(
        rewards=rewards,
        expected_rewards=chosen_means,
        optimal_rewards=best_means,
        regret=regret,
        cumulative_regret=np.cumsum(regret),
        choices=choices,
        propensities=propensities,
        contexts=contexts,
    )
