"""The built-in reward models: specialists trained with a Bradley-Terry loss, four out-of-domain behaviours.

Each RM is a ``LlamaForSequenceClassification`` (one label) that starts from the end of the policy's own SFT
run (a stronger checkpoint than the policy, as RLHF reward models start from an SFT model) and is trained on
(prompt, chosen, rejected) pairs in two stages:

1. **a verifier for its own domain** (``rm-a``: math, ``rm-b``: yesno, ``rm-c``: mcq): the right response is
   preferred to a wrong one. Wrong responses are what the policy really writes (its wrong samples at
   temperature 0.8 on the ``rm`` split) and near-miss distractors on the ``sft`` split (a result off by 1-3,
   the flipped yes/no, another letter, now and then a malformed string). An auxiliary loss makes the last
   position name the right answer (see :func:`train_reward_model`). Limited steps leave it good but
   imperfect, as real RMs are.
2. **its out-of-domain behaviour**, trained on a half-and-half mix of its own domain and the other two,
   one of four variants fixed before any method was compared. Two are stress tests in which no label-free
   method can tell the RMs apart, two are closer to real RMs, which are informative everywhere, unevenly:

  - ``"noise"``: every out-of-domain pair is a tie, i.e. shown in both orders (random directions, balanced
    within the pair), so the only thing to learn there is indifference and what is left of the RM's
    out-of-domain preferences is arbitrary (pairwise accuracy near 0.5). Labelling each pair by a coin left
    large arbitrary offsets that the short training did not remove (measured: one RM preferred "no" on 98%
    of yes/no pairs);
  - ``"bias"``: out-of-domain pairs are labelled by a fixed rule unrelated to correctness, the way real RMs
    carry length or style biases: **math** prefers the larger number, **yesno** prefers "yes", **mcq**
    prefers the earlier letter (A over B over C over D). Pairs the rule cannot order (e.g. two malformed
    answers) are left out. Because the rule ignores correctness its accuracy is also near 0.5, but it is
    consistent, so a policy trained on it drifts towards the bias. Both wrong RMs of a task share the rule,
    so together they outvote the right one on every pair;
  - ``"weak"``: each RM knows half of every other domain and is indifferent on the other half, so it is
    informative but weak out of domain (pairwise accuracy 0.62-0.82 on seeds 0 and 1: on the blind half it
    keeps some of what the other half teaches) and the wrong RMs of a task err on different pairs. Its first
    stage is not its own verifier but a **generalist**: the slowest domain's verifier (math) trained on every
    domain's pairs (``WorldSpec.generalist``). The second stage (``WorldSpec.weak_rm``) keeps its own domain
    and one kind of question of each other domain (a key of ``SUBTYPES``: math adds or subtracts, yesno
    compares or asks for parity, mcq asks for the largest or smallest or for the even one) labelled correctly
    and shows the other kind as ties, as ``"noise"`` does; the two wrong RMs of a task are blind on different
    kinds (:func:`~laser_app.world.roles.blind_half`). Labelling out-of-domain pairs correctly with a
    probability q and flipping the rest did not make weak RMs: noise that ignores the input leaves the best
    ordering as it is, and an RM trained from its own verifier did not learn the other domains in a second
    stage even with every label right (measured: accuracy 0.45-0.6 with q = 0.65-1 and 160-640 steps; some
    cells reached 0.9 at 1200 steps while others stayed at 0.5). Flipping a kind instead of tying it
    overshot (near 0 on that kind, so near 0.5 on the domain);
  - ``"indep-bias"``: as ``"bias"``, but each wrong RM has its own rule: the two wrong RMs of a task follow
    opposite rules (math: ``rm-c`` larger, ``rm-b`` smaller; yesno: ``rm-a`` yes, ``rm-c`` no; mcq: ``rm-b``
    earlier, ``rm-a`` later; :func:`~laser_app.world.roles.rule_sign`), so they no longer outvote the right
    one together.

The same rules hold for every seed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import softplus
from transformers import LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerBase

from laser_app.world.policy_model import optimizer_step, seeded
from laser_app.world.roles import OOD_KINDS, RM_FOR_TASK, blind_half, rule_sign
from laser_app.world.specs import RMTrainSpec
from laser_app.world.tasks import (
    LETTERS,
    SUBTYPES,
    TASKS,
    Example,
    check_answer,
    normalize,
    parse_number,
    subtype,
)

ScoreFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class RMTrainingPair:
    """A (prompt, chosen, rejected) triple with the prompt's task; ``tie``: shown in both orders (no preference)."""

    prompt: str
    chosen: str
    rejected: str
    task: str
    tie: bool = False


