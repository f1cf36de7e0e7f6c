"""Reward models: the ``RewardModel`` protocol, five kinds of RM and a registry of named RMs.

Names are imported lazily: ``from laser_adapters.reward_models import RMRegistry, FunctionRM`` does not
import torch or transformers; the torch-based classes import them when first accessed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import RewardModel, RewardModelError, check_pairs, checked_scores
    from .classifier import SequenceClassifierRM
    from .function import FunctionRM
    from .implicit_dpo import ImplicitDPORM
    from .judge import JudgeRM
    from .likelihood import LikelihoodRM
    from .registry import (
        RegistryError,
        RMRegistry,
        RMSpec,
        UnknownRMError,
        build_rm,
        parse_specs,
    )

_WHERE = {
    "RewardModel": "base",
    "RewardModelError": "base",
    "checked_scores": "base",
    "check_pairs": "base",
    "SequenceClassifierRM": "classifier",
    "ImplicitDPORM": "implicit_dpo",
    "LikelihoodRM": "likelihood",
    "FunctionRM": "function",
    "JudgeRM": "judge",
    "RMSpec": "registry",
    "RMRegistry": "registry",
    "RegistryError": "registry",
    "UnknownRMError": "registry",
    "build_rm": "registry",
    "parse_specs": "registry",
}

__all__ = [
    "FunctionRM",
    "ImplicitDPORM",
    "JudgeRM",
    "LikelihoodRM",
    "RMRegistry",
    "RMSpec",
    "RegistryError",
    "RewardModel",
    "RewardModelError",
    "SequenceClassifierRM",
    "UnknownRMError",
    "build_rm",
    "check_pairs",
    "checked_scores",
    "parse_specs",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
