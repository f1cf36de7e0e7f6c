"""The one table of RM-selection methods: name -> how to build it, the settings it reads, help text.

Every consumer reads :data:`METHODS`: :func:`make_selector` builds from it, ``laser_app``'s config
validates ``--policy`` against it and prints its help, and ``laser compare`` takes its method list from it.
Adding a method is one entry here (plus its tests).

A bandit method names the banditkit policy class and maps each *setting* (a name users see, also the
``laser run`` flag of the same name) to the policy's keyword argument; the policy's ``contextual`` class
attribute says whether the selector needs a context encoder. A baseline names a selector factory and the
selector-level keywords it takes.

>>> METHODS["linucb"].settings
{'alpha': 'alpha', 'ridge': 'ridge', 'discount': 'discount'}
>>> METHODS["linucb"].contextual, METHODS["exp3"].contextual, METHODS["random"].learns
(True, False, False)
>>> make_selector("linucb", ["rm-a", "rm-b"], alpha=0.5, encoder=None)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: policy 'linucb' is contextual: pass encoder=... (a ContextEncoder)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from banditkit.base import BasePolicy
from banditkit.policies.epsilon_greedy import EpsilonGreedy
from banditkit.policies.exp3 import EXP3
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB
from banditkit.policies.thompson import ThompsonSampling
from banditkit.policies.ucb1 import UCB1

from .agreement_router import AgreementRouter
from .checks import check_rm_names
from .prior_router import PriorRouterSelector, Priors
from .selector import RMSelector, RoutingSelector
from .selectors_baseline import (
    AgreementEnsembleSelector,
    EnsembleSelector,
    FixedSelector,
    OracleSelector,
    RandomSelector,
    ScoreEnsembleSelector,
    SequentialSelector,
)

AnySelector = RMSelector | RoutingSelector | EnsembleSelector

#: The RM name under which the answer checker ranks samples (the ``gold`` method registers it).
GOLD_RM = "gold"
#: What a method may read beyond the RMs and the policy (see :class:`Method`).
LABEL_KINDS = ("none", "dev", "all", "oracle")

#: Keywords of :class:`~laser_adapters.selector.RMSelector` that every bandit method takes.
BANDIT_KEYWORDS = ("encoder", "normalizer", "granularity", "reward", "scope", "n_clusters", "probe_size", "seed",
                   "cluster_warmup", "reward_baseline")
#: Keywords any method accepts; those a method does not read are ignored, so one set of arguments can
#: build any method.
COMMON_KEYWORDS = (*BANDIT_KEYWORDS, "rm_for_task", "priors")
FIXED_PREFIX = "fixed:"


@dataclass(frozen=True)
class Method:
    """One selection method of the table.

    ``policy``: the banditkit policy class of a bandit method (None for a baseline); ``settings``: setting
    name -> the policy's keyword; ``fixed``: keywords always passed to the policy; ``build``: a baseline's
    factory ``(rm_names, **keywords) -> selector``; ``takes``: the keywords a baseline reads;
    ``in_compare``: part of ``laser compare``'s default method list; ``labels``: what it reads beyond the
    RMs and the policy (``none``; ``dev``: a few labelled dev prompts per task; ``all``: the answer of every
    training prompt; ``oracle``: the known RM for each task). A bandit method's reward may read labels
    too (:attr:`laser_adapters.bandit_rewards.BanditReward.reads_labels`).
    """

    name: str
    help: str
    policy: type[BasePolicy] | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    build: Callable[..., AnySelector] | None = None
    takes: tuple[str, ...] = ()
    in_compare: bool = True
    labels: str = "none"

    @property
    def learns(self) -> bool:
        """Whether it is a bandit that learns from the reward (else a baseline)."""
        return self.policy is not None

    @property
    def contextual(self) -> bool:
        """Whether it needs a context encoder."""
        return self.policy is not None and bool(self.policy.contextual)

    @property
    def keywords(self) -> tuple[str, ...]:
        """Every keyword :func:`make_selector` reads for this method."""
        return (*BANDIT_KEYWORDS, *self.settings) if self.learns else self.takes

    def make(self, rm_names: list[str], name: str, kw: Mapping[str, Any]) -> AnySelector:
        """Build the selector from checked keywords ``kw`` (settings by their setting names)."""
        if self.policy is None:
            assert self.build is not None  # every baseline entry has a factory (a test checks the table)
            return self.build(rm_names, name=name, **{k: kw[k] for k in self.takes if k in kw})
        hyper = {self.settings[k]: kw[k] for k in self.settings if k in kw}
        seed = int(kw.get("seed", 0))
        encoder = kw.get("encoder")
        build: Callable[..., BasePolicy] = self.policy  # contextual policies also take the context dimension
        if self.contextual:
            if encoder is None:
                raise ValueError(f"policy {name!r} is contextual: pass encoder=... (a ContextEncoder)")
            policy = build(len(rm_names), encoder.dim, seed=seed, **self.fixed, **hyper)
        else:
            policy = build(len(rm_names), seed=seed, **self.fixed, **hyper)
        selector_kw = {k: kw[k] for k in BANDIT_KEYWORDS if k in kw and k != "encoder"}
        return RMSelector(policy, encoder, rm_names, name=name, **selector_kw)


def _fixed(rm_names: list[str], *, name: str) -> FixedSelector:
    return FixedSelector(rm_names, name[len(FIXED_PREFIX):], name=name)


def _gold(rm_names: list[str], *, name: str) -> FixedSelector:
    return FixedSelector(rm_names, GOLD_RM, name=name)


def _prior_router(rm_names: list[str], *, name: str, priors: Priors | None = None, seed: int = 0,
                  reward: str = "dpo+nll") -> PriorRouterSelector:
    return PriorRouterSelector(rm_names, priors, seed=seed, reward=reward, name=name)


def _random(rm_names: list[str], *, name: str, seed: int = 0, granularity: str = "batch") -> RandomSelector:
    return RandomSelector(rm_names, seed, granularity=granularity, name=name)


def _oracle(rm_names: list[str], *, name: str, rm_for_task: Mapping[str, str] | None = None) -> OracleSelector:
    return OracleSelector(rm_names, rm_for_task or {}, name=name)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("linucb", "LinUCB on the prompts' context (LASeR)", policy=LinUCB,
           settings={"alpha": "alpha", "ridge": "ridge", "discount": "discount"}),
    Method("lints", "linear Thompson sampling on the context", policy=LinearThompsonSampling,
           settings={"alpha": "v", "ridge": "ridge"}),
    Method("thompson", "Beta-Bernoulli Thompson sampling, context-free", policy=ThompsonSampling,
           fixed={"likelihood": "bernoulli"}),  # on normalized rewards in [0, 1]
    Method("thompson-gaussian", "Gaussian Thompson sampling, context-free (rewards on any scale)",
           policy=ThompsonSampling, fixed={"likelihood": "gaussian", "noise_var": 0.1}),
    Method("exp3", "EXP3, context-free, for adversarial rewards", policy=EXP3, settings={"mixing": "gamma"}),
    Method("egreedy", "epsilon-greedy, context-free", policy=EpsilonGreedy,
           settings={"epsilon": "epsilon", "epsilon_decay": "decay"}),
    Method("ucb1", "UCB1, context-free", policy=UCB1, settings={"ucb_c": "c"}),
    Method("random", "a uniformly random RM per batch (or per prompt)", build=_random,
           takes=("seed", "granularity")),
    Method("fixed:NAME", "one RM throughout", build=_fixed, in_compare=False),
    Method("sequential", "one RM per iteration, round-robin", build=SequentialSelector),
    Method("ensemble-score", "pairs from the mean of every RM's standardized scores",
           build=ScoreEnsembleSelector),
    Method("ensemble-agree", "only pairs a majority of RMs agree on", build=AgreementEnsembleSelector),
    Method("oracle", "each task's own RM from rm_for_task: the upper bound of per-task routing",
           build=_oracle, takes=("rm_for_task",), labels="oracle"),
    Method("dev-pick", "each task's RM picked by its top-1 accuracy on dev_labels labelled dev prompts per task",
           build=_oracle, takes=("rm_for_task",), labels="dev"),
    Method("prior-router", "BayesianRouter-style: per-task priors from labelled dev prompts, then Thompson "
           "sampling on the label-free reward", build=_prior_router, takes=("priors", "seed", "reward"),
           labels="dev"),
    Method("gold", "the answer checker ranks the samples (reads every training prompt's answer): what a "
           "method that reads those labels must beat", build=_gold, labels="all"),
    Method("agree-estimate", "label-free: routes each batch to the RM whose accuracy, estimated from the RMs' "
           "pairwise agreement, is highest; assumes independent errors, uses ensemble-score while unsure",
           build=AgreementRouter, takes=("granularity",), in_compare=False),
)}
"""Every selection method by name; ``fixed:NAME`` stands for ``fixed:`` followed by an RM name."""


def method_names() -> list[str]:
    """The names ``--policy`` accepts, ``fixed:NAME`` standing for ``fixed:`` + an RM name.

    >>> method_names()[:3]
    ['linucb', 'lints', 'thompson']
    """
    return list(METHODS)


def get_method(name: str) -> Method:
    """The table entry for ``name`` (``fixed:rm-a`` gives the ``fixed:NAME`` entry).

    >>> get_method("fixed:rm-a").name, get_method("ucb1").settings
    ('fixed:NAME', {'ucb_c': 'c'})
    >>> get_method("greedy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown selector 'greedy'; valid names: linucb, lints, thompson, ...
    """
    if not isinstance(name, str):
        raise TypeError(f"selector name must be a string, got {type(name).__name__}")
    if name.startswith(FIXED_PREFIX):
        if not name[len(FIXED_PREFIX):].strip():
            raise ValueError("fixed:NAME needs an RM name after the colon, e.g. fixed:rm-a")
        return METHODS[FIXED_PREFIX + "NAME"]
    if name not in METHODS or name == FIXED_PREFIX + "NAME":
        raise ValueError(f"unknown selector {name!r}; valid names: {', '.join(METHODS)}")
    return METHODS[name]


def methods_help() -> str:
    """The method names for ``--help``, grouped by kind and by the labels they read.

    >>> methods_help().split(";")[0]
    'bandits: linucb, lints, thompson, thompson-gaussian, exp3, egreedy, ucb1'
    """
    groups = {"bandits": [m.name for m in METHODS.values() if m.learns],
              "baselines": [m.name for m in METHODS.values() if not m.learns and m.labels == "none"],
              "reading dev labels": [m.name for m in METHODS.values() if not m.learns and m.labels == "dev"],
              "reading every training label": [m.name for m in METHODS.values() if m.labels == "all"],
              "the upper bound": [m.name for m in METHODS.values() if m.labels == "oracle"]}
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in groups.items() if names)


def make_selector(name: str, rm_names: Sequence[str], **kw: Any) -> AnySelector:
    """Build the selector called ``name`` (see :data:`METHODS`) over ``rm_names``.

    Bandit methods build an :class:`~laser_adapters.selector.RMSelector` around their banditkit policy;
    they take the selector's keywords (``encoder``, ``normalizer``, ``granularity``, ``reward``, ``scope``,
    ``n_clusters``, ``probe_size``, ``seed``, ``cluster_warmup``, ``reward_baseline``) and their own
    settings by setting name (``alpha``, ``ridge``, ``discount`` for linucb; ``alpha`` (the posterior scale),
    ``ridge`` for lints; ``mixing`` for exp3; ``epsilon``, ``epsilon_decay`` for egreedy; ``ucb_c`` for ucb1).
    Keywords of :data:`COMMON_KEYWORDS` that a method does not read are ignored; any other is an error.

    >>> make_selector("fixed:rm-b", ["rm-a", "rm-b"]).choose(["p"])
    [('rm-b',)]
    >>> make_selector("exp3", ["rm-a", "rm-b"], mixing=0.2).policy.gamma
    0.2
    >>> make_selector("exp3", ["rm-a"], alpha=1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: selector 'exp3' does not take alpha; it takes: encoder, normalizer, ..., mixing
    """
    names = check_rm_names(rm_names)
    method = get_method(name)
    accepted = (*COMMON_KEYWORDS, *method.settings)
    bad = [k for k in kw if k not in accepted]
    if bad:
        raise TypeError(f"selector {name!r} does not take {', '.join(bad)}; it takes: {', '.join(accepted)}")
    return method.make(names, name, kw)
