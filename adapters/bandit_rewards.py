"""Bandit rewards for the RM selector, selectable by name, each declaring what it reads.

Each function turns what one DPO step produced (the step's losses and the typed :class:`StepInputs` the
loop reports) into one raw reward for the arm that was chosen, higher is better; the selector then
normalizes it. A function sees one *unit*: the whole group under ``batch`` granularity, or a single prompt
under ``instance`` granularity, described by :class:`RewardInputs`. :data:`BANDIT_REWARDS` lists every
reward with the optional inputs it reads (:attr:`BanditReward.reads`), so the loop computes exactly those.

>>> import numpy as np
>>> from types import SimpleNamespace
>>> result = SimpleNamespace(loss=0.9, losses=np.array([0.8, 1.0]), dpo_losses=np.array([0.7, 0.69]),
...                          nll_losses=np.array([0.1, 0.31]))
>>> round(get_reward("dpo+nll")(RewardInputs(result=result, rm="rm-a", rm_names=("rm-a", "rm-b"))), 6)
-0.9
>>> round(get_reward("nll")(RewardInputs(result=result, rm="rm-a", rm_names=("rm-a", "rm-b"))), 6)
-0.205
>>> sorted(BANDIT_REWARDS["gold"].reads), BANDIT_REWARDS["gold"].labels, BANDIT_REWARDS["dev-gold"].labels
(['correct'], 'all', 'dev')
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class StepLosses(Protocol):
    """The part of ``laser_adapters.dpo.StepResult`` the rewards read (per-pair arrays, same length)."""

    @property
    def loss(self) -> float: ...

    @property
    def losses(self) -> Any: ...

    @property
    def dpo_losses(self) -> Any: ...

    @property
    def nll_losses(self) -> Any: ...


@dataclass(frozen=True)
class AnswerLosses:
    """Losses without a training step: the NLL of chosen answers under the policy (best-of-n answering).

    It stands where a step's ``StepResult`` would, one entry per answer; there is no DPO term, so a reward
    that reads one fails with a clear message.

    >>> round(AnswerLosses(np.array([0.5, 1.5])).loss, 3), get_reward("nll")(RewardInputs(
    ...     result=AnswerLosses(np.array([0.5, 1.5])), rm="a", rm_names=("a",)))
    (1.0, -1.0)
    """

    nll_losses: FloatArray

    @property
    def losses(self) -> FloatArray:
        """The total loss per answer: its NLL."""
        return self.nll_losses

    @property
    def loss(self) -> float:
        """The mean NLL."""
        return float(np.mean(self.nll_losses))

    @property
    def dpo_losses(self) -> FloatArray:
        """There is none: no DPO step was taken."""
        raise ValueError("no DPO step was taken (best-of-n answering), so there is no DPO loss: use a reward "
                         "that reads the NLL or the answers")


#: Per prompt of the batch (a list over the batch, or a dict by batch position): one value per response.
PerPrompt = Sequence[Any] | Mapping[int, Any]

#: The optional inputs a reward may read (fields of :class:`StepInputs`).
OPTIONAL_INPUTS = ("scores", "correct", "responses", "loss_after", "dev_probe")


@dataclass(frozen=True)
class StepInputs:
    """What the loop reports to a selector with one DPO step, besides the step's losses.

    ``pair_prompt``: for each pair of the step, the batch position of its prompt (instance granularity
    needs it). The rest is given only to rewards that read it (:attr:`BanditReward.reads`): ``scores``,
    batch position -> RM name -> scores of that prompt's responses (``agreement``'s probe prompts);
    ``correct``, per prompt one boolean per response (``gold``; reads the answers); ``responses``, per
    prompt the scored responses (``consistency``); ``loss_after``, the same pairs' losses after the step
    (``loss-decrease``: a ``StepResult`` of ``DPOStep.evaluate``, per-pair losses, or the mean);
    ``dev_probe``, per prompt the share of labelled dev probe prompts of its task on which the RM chosen for it
    ranked a right sample first (``dev-gold``; reads a few dev labels).
    """

    pair_prompt: Sequence[int] | None = None
    scores: PerPrompt | None = None
    correct: PerPrompt | None = None
    responses: PerPrompt | None = None
    loss_after: Any = None
    dev_probe: PerPrompt | None = None


@dataclass(frozen=True)
class RewardInputs:
    """What a reward function may read for one rewarded unit.

    ``pair_index`` selects the unit's pairs among the step's pairs (``None``: all of them);
    ``prompt_indices`` are the unit's prompts (batch positions); ``rm_scores`` maps a batch position to
    the scores the chosen RM gave that prompt's responses; ``step`` is what the loop reported with the step.
    """

    result: StepLosses
    rm: str
    rm_names: Sequence[str]
    prompt_indices: Sequence[int] = ()
    pair_index: NDArray[np.int64] | None = None
    rm_scores: Mapping[int, FloatArray] = field(default_factory=dict)
    step: StepInputs = field(default_factory=StepInputs)

    def pick(self, values: Any, what: str) -> FloatArray:
        """``values`` (one per pair of the step) restricted to this unit's pairs, checked non-empty."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        n = len(np.asarray(self.result.losses).reshape(-1))
        if len(arr) != n:
            raise ValueError(f"{what} has {len(arr)} values but the step has {n} pairs; pass one per pair")
        if self.pair_index is not None:
            arr = arr[self.pair_index]
        if arr.size == 0:
            raise ValueError(f"no pairs to compute {what} from: skip feedback for a group that formed "
                             "no pairs")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contains NaN or inf: {arr.tolist()}")
        return arr


