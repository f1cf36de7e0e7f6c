"""The methods of a comparison: ``--methods`` parsing, the LASeR aliases and the default method list.

A method is ``sft`` (the starting policy), a name of the method table :data:`laser_adapters.methods.METHODS`
(``linucb``, ``random``, ``fixed:rm-a``, ...), a LASeR alias from :data:`METHOD_ALIASES`, or any of these
but sft with ``RunConfig`` overrides in brackets: ``linucb[scope=global,mab_reward=dpo+nll]``.

>>> [m.label for m in parse_methods("sft, fixed:rm-a, linucb[alpha=0.2,scope=per-context], laser-dpo")]
['sft', 'fixed:rm-a', 'linucb[alpha=0.2,scope=per-context]', 'laser-dpo']
>>> dict(parse_methods("laser-dpo")[0].settings)
{'policy': 'linucb', 'mab_reward': 'dpo'}
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from laser_adapters.bandit_rewards import get_bandit_reward
from laser_adapters.methods import METHODS, get_method
from laser_adapters.methods import method_names as method_table_names
from laser_app.config import RunConfig, parse_value
from laser_app.errors import LaserError

SFT = "sft"
#: The default LASeR variant: the reference of the paired tests and of relative wall time.
LASER = "laser"
#: LinUCB's alpha in the paper's reference code (``LinUCB(d, K, alpha=0.1)``, rewards in [0, 1]).
PAPER_ALPHA = 0.1

#: LASeR variants by name: ``RunConfig`` settings over the shared ones (``policy`` defaults to RunConfig's).
METHOD_ALIASES: dict[str, dict[str, Any]] = {
    # the default LASeR variant: RunConfig's defaults, whatever they are
    "laser": {},
    # the paper's bandit: LinUCB (ridge 1, no discount), one RM per batch, reward = -(DPO + NLL loss)
    # normalized by global 20/80 quantiles and learned as is (no baseline). The loop's own settings
    # (context encoder, beta, NLL weight, ...) stay shared; their defaults are the paper's.
    "laser-paper": {"policy": "linucb", "alpha": PAPER_ALPHA, "ridge": 1.0, "discount": 1.0,
                    "granularity": "batch", "mab_reward": "dpo+nll", "scope": "global",
                    "normalizer": "quantile", "quantile_low": 0.2, "quantile_high": 0.8,
                    "reward_baseline": 0.0},
    # one change at a time on top of laser-paper: the reward shift 0.75 (laser-shift), then from there the
    # normalization scope, the granularity or the reward. Each names its reward, so a change of RunConfig's
    # default reward does not change these rows.
    "laser-shift": {"mab_reward": "dpo+nll"},
    "laser-percontext": {"mab_reward": "dpo+nll", "scope": "per-context"},
    "laser-instance": {"mab_reward": "dpo+nll", "granularity": "instance"},
    "laser-dpo": {"mab_reward": "dpo"},
    "laser-consistency": {"mab_reward": "consistency"},
    "laser-agreement": {"mab_reward": "agreement"},
    # reads dev_labels labelled dev prompts per task: compared with dev-pick and prior-router at that budget
    "laser-dev": {"mab_reward": "dev-gold"},
    # reads every training prompt's answer: compared with gold and rejection-sft, never with the above
    "laser-gold": {"mab_reward": "gold"},
    # rejection-sampling fine-tuning: the answer checker picks a right sample, trained on by NLL alone
    "rejection-sft": {"policy": "gold", "dpo_weight": 0.0},
}
#: One line per alias, for help texts.
ALIAS_HELP: dict[str, str] = {
    "laser": "the default LASeR variant (RunConfig's defaults)",
    "laser-paper": f"the paper's settings (dpo+nll reward, global quantiles, raw normalized reward, "
                   f"alpha {PAPER_ALPHA})",
    "laser-shift": "the paper's dpo+nll reward with the reward shift 0.75 (RunConfig's other defaults)",
    "laser-percontext": "laser-shift with per-context (per-task) reward normalization",
    "laser-instance": "laser-shift choosing an RM per prompt (instance granularity)",
    "laser-dpo": "laser-shift with the DPO term alone as the bandit reward",
    "laser-consistency": "laser-shift rewarded by self-consistency (no labels)",
    "laser-agreement": "laser-shift rewarded by agreement with the other RMs on probe prompts (no labels)",
    "laser-dev": "laser-shift rewarded by the chosen RM's top-1 correctness on labelled dev prompts of the "
                 "batch's task, sampled after each step (reads dev_labels labelled dev prompts per task)",
    "laser-gold": "laser-shift rewarded by the chosen RM's top sample being right (reads every training label)",
    "rejection-sft": "fine-tuning on a right sample per prompt (the answer checker picks it; reads every "
                     "training label)",
}
#: RunConfig fields that compare sets per run; a method or shared setting may not set them.
RESERVED_FIELDS: dict[str, str] = {
    "policy": "each method is its own policy; name it in --methods (e.g. lints or lints[alpha=0.5])",
    "seed": "compare runs seeds 0..N-1; use --seeds N",
    "ood": "use compare's --ood (e.g. --ood bias,noise)",
    "out": "use compare's --out for the compare folder",
    "overwrite": "use compare's --rerun to run complete runs again",
}
#: Baselines in the default method list (with sft, fixed:<each RM> and the LASeR aliases): those that read no
#: labels, and the oracle (the upper bound). Methods that read labels are in the ``evidence`` preset.
DEFAULT_BASELINES = tuple(m.name for m in METHODS.values() if m.in_compare and not m.learns
                          and m.labels in ("none", "oracle"))


class MethodError(LaserError):
    """Bad ``--methods``: one message line per problem (``lines``).

    >>> str(MethodError(["unknown method 'greedy'", "method 'random' is listed twice"]))
    "unknown method 'greedy'; method 'random' is listed twice"
    """

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


@dataclass(frozen=True)
class Method:
    """One row of the comparison: ``settings`` are the RunConfig values it sets (its policy included).

    >>> m = parse_method("laser[alpha=0.5]")
    >>> m.policy, m.learns, m.slug
    ('linucb', True, 'laser-alpha-0.5-70ad91')
    """

    label: str
    base: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_sft(self) -> bool:
        """Whether this is the starting policy (no run of its own)."""
        return self.base == SFT

    @property
    def policy(self) -> str | None:
        """The ``--policy`` its runs use (``None`` for sft)."""
        return None if self.is_sft else str(self.settings["policy"])

    @property
    def learns(self) -> bool:
        """Whether a bandit chooses the RM (a LASeR variant), so in-domain share and lock-in apply."""
        return self.policy is not None and get_method(self.policy).learns

    @property
    def slug(self) -> str:
        """A folder name: the label made file-safe, plus a short hash when the label has overrides."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-")
        if "[" in self.label:
            slug += "-" + hashlib.sha1(self.label.encode()).hexdigest()[:6]
        return slug