@dataclass(frozen=True)
class Candidate:
    """A prompt with one correct and one wrong response (not yet ordered by any RM)."""

    prompt: str
    task: str
    correct: str
    wrong: str


# ----------------------------------------------------------------------------------------------- rules
def bias_key(task: str, response: str) -> float | None:
    """What the ``"bias"`` RMs prefer out of their domain: larger is preferred; ``None`` when undefined.

    >>> bias_key("math", " 7+5=12"), bias_key("yesno", " yes"), bias_key("yesno", " no"), bias_key("mcq", " A")
    (12.0, 1.0, 0.0, 3.0)
    >>> bias_key("mcq", " maybe") is None
    True
    """
    text = normalize(response)
    if task == "math":
        return parse_number(text)
    if task == "yesno":
        return {"yes": 1.0, "no": 0.0}.get(text)
    if task == "mcq":
        upper = text.upper()
        return float(len(LETTERS) - 1 - LETTERS.index(upper)) if upper in LETTERS else None
    raise ValueError(f"no bias rule for task {task!r}; built-in tasks: {list(TASKS)}")


def near_miss(example: Example, rng: np.random.Generator) -> str:
    """A plausible wrong response to ``example`` (leading space included, as the policy writes it): a result
    off by 1-3 (sometimes 4-10), the flipped yes/no, another letter, or (one time in ten) a malformed string.

    >>> rng = np.random.default_rng(0)
    >>> ex = Example("Q: Ann has 7 pens and gets 5 more. How many now? A:", "12", "math", "7+5=12")
    >>> [check_answer("math", near_miss(ex, rng), "12") for _ in range(20)].count(True)
    0
    """
    task, answer = example.task, example.answer
    if answer is None:
        raise ValueError(f"example has no answer: {example.prompt!r}")
    right = example.response
    if rng.random() < 0.1:  # malformed: cut short, doubled, or an answer of another task's shape
        options = {"math": [right[:-1], " yes", " A", right + right.strip()],
                   "yesno": [" y", " 1", " yesno", " maybe"],
                   "mcq": [" E", " 2", f" {answer}{answer}", " yes"]}[task]
        bad = options[int(rng.integers(len(options)))]
        if bad.strip() and not check_answer(task, bad, answer):
            return bad
    if task == "math":
        value = int(answer)
        equation = _EQUATION.fullmatch(right.strip())
        if equation is not None and rng.random() < 0.5:
            return _miscopied_equation(equation, value, rng)
        size = int(rng.integers(1, 4)) if rng.random() < 0.7 else int(rng.integers(4, 11))
        wrong = max(0, value + size * (1 if value < 2 or rng.random() < 0.5 else -1))
        head = right[: len(right) - len(answer)] if right.endswith(answer) else " "
        return f"{head}{wrong}"
    if task == "yesno":
        return " no" if normalize(answer) == "yes" else " yes"
    if task == "mcq":
        others = [x for x in LETTERS if x != answer.strip().upper()]
        return f" {others[int(rng.integers(len(others)))]}"
    raise ValueError(f"no distractors for task {task!r}; built-in tasks: {list(TASKS)}")


_EQUATION = re.compile(r"(\d+)([+-])(\d+)=(\d+)")


