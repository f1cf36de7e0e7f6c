"""Environments for tests, examples and benchmarks; every one follows the ``Environment`` protocol."""

from __future__ import annotations

from banditkit.envs.adversarial import AdversarialEnv
from banditkit.envs.base import BaseEnvironment, Environment
from banditkit.envs.drifting import DriftingEnv
from banditkit.envs.linear import LinearContextualEnv
from banditkit.envs.stochastic import BernoulliEnv, GaussianEnv
from banditkit.envs.supervised import SupervisedEnv

__all__ = [
    "AdversarialEnv",
    "BaseEnvironment",
    "BernoulliEnv",
    "DriftingEnv",
    "Environment",
    "GaussianEnv",
    "LinearContextualEnv",
    "SupervisedEnv",
]