def method_names() -> list[str]:
    """Every valid method name (``fixed:NAME`` with an RM name); overrides go in brackets after any but sft.

    >>> method_names()[:3]
    ['sft', 'laser', 'laser-paper']
    """
    return [SFT, *METHOD_ALIASES, *method_table_names()]


def split_top_level(text: str) -> list[str]:
    """Split ``text`` on commas outside brackets.

    >>> split_top_level("sft,linucb[alpha=0.2,scope=global],random")
    ['sft', 'linucb[alpha=0.2,scope=global]', 'random']
    """
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise MethodError([f"--methods {text!r}: brackets cannot nest (at position {i})"])
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise MethodError([f"--methods {text!r}: ']' without '[' (at position {i})"])
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise MethodError([f"--methods {text!r}: '[' is never closed; write NAME[key=value,...]"])
    items.append(text[start:])
    return [s.strip() for s in items]


def check_setting(key: str, where: str, *, flag: bool = False) -> str:
    """``key`` as a RunConfig field name (dashes become underscores); raises for unknown or reserved keys
    (suggesting close names, as flags when ``flag``).

    >>> check_setting("batch-size", "compare")
    'batch_size'
    >>> check_setting("sed", "compare")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.compare.methods.MethodError: compare: unknown setting 'sed'; did you mean seed? ...
    """
    name = key.strip().replace("-", "_")
    if name in RESERVED_FIELDS:
        raise MethodError([f"{where}: {name!r} cannot be set here: {RESERVED_FIELDS[name]}"])
    if name not in RunConfig.model_fields:
        close = difflib.get_close_matches(name, list(RunConfig.model_fields), n=3)
        shown = ["--" + c.replace("_", "-") for c in close] if flag else close
        hint = f"did you mean {', '.join(shown)}? " if close else ""
        raise MethodError([f"{where}: unknown setting {key.strip()!r}; {hint}valid settings are the "
                           "fields of laser run (see laser run --help)"])
    return name


def _parse_overrides(name: str, body: str, spec: str) -> tuple[dict[str, Any], list[str]]:
    """``key=value,key=value`` -> ({field: value}, ["key=raw", ...]); a part without ``=`` continues the
    previous value (``rms=rm-a,rm-b``)."""
    raw: dict[str, str] = {}
    last: str | None = None
    for part in body.split(","):
        part = part.strip()
        if "=" in part:
            key, _, value = part.partition("=")
            last = check_setting(key, f"method {spec!r}")
            if last in raw:
                raise MethodError([f"method {spec!r}: {last} is set twice"])
            raw[last] = value.strip()
        elif last is not None and part:
            raw[last] += "," + part
        else:
            raise MethodError([f"method {spec!r}: expected key=value inside the brackets, got {part!r}; "
                               f"e.g. {name}[alpha=0.2,scope=per-context]"])
    return {k: parse_value(v) for k, v in raw.items()}, [f"{k}={v}" for k, v in raw.items()]