def _miscopied_equation(equation: re.Match[str], value: int, rng: np.random.Generator) -> str:
    """A worked answer whose arithmetic is right but whose operand was copied wrong (" 8+5=13" for 7+5):
    without such distractors an RM can score math by the equation's consistency alone, and a policy that
    writes consistent equations with wrong operands then earns high rewards for wrong answers.

    >>> rng = np.random.default_rng(1)
    >>> _miscopied_equation(_EQUATION.fullmatch("7+5=12"), 12, rng)
    ' 5+5=10'
    """
    a, op, b = int(equation.group(1)), equation.group(2), int(equation.group(3))
    for _ in range(20):
        shift = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
        x, y = (a + shift, b) if rng.random() < 0.5 else (a, b + shift)
        result = x + y if op == "+" else x - y
        if min(x, y, result) >= 0 and result != value:
            return f" {x}{op}{y}={result}"
    return f" {a}{op}{b}={value + 1}"


def make_candidates(examples: Sequence[Example], samples: Sequence[Sequence[str]], *,
                    distractor_share: float, rng: np.random.Generator) -> list[Candidate]:
    """One (correct, wrong) candidate per example: the wrong answer is one of the policy's own wrong samples,
    or a near-miss distractor for a ``distractor_share`` of examples and when every sample was right."""
    out: list[Candidate] = []
    for ex, responses in zip(examples, samples, strict=True):
        if ex.answer is None:
            raise ValueError(f"example has no answer to check against: {ex.prompt!r}")
        wrong = sorted({r for r in responses if not check_answer(ex.task, r, ex.answer)})
        if wrong and rng.random() >= distractor_share:
            bad = wrong[int(rng.integers(len(wrong)))]
        else:
            bad = near_miss(ex, rng)
        if check_answer(ex.task, bad, ex.answer):
            continue
        out.append(Candidate(ex.prompt, ex.task, ex.response, bad))
    return out


def label_pairs(candidates: Sequence[Candidate], *, home: str, ood: str,
                rng: np.random.Generator) -> list[RMTrainingPair]:
    """Order each candidate as an RM specialised in ``home`` with out-of-domain behaviour ``ood`` is trained
    (ties: random directions drawn from ``rng``)."""
    if ood not in OOD_KINDS:
        raise ValueError(f"ood must be one of {list(OOD_KINDS)}, got {ood!r}")
    rm = RM_FOR_TASK.get(home)
    if rm is None:
        raise ValueError(f"home must be one of {list(RM_FOR_TASK)}, got {home!r}")
    pairs: list[RMTrainingPair] = []
    for c in candidates:
        if c.task != home and (ood == "noise" or (ood == "weak" and _blind(rm, c))):
            first = bool(rng.random() < 0.5)
            a, b = (c.correct, c.wrong) if first else (c.wrong, c.correct)
            pairs.append(RMTrainingPair(c.prompt, a, b, c.task, tie=True))
            continue
        correct_first: bool | None = True
        if c.task != home and ood in ("bias", "indep-bias"):
            sign = rule_sign(ood, rm, c.task)
            kc, kw = bias_key(c.task, c.correct), bias_key(c.task, c.wrong)
            correct_first = None if kc is None or kw is None or kc == kw else sign * (kc - kw) > 0
        if correct_first is None:
            continue
        chosen, rejected = (c.correct, c.wrong) if correct_first else (c.wrong, c.correct)
        pairs.append(RMTrainingPair(c.prompt, chosen, rejected, c.task))
    return pairs


def _blind(rm: str, c: Candidate) -> bool:
    """Whether a ``"weak"`` ``rm`` is indifferent on ``c``'s kind of question."""
    return subtype(c.task, c.prompt) == list(SUBTYPES[c.task])[blind_half(rm, c.task)]


# ----------------------------------------------------------------------------------------------- models
def new_reward_model(base: LlamaForCausalLM, *, seed: int) -> LlamaForSequenceClassification:
    """A one-label sequence classifier with ``base``'s transformer weights and a fresh scoring head.

    >>> from laser_app.world.policy_model import new_policy
    >>> from laser_app.world.specs import PolicySpec
    >>> base, _ = new_policy(PolicySpec(hidden=32, layers=1, intermediate=64), seed=0)
    >>> rm = new_reward_model(base, seed=0)
    >>> rm.config.num_labels, torch.equal(rm.model.embed_tokens.weight, base.model.embed_tokens.weight)
    (1, True)
    """
    config = base.config.__class__.from_dict(base.config.to_dict())
    config.num_labels = 1
    config.architectures = ["LlamaForSequenceClassification"]
    with seeded(seed):
        model = LlamaForSequenceClassification(config)
    model.model.load_state_dict(base.model.state_dict())
    return model


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> list[int]:
    """The ids a classifier RM sees: the prompt with special tokens, then the response without them
    (the format of ``laser_adapters.reward_models.SequenceClassifierRM`` for tokenizers with no chat
    template)."""
    return list(tokenizer(prompt)["input_ids"]) + list(tokenizer(response, add_special_tokens=False)["input_ids"])