RewardFn = Callable[[RewardInputs], float]


class NoRewardSignal(ValueError):
    """The unit has none of the inputs its reward needs (e.g. no answer to check); under instance
    granularity the selector skips such a prompt instead of failing the step."""


def neg_total_loss(inp: RewardInputs) -> float:
    """The paper's reward: minus the mean total (DPO + NLL) loss of the unit's pairs.

    For a whole step this is ``-result.loss``; for a subset of pairs the mean of ``result.losses``.
    """
    if inp.pair_index is None:
        loss = float(inp.result.loss)
        if not np.isfinite(loss):
            raise ValueError(f"step loss must be finite, got {loss}")
        return -loss
    return -float(inp.pick(inp.result.losses, "losses").mean())


def neg_dpo_loss(inp: RewardInputs) -> float:
    """Minus the mean DPO term alone (no NLL). Prone to drift towards a consistently biased RM."""
    return -float(inp.pick(inp.result.dpo_losses, "dpo_losses").mean())


def neg_nll_loss(inp: RewardInputs) -> float:
    """Minus the mean NLL term (per-token NLL of the chosen responses) alone."""
    return -float(inp.pick(inp.result.nll_losses, "nll_losses").mean())


def loss_decrease(inp: RewardInputs) -> float:
    """Loss before the step minus loss after it, on the same pairs.

    Reads ``loss_after``: a float (the mean after the step, whole-step units only), an array with one
    loss per pair, or a ``StepResult`` from ``DPOStep.evaluate`` on the same pairs.
    """
    if inp.step.loss_after is None:
        raise ValueError("reward 'loss-decrease' needs loss_after: evaluate the same pairs after "
                         "the step (DPOStep.evaluate) and pass its StepResult or per-pair losses")
    after = inp.step.loss_after
    if hasattr(after, "losses"):
        after = after.losses
    if np.ndim(after) == 0:
        if inp.pair_index is not None:
            raise ValueError("reward 'loss-decrease' under instance granularity needs per-pair losses in "
                             f"loss_after, got the scalar {after!r}")
        return float(inp.result.loss) - float(after)
    before = inp.pick(inp.result.losses, "losses")
    return float(before.mean() - inp.pick(after, "loss_after").mean())


def _agreement_one(chosen: FloatArray, others: Sequence[FloatArray]) -> tuple[float, int]:
    """Share of (response pair, other RM) where the other RM strictly agrees with ``chosen``'s order."""
    i, j = np.triu_indices(len(chosen), k=1)
    sign = np.sign(chosen[i] - chosen[j])
    keep = sign != 0
    if not keep.any() or not others:
        return 0.0, 0
    agree = [np.sign(o[i] - o[j])[keep] == sign[keep] for o in others]
    return float(np.mean(agree)), int(keep.sum())