def _check_name(name: str, spec: str) -> None:
    if not name:
        raise MethodError([f"empty method name in {spec!r}; valid: {', '.join(method_names())}"])
    if name.startswith("fixed:"):
        if not name[len("fixed:"):].strip():
            raise MethodError([f"method {spec!r}: fixed:NAME needs an RM name after the colon, "
                               "e.g. fixed:rm-a"])
    elif name not in (SFT, *METHOD_ALIASES, *method_table_names()):
        raise MethodError([f"unknown method {name!r}; valid: {', '.join(method_names())}"])


def parse_method(spec: str) -> Method:
    """Parse one method: ``NAME`` or ``NAME[key=value,...]`` (see :func:`method_names`).

    >>> m = parse_method("linucb[scope=global, mab-reward=dpo+nll]")
    >>> m.label
    'linucb[scope=global,mab_reward=dpo+nll]'
    >>> dict(m.settings)
    {'policy': 'linucb', 'scope': 'global', 'mab_reward': 'dpo+nll'}
    """
    match = re.fullmatch(r"\s*([^\[\]]*?)\s*(?:\[(.*)\])?\s*", spec)
    name = match.group(1) if match else ""
    _check_name(name, spec)
    body = match.group(2) if match else None
    if name == SFT:
        if body is not None:
            raise MethodError([f"method {spec!r}: sft is the starting policy and takes no settings"])
        return Method(label=SFT, base=SFT)
    overrides, shown = _parse_overrides(name, body, spec) if body is not None and body.strip() else ({}, [])
    if name in METHOD_ALIASES:
        alias = dict(METHOD_ALIASES[name])
        settings = {"policy": alias.pop("policy", RunConfig.model_fields["policy"].default), **alias}
    else:
        settings = {"policy": name}
    settings.update(overrides)
    label = f"{name}[{','.join(shown)}]" if shown else name
    return Method(label=label, base=name, overrides=overrides, settings=settings)


def parse_methods(text: str | Sequence[str]) -> list[Method]:
    """Parse ``--methods``: methods separated by commas outside brackets (see :func:`parse_method`).

    >>> [m.label for m in parse_methods(["random", "lints[alpha=0.5]"])]
    ['random', 'lints[alpha=0.5]']
    """
    items = split_top_level(text) if isinstance(text, str) else [s.strip() for s in text]
    if not any(items):
        raise MethodError([f"--methods is empty; valid: {', '.join(method_names())}"])
    methods = [parse_method(item) for item in items if item]
    seen: set[str] = set()
    for m in methods:
        if m.label in seen:
            raise MethodError([f"method {m.label!r} is listed twice in --methods"])
        seen.add(m.label)
    return methods


def default_methods(rm_names: Sequence[str]) -> list[Method]:
    """sft, each single RM, the baselines and every LASeR alias but those reading dev labels (like dev-pick and
    prior-router, they are in the ``evidence`` preset: the default list runs without labelled dev prompts).

    >>> [m.label for m in default_methods(["rm-a", "rm-b"])][:4]
    ['sft', 'fixed:rm-a', 'fixed:rm-b', 'random']
    >>> "laser-dev" in [m.label for m in default_methods(["rm-a"])]
    False
    """
    aliases = [a for a, settings in METHOD_ALIASES.items()
               if get_bandit_reward(settings.get("mab_reward", "dpo+nll")).labels != "dev"]
    names = [SFT, *(f"fixed:{rm}" for rm in rm_names), *DEFAULT_BASELINES, *aliases]
    return [parse_method(n) for n in names]


def pick_reference(methods: Sequence[Method], reference: str | None = None) -> str | None:
    """The reference of the label-free methods (and of relative wall time): ``reference``, else ``laser``,
    else the first learner. Each other label budget has its own (:func:`~laser_app.compare.budgets.class_references`).

    >>> pick_reference(parse_methods("random,lints,laser-dpo"))
    'lints'
    """
    labels = [m.label for m in methods]
    if reference is not None:
        if reference not in labels:
            raise MethodError([f"--reference {reference!r} is not among the methods ({', '.join(labels)})"])
        return reference
    if LASER in labels:
        return LASER
    return next((m.label for m in methods if m.learns), None)


