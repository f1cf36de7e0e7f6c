"""The run's reward models: the registry (a file or the built-in world's), building the RMs in use, scoring
samples with the RMs a selector named, and the counterfactual losses every RM's pairs would give."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_app.errors import LaserError, ModelLoadError

if TYPE_CHECKING:
    from laser_adapters.bandit_rewards import BanditReward
    from laser_adapters.reward_models.registry import RMRegistry
    from laser_app.config import RunConfig


def load_registry(config: RunConfig, world: Any) -> RMRegistry:
    """The registry ``--rm-registry`` names, else the built-in world's (for ``config.ood``)."""
    if config.rm_registry is None:
        registry: RMRegistry = world.registry(ood=config.ood)
        return registry
    from laser_adapters.reward_models.registry import RMRegistry

    if not config.rm_registry.is_file():
        what = "is a folder" if config.rm_registry.is_dir() else "does not exist"
        raise LaserError(f"RM registry {config.rm_registry} {what}; pass a TOML or YAML file with a "
                         "table `rms` keyed by name")
    try:
        registry = RMRegistry.from_file(config.rm_registry)
    except (ValueError, TypeError, KeyError) as err:  # pydantic's ValidationError is a ValueError
        message = str(err).removeprefix(f"invalid RM registry {config.rm_registry}:")
        detail = "; ".join(line.strip() for line in message.splitlines() if line.strip())
        raise LaserError(f"RM registry {config.rm_registry}: {detail}") from err
    if not registry.names:
        raise LaserError(f"RM registry {config.rm_registry} defines no reward models; add a table per RM, e.g. "
                         "[rms.my-rm] with kind and model (docs/reward_models.md)")
    return registry


def load_rms(registry: RMRegistry, names: Sequence[str], max_loaded: int | None) -> None:
    """Build every RM in use now, so a broken spec fails before the run folder exists."""
    # by default all RMs in use stay loaded: with fewer, every switch of RM reloads one from disk
    registry.max_loaded = max_loaded or max(len(names), registry.max_loaded)
    for name in names:
        try:
            registry.get(name)
        except (OSError, ValueError, TypeError) as err:
            raise ModelLoadError(" ".join(str(err).split())) from err


def score_responses(registry: RMRegistry, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                    choices: Sequence[tuple[str, ...]], *, label: str) -> list[dict[str, np.ndarray]]:
    """Score each prompt's responses with the RMs ``choices`` names for it: one forward batch per RM."""
    from laser_adapters.reward_models.base import checked_scores

    out: list[dict[str, np.ndarray]] = [{} for _ in prompts]
    needed: dict[str, list[int]] = {}
    for i, names in enumerate(choices):
        for name in names:
            needed.setdefault(name, []).append(i)
    for name, idx in needed.items():
        flat_prompts = [prompts[i] for i in idx for _ in responses[i]]
        flat_responses = [r for i in idx for r in responses[i]]
        flat = checked_scores(registry.get(name), flat_prompts, flat_responses, batch=label)
        start = 0
        for i in idx:
            out[i][name] = flat[start:start + len(responses[i])]
            start += len(responses[i])
    return out


def diagnostics(registry: RMRegistry, rm_names: Sequence[str], prompts: Sequence[str],
                responses: Sequence[Sequence[str]], scores: list[dict[str, np.ndarray]],
                evaluate: Callable[..., Any], max_pairs: int, *, label: str,
                samples: Sequence[Sequence[str]] | None = None, asked: Sequence[str] | None = None,
                reward: BanditReward | None = None,
                correct: list[list[bool]] | None = None) -> dict[str, dict[str, float | None]]:
    """Counterfactual diagnostics of one batch at the current policy: ``loss``, every RM's pairs' loss, and
    with ``reward``, ``reward``: the raw bandit reward each RM would have earned (``correct``: the
    responses' correctness, for rewards that read it). Scores the RMs not yet scored on ``responses`` to
    ``prompts``; pairs are built from ``asked`` (the prompts as the policy is asked, default ``prompts``)
    and ``samples`` (the texts as trained on, default ``responses``)."""
    from laser_adapters.bandit_rewards import StepInputs
    from laser_adapters.counterfactual import counterfactual_results, counterfactual_rewards

    missing = [tuple(n for n in rm_names if n not in s) for s in scores]
    extra = score_responses(registry, prompts, responses, missing, label=f"diagnostics {label}")
    full = [{**s, **e} for s, e in zip(scores, extra, strict=True)]
    by_rm = {n: [f[n] for f in full] for n in rm_names}
    trained = responses if samples is None else samples
    pair_prompts = prompts if asked is None else asked
    results = counterfactual_results(list(zip(pair_prompts, trained, strict=True)), by_rm, evaluate, max_pairs)
    out: dict[str, dict[str, float | None]] = {"loss": {
        rm: float(r.loss) if r is not None and np.isfinite(r.loss) else None for rm, r in results.items()}}
    if reward is not None:
        out["reward"] = counterfactual_rewards(results, by_rm, reward, StepInputs(
            scores=dict(enumerate(full)), correct=correct, responses=responses))
    return out