def _score_dicts(step: StepInputs) -> dict[int, Mapping[str, Any]]:
    if step.scores is None:
        raise ValueError("reward 'agreement' needs scores: for the probe prompts, a dict "
                         "{prompt index: {rm name: scores}} (or a list with None where not probed)")
    raw = step.scores
    items = raw.items() if isinstance(raw, Mapping) else enumerate(raw)
    return {int(k): v for k, v in items if v is not None}


def agreement(inp: RewardInputs) -> float:
    """Agreement of the chosen RM's preferences with the other RMs on the probe prompts, in [0, 1].

    For every pair of responses the chosen RM strictly orders, the share of other RMs that order it the
    same way, averaged over pairs. Probe prompts are those in ``scores`` with the chosen RM
    and at least one other RM; the unit's own probe prompts are used when it has any, otherwise all of
    the batch's.
    """
    dicts = _score_dicts(inp.step)
    probes = {k: d for k, d in dicts.items() if inp.rm in d and any(n != inp.rm for n in d)}
    if not probes:
        raise ValueError(f"reward 'agreement' found no probe prompt scored by {inp.rm!r} and another RM in "
                         "scores; use probe_size >= 1 and score the probe prompts with every RM")
    own = [k for k in inp.prompt_indices if k in probes]
    total, weight = 0.0, 0
    for k in own or sorted(probes):
        d = probes[k]
        chosen = np.asarray(d[inp.rm], dtype=np.float64)
        others = [np.asarray(d[n], dtype=np.float64) for n in d if n != inp.rm]
        if any(len(o) != len(chosen) for o in others):
            raise ValueError(f"scores[{k}] has score arrays of different lengths")
        a, w = _agreement_one(chosen, others)
        total, weight = total + a * w, weight + w
    return total / weight if weight else 0.0


def _for_prompt(values: PerPrompt, index: int) -> Any:
    """``values``' entry for batch position ``index`` (None when it has none)."""
    if isinstance(values, Mapping):
        return values.get(index)
    return values[index] if 0 <= index < len(values) else None


def _per_prompt_mean(inp: RewardInputs, name: str, field_name: str, values: PerPrompt | None,
                     score: Callable[[Any, FloatArray], float]) -> float:
    """Mean of ``score(entry, chosen RM's scores)`` over the unit's prompts that have both; ``values`` is
    the :class:`StepInputs` field ``field_name``, one entry per scored response of each prompt."""
    if values is None:
        raise ValueError(f"reward {name!r} needs {field_name}: per prompt, one entry per scored response")
    out = []
    for k in inp.prompt_indices:
        entry, scores = _for_prompt(values, k), inp.rm_scores.get(k)
        if entry is None or scores is None:
            continue
        if len(entry) != len(scores):
            raise ValueError(f"{field_name}[{k}] has {len(entry)} entries but {len(scores)} responses were "
                             "scored")
        out.append(score(entry, scores))
    if not out:
        raise NoRewardSignal(f"reward {name!r} found no prompt among {list(inp.prompt_indices)} with both "
                             f"scores and {field_name}")
    return float(np.mean(out))


def gold(inp: RewardInputs) -> float:
    """Correctness of the chosen RM's top-ranked response, averaged over the unit's prompts, in [0, 1].

    Reads ``correct``: per prompt (a list over the batch, or a dict by batch position), one boolean per
    response (whether it matches the reference answer). The top response is the first with the highest
    score of the chosen RM.
    """
    def top_is_right(correct: Any, scores: FloatArray) -> float:
        return float(np.asarray(correct, dtype=bool)[int(np.argmax(scores))])

    return _per_prompt_mean(inp, "gold", "correct", inp.step.correct, top_is_right)