#: Stands for ``fixed:<rm>`` for each RM in use, in a preset's method list.
EACH_RM = "fixed:*"
#: LASeR rows of the evidence table: the paper's, then one change at a time (the shift; then the scope, the
#: granularity or the reward).
EVIDENCE_LASER = ("laser-paper", "laser-shift", "laser-percontext", "laser-instance", "laser-consistency",
                  "laser-agreement")
#: Methods of the evidence table that read labels (or estimate RM accuracy without them), by name; those
#: that are neither a method of the table nor an alias when compare runs are left out.
EVIDENCE_LABELLED = ("agree-estimate", "dev-pick", "prior-router", "laser-dev", "gold", "rejection-sft",
                     "laser-gold")
#: The dev budgets (labelled dev prompts per task) at which the evidence table runs ``dev-pick``: its points on
#: the label-budget curve.
EVIDENCE_DEV_LABELS = (8, 32, 128)
#: Run settings of the evidence table: methods that read a reward and do not name one (``prior-router``) use
#: the paper's, as BayesianRouter does (the negative DPO loss).
EVIDENCE_SETTINGS = {"mab_reward": "dpo+nll"}


@dataclass(frozen=True)
class Preset:
    """A named set of compare options: ``methods()`` (names; :data:`EACH_RM` expands to one fixed RM per RM in
    use), run ``seeds``, ``world_seeds``, ``oods`` (``None``: compare's defaults) and run ``settings`` shared
    by every run. Options given explicitly win over the preset's."""

    name: str
    help: str
    methods: Callable[[], list[str]]
    seeds: int | None = None
    world_seeds: tuple[int, ...] | None = None
    oods: tuple[str, ...] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def method_list(self, rm_names: Sequence[str]) -> list[Method]:
        """The preset's methods over ``rm_names``.

        >>> [m.label for m in PRESETS["evidence-quick"].method_list(["rm-a"])]
        ['sft', 'random', 'laser']
        """
        names: list[str] = []
        for name in self.methods():
            names += [f"fixed:{rm}" for rm in rm_names] if name == EACH_RM else [name]
        return parse_methods(list(dict.fromkeys(names)))


def evidence_methods() -> list[str]:
    """The evidence table: sft, each RM alone, the label-free baselines, the LASeR rows of
    :data:`EVIDENCE_LASER`, the methods that read labels (by name, as far as they exist; any other method of
    the table that reads dev or training labels too), ``dev-pick`` at each of :data:`EVIDENCE_DEV_LABELS`
    (the default budget under its plain name), and the oracle.

    >>> [m for m in evidence_methods() if m.startswith("dev-pick")]
    ['dev-pick[dev_labels=8]', 'dev-pick', 'dev-pick[dev_labels=128]']
    """
    known = {*method_names(), *METHOD_ALIASES}
    labelled = [n for n in EVIDENCE_LABELLED if n in known]
    labelled += [n for n, m in METHODS.items() if m.labels in ("dev", "all") and n not in labelled]
    if "dev-pick" in labelled:
        at = labelled.index("dev-pick")
        default = RunConfig.model_fields["dev_labels"].default
        labelled[at:at + 1] = [f"dev-pick[dev_labels={n}]" if n != default else "dev-pick"
                               for n in EVIDENCE_DEV_LABELS]
    free = [n for n in DEFAULT_BASELINES if n != "oracle"]
    return [SFT, EACH_RM, *free, *EVIDENCE_LASER, *labelled, "oracle"]


#: Named compare presets (``--preset``).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("evidence", "the full evidence table: sft, each RM alone, the label-free baselines, the paper's "
           "LASeR and one change at a time, the label-reading methods (dev-pick at 8, 32 and 128 dev labels per "
           "task, prior-router, laser-dev, gold, rejection-sft, laser-gold) and the oracle, over 2 world seeds x "
           "3 run seeds and every ood kind; methods that read an unnamed reward use dpo+nll", evidence_methods, seeds=3,
           world_seeds=(0, 1), settings=EVIDENCE_SETTINGS),
    Preset("evidence-quick", "a CI-sized check of the evidence pipeline: sft, random and laser, one world "
           "seed, one run seed, ood bias, 1 iteration of 2 batches, 10 evaluation prompts per task",
           lambda: [SFT, "random", LASER], seeds=1, oods=("bias",),
           settings={"iterations": 1, "batches_per_iteration": 2, "eval_size": 10}),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    >>> get_preset("evidence-quick").seeds
    1
    >>> get_preset("full")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.compare.methods.MethodError: --preset 'full' is unknown; valid: evidence, evidence-quick
    """
    if name not in PRESETS:
        raise MethodError([f"--preset {name!r} is unknown; valid: {', '.join(PRESETS)}"])
    return PRESETS[name]
