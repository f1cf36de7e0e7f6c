"""banditkit: multi-armed and contextual bandits in numpy, behind one ``Policy`` protocol.

>>> import numpy as np
>>> from banditkit import LinUCB, LinearContextualEnv, simulate
>>> env = LinearContextualEnv(n_arms=3, dim=8, seed=0)
>>> result = simulate(LinUCB(3, 8, alpha=0.3, seed=0), env, n_steps=2000, seed=0)
>>> bool(result.regret[-400:].mean() < result.regret[:400].mean())
True
"""

from __future__ import annotations

from banditkit.base import BasePolicy, Policy, policy_class
from banditkit.envs import (
    AdversarialEnv,
    BaseEnvironment,
    BernoulliEnv,
    DriftingEnv,
    Environment,
    GaussianEnv,
    LinearContextualEnv,
    SupervisedEnv,
)
from banditkit.normalizers import (
    BaseNormalizer,
    MinMaxNormalizer,
    Normalized,
    Normalizer,
    QuantileNormalizer,
    ZScoreNormalizer,
    normalizer_from_state_dict,
)
from banditkit.offline import LoggedData, OfflineEstimate, evaluate_offline
from banditkit.persistence import load, read_state, save
from banditkit.policies.baselines import FixedArm, RandomPolicy, RoundRobin
from banditkit.policies.epsilon_greedy import EpsilonGreedy
from banditkit.policies.exp3 import EXP3
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB
from banditkit.policies.thompson import ThompsonSampling
from banditkit.policies.ucb1 import UCB1
from banditkit.simulate import SimulationResult, simulate

__version__ = "0.1.0"

__all__ = [
    "EXP3",
    "UCB1",
    "AdversarialEnv",
    "BaseEnvironment",
    "BaseNormalizer",
    "BasePolicy",
    "BernoulliEnv",
    "DriftingEnv",
    "Environment",
    "EpsilonGreedy",
    "FixedArm",
    "GaussianEnv",
    "LinUCB",
    "LinearContextualEnv",
    "LinearThompsonSampling",
    "LoggedData",
    "MinMaxNormalizer",
    "Normalized",
    "Normalizer",
    "OfflineEstimate",
    "Policy",
    "QuantileNormalizer",
    "RandomPolicy",
    "RoundRobin",
    "SimulationResult",
    "SupervisedEnv",
    "ThompsonSampling",
    "ZScoreNormalizer",
    "evaluate_offline",
    "load",
    "normalizer_from_state_dict",
    "policy_class",
    "read_state",
    "save",
    "simulate",
]