def dev_gold(inp: RewardInputs) -> float:
    """Top-1 correctness of the chosen RM on labelled dev probe prompts, averaged over the unit's prompts, in
    [0, 1]: LASeR rewarded on a few dev labels instead of the training prompts' answers.

    Reads ``dev_probe``: per prompt (a list over the batch, or a dict by batch position), the share of the dev
    probe prompts sampled for it (prompts of its task, answered by the current policy) on which the chosen RM
    ranked a right sample first.

    >>> r = RewardInputs(result=AnswerLosses(np.ones(2)), rm="a", rm_names=("a", "b"), prompt_indices=(0, 1),
    ...                  step=StepInputs(dev_probe=[0.5, 1.0]))
    >>> dev_gold(r)
    0.75
    """
    if inp.step.dev_probe is None:
        raise ValueError("reward 'dev-gold' needs dev_probe: per prompt, the chosen RM's top-1 correctness "
                         "on labelled dev probe prompts")
    values = [v for k in inp.prompt_indices if (v := _for_prompt(inp.step.dev_probe, k)) is not None]
    if not values:
        raise NoRewardSignal(f"reward 'dev-gold' found no dev probe for prompts {list(inp.prompt_indices)}")
    out = np.asarray(values, dtype=np.float64)
    if not np.all((out >= 0) & (out <= 1)):
        raise ValueError(f"dev_probe values must be shares in [0, 1], got {out.tolist()}")
    return float(out.mean())


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_key(text: str) -> str:
    """What two answers must share to count as the same answer: the last number when there is one (a
    worked "7+5=12" and a bare "12" agree), else the lower-cased words.

    >>> answer_key(" 7+5=12"), answer_key("12"), answer_key(" Yes. "), answer_key("yes")
    ('12', '12', 'yes', 'yes')
    """
    numbers = _NUMBER.findall(text)
    if numbers:
        return str(numbers[-1])
    return " ".join(re.findall(r"\w+", text.lower()))


def consistency(inp: RewardInputs) -> float:
    """Label-free: how often the chosen RM's top-ranked response gives the answer most of the prompt's
    samples give (self-consistency), averaged over the unit's prompts, in [0, 1]. When several answers tie
    for most frequent, agreeing with one of them counts ``1 / (number tied)``.

    Reads ``responses``: per prompt (a list over the batch, or a dict by batch position), the responses the
    RM scored.
    """
    def agrees_with_majority(responses: Any, scores: FloatArray) -> float:
        keys = [answer_key(str(r)) for r in responses]
        counts = Counter(keys)
        top = max(counts.values())
        modes = {key for key, n in counts.items() if n == top}
        return 1.0 / len(modes) if keys[int(np.argmax(scores))] in modes else 0.0

    return _per_prompt_mean(inp, "consistency", "responses", inp.step.responses, agrees_with_majority)


@dataclass(frozen=True)
class BanditReward:
    """A bandit reward: its function, the optional :class:`StepInputs` fields it reads, and which gold answers
    it reads (``labels``: ``none``; ``dev``, a few labelled dev prompts per task; ``all``, every training
    prompt's): a method using it belongs to that information budget."""

    name: str
    fn: RewardFn
    reads: frozenset[str] = frozenset()
    labels: str = "none"

    @property
    def reads_labels(self) -> bool:
        """Whether it reads any gold answer."""
        return self.labels != "none"


BANDIT_REWARDS: dict[str, BanditReward] = {r.name: r for r in (
    BanditReward("dpo+nll", neg_total_loss),
    BanditReward("dpo", neg_dpo_loss),
    BanditReward("nll", neg_nll_loss),
    BanditReward("loss-decrease", loss_decrease, frozenset({"loss_after"})),
    BanditReward("agreement", agreement, frozenset({"scores"})),
    BanditReward("gold", gold, frozenset({"correct"}), labels="all"),
    BanditReward("dev-gold", dev_gold, frozenset({"dev_probe"}), labels="dev"),
    BanditReward("consistency", consistency, frozenset({"responses"})),
)}
"""Bandit rewards by name; ``"dpo+nll"`` is the paper's."""


def get_bandit_reward(name: str) -> BanditReward:
    """The reward registered as ``name``.

    >>> get_bandit_reward("dpo").fn.__name__
    'neg_dpo_loss'
    >>> get_bandit_reward("accuracy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown bandit reward 'accuracy'; valid names: dpo+nll, dpo, nll, loss-decrease, ...
    """
    try:
        return BANDIT_REWARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown bandit reward {name!r}; valid names: {', '.join(BANDIT_REWARDS)}") from None


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``.

    >>> get_reward("dpo").__name__
    'neg_dpo_loss'
    """
    return get_bandit_reward(name).fn
