"""``simulate``: one loop for context-free and contextual policies, with regret and propensities."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from banditkit.base import BasePolicy
from banditkit.envs import BernoulliEnv, LinearContextualEnv, SupervisedEnv
from banditkit.policies.baselines import FixedArm, RandomPolicy, RoundRobin
from banditkit.policies.ucb1 import UCB1
from banditkit.simulate import SimulationResult, simulate
from banditkit.validation import FloatArray


class LinearOracle(BasePolicy):
    """Knows the true parameters: picks ``argmax thetas @ x``."""

    contextual = True

    def __init__(self, n_arms: int, *, dim: int, thetas: Any = None) -> None:
        super().__init__(n_arms, dim=dim)
        self.thetas = np.asarray(thetas, dtype=np.float64)
        self.updates = 0

    def _select(self, context: FloatArray | None) -> int:
        return int(np.argmax(self.thetas @ context))

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        return np.eye(self.n_arms)[self._select(context)]

    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        self.updates += 1

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self.dim, "thetas": self.thetas.tolist()}

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def _add_arm(self) -> None:
        raise NotImplementedError

    def _remove_arm(self, arm: int) -> None:
        raise NotImplementedError


def assert_same(a: SimulationResult, b: SimulationResult) -> None:
    for field in ("rewards", "expected_rewards", "optimal_rewards", "regret", "choices", "propensities",
                  "contexts"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=field)


def test_context_free_fixed_arm_regret() -> None:
    env = BernoulliEnv([0.2, 0.5, 0.9], seed=0)
    result = simulate(FixedArm(3, arm=1), env, 500, seed=1)
    assert result.n_steps == 500
    np.testing.assert_array_equal(result.choices, 1)
    np.testing.assert_allclose(result.expected_rewards, 0.5)
    np.testing.assert_allclose(result.optimal_rewards, 0.9)
    np.testing.assert_allclose(result.regret, 0.4)
    np.testing.assert_allclose(result.cumulative_regret, 0.4 * np.arange(1, 501))
    assert result.total_regret == pytest.approx(200.0)
    assert set(np.unique(result.rewards)) == {0.0, 1.0}
    assert result.mean_reward == pytest.approx(0.5, abs=0.09)  # 4 standard errors
    assert result.propensities is not None
    np.testing.assert_array_equal(result.propensities, 1.0)
    assert result.contexts is None


def test_contextual_oracle_has_zero_regret_and_records_contexts() -> None:
    env = LinearContextualEnv(4, 6, noise=0.1, seed=0)
    oracle = LinearOracle(4, dim=6, thetas=env.thetas)
    result = simulate(oracle, env, 300, seed=2, record_contexts=True)
    np.testing.assert_allclose(result.regret, 0.0)
    assert oracle.updates == 300
    assert result.contexts is not None and result.contexts.shape == (300, 6)
    env.reset(2)
    for t in range(300):  # the recorded contexts are the environment's, in order
        np.testing.assert_array_equal(result.contexts[t], env.context())
        env.step()
    noise = result.rewards - result.expected_rewards
    assert np.std(noise) == pytest.approx(0.1, rel=0.15)


def test_same_seeds_same_result() -> None:
    env = LinearContextualEnv(3, 4, seed=0)
    a = simulate(RandomPolicy(3, seed=5), env, 200, seed=1, record_contexts=True)
    b = simulate(RandomPolicy(3, seed=5), env, 200, seed=1, record_contexts=True)
    assert_same(a, b)
    c = simulate(RandomPolicy(3, seed=5), env, 200, seed=2, record_contexts=True)
    assert c.contexts is not None and a.contexts is not None
    assert not np.array_equal(a.contexts, c.contexts)
    np.testing.assert_array_equal(a.choices, c.choices)  # the policy's own generator picks the arms


def test_propensities_are_taken_before_the_choice() -> None:
    # RoundRobin's probabilities are one-hot on the arm its next select returns
    result = simulate(RoundRobin(3), BernoulliEnv([0.1, 0.2, 0.3], seed=0), 9)
    np.testing.assert_array_equal(result.choices, [0, 1, 2] * 3)
    assert result.propensities is not None
    np.testing.assert_array_equal(result.propensities, 1.0)
    uniform = simulate(RandomPolicy(4, seed=0), BernoulliEnv([0.5] * 4, seed=0), 4000)
    assert uniform.propensities is not None
    np.testing.assert_allclose(uniform.propensities, 0.25)
    np.testing.assert_allclose(np.bincount(uniform.choices) / 4000, 0.25, atol=0.03)


def test_recording_is_optional() -> None:
    env = LinearContextualEnv(3, 4, seed=0)
    result = simulate(RandomPolicy(3, seed=0), env, 50, record_propensities=False)
    assert result.propensities is None and result.contexts is None
    with pytest.raises(ValueError, match="did not record propensities"):
        result.to_logged_data()
    free = simulate(RandomPolicy(2, seed=0), BernoulliEnv([0.5, 0.5]), 10, record_contexts=True)
    assert free.contexts is None  # context-free: nothing to record


def test_to_logged_data() -> None:
    env = LinearContextualEnv(3, 4, seed=0)
    result = simulate(RandomPolicy(3, seed=0), env, 100, record_contexts=True)
    logged = result.to_logged_data()
    assert len(logged) == 100 and logged.contexts is not None
    np.testing.assert_array_equal(logged.arms, result.choices)
    np.testing.assert_allclose(logged.propensities, 1 / 3)


def test_learning_policy_beats_uniform() -> None:
    env = BernoulliEnv([0.3, 0.5, 0.7], seed=0)
    ucb = simulate(UCB1(3, seed=0), env, 3000, seed=1)
    uniform = simulate(RandomPolicy(3, seed=0), env, 3000, seed=1)
    assert uniform.total_regret == pytest.approx(0.2 * 3000, rel=0.1)
    assert ucb.total_regret < 0.25 * uniform.total_regret
    assert np.all(np.diff(ucb.cumulative_regret) >= 0)


def test_supervised_env_through_simulate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=90)
    X = np.eye(3)[y] + 0.1 * rng.normal(size=(90, 3))
    oracle = LinearOracle(3, dim=3, thetas=np.eye(3))
    result = simulate(oracle, SupervisedEnv(X, y, seed=0), 180)
    assert result.mean_reward == 1.0 and result.total_regret == 0.0


def test_bad_arguments() -> None:
    env = BernoulliEnv([0.5, 0.5], seed=0)
    with pytest.raises(ValueError, match="the policy has 3 arms but the environment has 2"):
        simulate(RandomPolicy(3), env, 10)
    with pytest.raises(ValueError, match="n_steps must be >= 1, got 0"):
        simulate(RandomPolicy(2), env, 0)
    with pytest.raises(ValueError, match="this policy is contextual"):
        simulate(LinearOracle(2, dim=3, thetas=np.eye(2, 3)), env, 10)
    with pytest.raises(ValueError, match=r"context must have shape \(3,\)"):
        simulate(LinearOracle(2, dim=3, thetas=np.eye(2, 3)), LinearContextualEnv(2, 4, seed=0), 10)