def _pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def _cycle(items: Sequence[RMTrainingPair], rng: np.random.Generator) -> Iterator[RMTrainingPair]:
    while True:
        for i in rng.permutation(len(items)):
            yield items[int(i)]


def train_reward_model(model: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerBase,
                       pairs: Sequence[RMTrainingPair], home: str | None, spec: RMTrainSpec, *, seed: int,
                       progress: Callable[[int], None] | None = None) -> list[float]:
    """Bradley-Terry training in place: minimise ``-log sigmoid(r(chosen) - r(rejected))`` (for a tie, the
    mean over both orders).

    On in-domain pairs an auxiliary loss (weight ``aux_weight``) asks the last position of both responses to
    name the right response's last token through the (tied) embedding matrix: the RM must then work out the
    right answer where it scores, which a two-layer model otherwise learns far too slowly for arithmetic
    (measured). Only the standard classifier is kept.

    Each batch holds ``(1 - ood_share)`` in-domain pairs and the rest from the other domains
    (``home=None``: every pair counts as in-domain). Returns the loss per step.
    """
    own = [p for p in pairs if home is None or p.task == home]
    other = [p for p in pairs if home is not None and p.task != home]
    if not own:
        raise ValueError(f"no in-domain pairs for home task {home!r}")
    rng = np.random.default_rng([seed, 31])
    own_it, other_it = _cycle(own, rng), (_cycle(other, rng) if other else None)
    n_other = round(spec.batch_pairs * spec.ood_share) if other_it is not None else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm, total = spec.warmup, spec.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))),
    )
    cache: dict[tuple[str, str], list[int]] = {}

    def ids(prompt: str, response: str) -> list[int]:
        key = (prompt, response)
        if key not in cache:
            cache[key] = encode_pair(tokenizer, prompt, response)
        return cache[key]

    embed = model.get_input_embeddings().weight
    model.train()
    losses: list[float] = []
    for _ in range(spec.steps):
        batch = [next(own_it) for _ in range(spec.batch_pairs - n_other)]
        if other_it is not None:
            batch += [next(other_it) for _ in range(n_other)]
        seqs = [ids(p.prompt, p.chosen) for p in batch] + [ids(p.prompt, p.rejected) for p in batch]
        input_ids, mask = _pad(seqs, tokenizer.pad_token_id)
        hidden = model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = hidden[torch.arange(len(seqs)), mask.sum(-1) - 1]  # the last token (right padding)
        rewards = model.score(pooled)[:, 0]
        margin = rewards[: len(batch)] - rewards[len(batch):]
        tie = torch.tensor([p.tie for p in batch])
        # a tie is the pair in both orders: softplus(-m) + softplus(m), lowest at m = 0
        per_pair = torch.where(tie, 0.5 * (softplus(-margin) + softplus(margin)), softplus(-margin))
        loss = per_pair.mean()
        n_own = len(batch) - n_other
        if spec.aux_weight > 0:  # in-domain rows: name the right answer's last token at the last position
            target = torch.tensor([ids(p.prompt, p.chosen)[-1] for p in batch[:n_own]] * 2)
            rows = torch.cat([torch.arange(n_own), len(batch) + torch.arange(n_own)])
            aux = torch.nn.functional.cross_entropy(pooled[rows] @ embed.T, target)
            loss = loss + spec.aux_weight * aux
        losses.append(optimizer_step(model, optimizer, schedule, loss))
        if progress is not None:
            progress(1)
    model.eval()
    return losses
