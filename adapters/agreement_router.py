"""A label-free RM router: each RM's accuracy per task is estimated from how often the RMs agree.

Assumption (conditional independence, as in Dawid-Skene and the triplet method of spectral meta-learners):
given the true order of two responses, each RM's error is independent of the other RMs'. If RM ``a``
orders a pair correctly with probability ``p_a``, two RMs agree with probability
``A_ab = p_a p_b + (1 - p_a)(1 - p_b)``, so with ``m_ab = 2 A_ab - 1`` and ``c = 2 p - 1``,
``m_ab = c_a c_b`` and, for three RMs, ``c_a = sqrt(m_ab m_ac / m_bc)``, assuming every RM beats chance
(``c > 0``). With more RMs, :func:`estimate_accuracies` fits ``log m_ab = log c_a + log c_b`` over all
pairs by least squares (a rank-one fit of the off-diagonal, in log space); for three RMs that is exactly
the triplet formula.

Known failure: two RMs that share a bias (errors NOT independent) agree with each other more than their
accuracies explain, so both look accurate whatever their true accuracy, and the router may prefer them
to a better, independent RM. Agreement alone cannot tell a shared bias from shared skill; the margin
check below only catches a biased pair that ties. Response pairs of equal true quality also fall
outside the model (there is no true order to get right).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from banditkit.validation import check_positive_int, check_real

from .checks import FloatArray, as_float_array
from .pairs import PairResult, make_pairs
from .selector import RoutingSelector
from .selectors_baseline import standardize

if TYPE_CHECKING:
    from .bandit_rewards import StepInputs, StepLosses

IntArray = NDArray[np.int64]
FALLBACK = "ensemble-score"
"""The group label of batches whose pairs come from the score ensemble (warm-up and fallback)."""
GLOBAL_KEY = "global"
"""The key of prompts that come without a task label."""


def agreement_counts(scores: ArrayLike) -> tuple[IntArray, IntArray]:
    """Pairwise agreement of RMs on one prompt's ``(n_rms, n_responses)`` scores.

    For every pair of responses and every pair of RMs that both order it strictly, ``counted`` counts
    one and ``agree`` counts one when they order it the same way. Both are symmetric, zero on the diagonal.

    >>> agree, counted = agreement_counts([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
    >>> agree.tolist(), counted.tolist()
    ([[0, 2, 2], [2, 0, 1], [2, 1, 0]], [[0, 3, 2], [3, 0, 2], [2, 2, 0]])
    """
    s = as_float_array(scores, "scores")
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 2:
        raise ValueError(f"scores must have shape (n_rms, n_responses >= 2), got {s.shape}")
    i, j = np.triu_indices(s.shape[1], k=1)
    sign = np.sign(s[:, i] - s[:, j])
    pos, neg = (sign > 0).astype(np.int64), (sign < 0).astype(np.int64)
    agree: IntArray = pos @ pos.T + neg @ neg.T
    counted: IntArray = (pos + neg) @ (pos + neg).T
    np.fill_diagonal(agree, 0)
    np.fill_diagonal(counted, 0)
    return agree, counted


def estimate_accuracies(rates: ArrayLike) -> FloatArray | None:
    """Each RM's accuracy from a ``(k, k)`` matrix of pairwise agreement rates (its upper triangle is read),
    under conditional independence; ``None`` when not identifiable: fewer than three RMs, or some pair
    agreeing at or below chance (0.5), which independent better-than-chance RMs cannot do.

    >>> p = np.array([0.9, 0.7, 0.6])
    >>> rates = p[:, None] * p + (1 - p[:, None]) * (1 - p)
    >>> estimate_accuracies(rates).round(6).tolist()
    [0.9, 0.7, 0.6]
    >>> estimate_accuracies([[1.0, 0.5, 0.6], [0.5, 1.0, 0.6], [0.6, 0.6, 1.0]]) is None
    True
    """
    r = as_float_array(rates, "rates")
    if r.ndim != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"rates must be a square (n_rms, n_rms) matrix, got shape {r.shape}")
    a, b = np.triu_indices(r.shape[0], k=1)
    upper = r[a, b]
    if np.any((upper < 0) | (upper > 1)):
        raise ValueError(f"agreement rates must lie in [0, 1], got {upper.tolist()}")
    if r.shape[0] < 3 or np.any(upper <= 0.5):
        return None
    design = np.zeros((len(a), r.shape[0]))
    design[np.arange(len(a)), a] = 1.0
    design[np.arange(len(a)), b] = 1.0
    log_c = np.linalg.lstsq(design, np.log(2.0 * upper - 1.0), rcond=None)[0]
    accuracy: FloatArray = (1.0 + np.minimum(np.exp(log_c), 1.0)) / 2.0  # c <= 1; noise can push it above
    return accuracy


@dataclass(frozen=True)
class Decision:
    """How the router treats one batch: ``mode`` is ``route`` (to ``rm``), ``warmup`` (too few counted
    pairs) or ``fallback`` (RMs not told apart, see ``reason``); the last two form pairs from the ensemble.
    ``accuracies`` are the estimates it decided on (None when there are none); ``counted_pairs`` the
    fewest response pairs counted for any pair of RMs."""

    key: str
    mode: str
    rm: str | None
    accuracies: dict[str, float] | None
    counted_pairs: int
    reason: str | None = None

    @property
    def fell_back(self) -> bool:
        """Whether the batch's pairs come from the score ensemble."""
        return self.rm is None

    def as_log(self) -> dict[str, Any]:
        """The decision as JSON-ready data."""
        return {"key": self.key, "mode": self.mode, "fell_back": self.fell_back, "reason": self.reason,
                "accuracies": None if self.accuracies is None else dict(self.accuracies),
                "counted_pairs": self.counted_pairs}


class AgreementRouter(RoutingSelector):
    """Routes each batch to the RM whose accuracy on the batch's task, estimated from the RMs' pairwise
    agreement (see the module docstring for the assumption and its known failure), is highest.

    Every RM scores the first ``probe_size`` prompts of each batch (the routed RM first); those scores
    update agreement counts per task label (one ``global`` key without labels; a batch mixing tasks is
    decided on the counts of its tasks pooled). Until every pair of RMs has ``min_pairs`` counted
    response pairs for the key (warm-up), and whenever the estimate cannot tell the RMs apart (some pair
    agrees at or below chance, fewer than three RMs, or the best estimate leads the next by less than
    ``margin``), the batch falls back to the score ensemble: every RM scores every prompt, pairs come
    from the mean of the RMs' standardized scores (as ``ensemble-score``), the group is labelled
    ``ensemble-score``, and every prompt of the batch is counted. The ensemble is the safe choice when
    the best RM is unknown; it also ends the warm-up sooner than round-robin would. The estimates do not
    depend on which RM was routed to, so an early wrong choice cannot lock in. ``feedback`` learns
    nothing. Batch granularity only.

    >>> sel = AgreementRouter(["rm-a", "rm-b", "rm-c"], probe_size=1, min_pairs=10)
    >>> prompts = ["q0", "q1"]
    >>> choices = sel.choose(prompts, tasks=["math", "math"])  # warm-up: every RM scores every prompt
    >>> choices[1], sel.groups(choices)
    (('rm-a', 'rm-b', 'rm-c'), [('ensemble-score', [0, 1])])
    >>> scores = {"rm-a": [4, 3, 2, 1, 0], "rm-b": [4, 2, 3, 1, 0], "rm-c": [3, 4, 2, 0, 1]}
    >>> for i, p in enumerate(prompts):
    ...     _ = sel.pairs_for(i, p, ["v", "w", "x", "y", "z"], scores, max_pairs=2)
    >>> sel.choose(["q2", "q3"], tasks=["math", "math"])  # q2 is a probe
    [('rm-a', 'rm-b', 'rm-c'), ('rm-a',)]
    >>> d = sel.decision
    >>> d.mode, d.counted_pairs, {k: round(v, 2) for k, v in d.accuracies.items()}
    ('route', 20, {'rm-a': 1.0, 'rm-b': 0.87, 'rm-c': 0.77})
    """

    def __init__(self, rm_names: Sequence[str], *, probe_size: int = 2, min_pairs: int = 60,
                 margin: float = 0.05, granularity: str = "batch", name: str = "agree-estimate") -> None:
        super().__init__(rm_names, name=name, granularity=granularity)
        if self.granularity != "batch":
            raise ValueError(f"{name} routes whole batches: granularity must be 'batch', got {granularity!r}")
        if len(self.rm_names) < 2:
            raise ValueError(f"{name} compares RMs with each other: give at least two, got {self.rm_names}")
        if FALLBACK in self.rm_names:
            raise ValueError(f"{name} labels ensemble batches {FALLBACK!r}: rename the RM called that")
        self.probe_size = check_positive_int("probe_size", probe_size)
        self.min_pairs = check_positive_int("min_pairs", min_pairs)
        self.margin = check_real("margin", margin, low=0.0)
        self.decision: Decision | None = None
        self._counts: dict[str, tuple[IntArray, IntArray]] = {}
        self._counted: set[int] = set()

    # -- estimating
    def counts(self, keys: Sequence[str]) -> tuple[IntArray, IntArray]:
        """``(agree, counted)`` summed over ``keys`` (task labels, or ``global``), ``(n_rms, n_rms)`` each."""
        k = len(self.rm_names)
        agree, counted = np.zeros((k, k), dtype=np.int64), np.zeros((k, k), dtype=np.int64)
        for key in keys:
            if key in self._counts:
                agree, counted = agree + self._counts[key][0], counted + self._counts[key][1]
        return agree, counted

    def decide(self, tasks: Sequence[str] | None = None) -> Decision:
        """What the router does now for a batch with task labels ``tasks`` (None: no labels)."""
        keys = sorted({GLOBAL_KEY} if tasks is None else {str(t) for t in tasks})
        key, (agree, counted) = "+".join(keys), self.counts(keys)
        off_diagonal = ~np.eye(len(self.rm_names), dtype=bool)
        n = int(counted[off_diagonal].min())
        if n < self.min_pairs:
            return Decision(key, "warmup", None, None, n, f"{n} counted pairs < min_pairs={self.min_pairs}")
        acc = estimate_accuracies(np.where(off_diagonal, agree / np.maximum(counted, 1), 1.0))
        if acc is None:
            why = ("two RMs cannot be told apart by agreement alone" if len(self.rm_names) < 3 else
                   "some pair of RMs agrees at or below chance, against the independence assumption")
            return Decision(key, "fallback", None, None, n, why)
        accuracies = {rm: float(a) for rm, a in zip(self.rm_names, acc, strict=True)}
        order = np.argsort(-acc, kind="stable")
        best, second = float(acc[order[0]]), float(acc[order[1]])
        if best - second < self.margin:
            return Decision(key, "fallback", None, accuracies, n,
                            f"best estimate {best:.3f} leads the next ({second:.3f}) by less than "
                            f"margin={self.margin}")
        return Decision(key, "route", self.rm_names[int(order[0])], accuracies, n)

    # -- routing
    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        self.decision = self.decide(tasks)
        self._counted = set()
        return [self.decision.rm or FALLBACK] * len(prompts)

    def _needed(self, index: int, rm: str) -> tuple[str, ...]:
        if rm == FALLBACK:
            return tuple(self.rm_names)
        if index < self.probe_size:
            return (rm, *[n for n in self.rm_names if n != rm])
        return (rm,)

    def groups(self, choices: list[tuple[str, ...]]) -> list[tuple[str, list[int]]]:
        """One group: the routed RM, or ``ensemble-score`` for a warm-up or fallback batch."""
        b = self._require_batch()
        if [tuple(c) for c in choices] != [self._needed(i, rm) for i, rm in enumerate(b.rms)]:
            raise ValueError("choices do not match the last choose call: pass what choose returned")
        return [(b.rms[0], list(range(len(b.rms))))]

    def pairs_for(self, index: int, prompt: str, responses: Sequence[str], scores: Mapping[str, Any],
                  max_pairs: int) -> PairResult:
        """Pairs ranked by the routed RM, or by the mean standardized score for an ensemble batch; prompts
        scored by every RM update the agreement counts (once per prompt and batch)."""
        b = self._require_batch()
        i = self._check_index(index)
        rm = b.rms[i]
        if rm != FALLBACK and i >= self.probe_size:
            return super().pairs_for(i, prompt, responses, scores, max_pairs)
        matrix = self._score_matrix(i, prompt, responses, scores)
        if i not in self._counted:
            self._counted.add(i)
            key = GLOBAL_KEY if b.tasks is None else b.tasks[i]
            agree, counted = agreement_counts(matrix)
            old_agree, old_counted = self.counts([key])
            self._counts[key] = (old_agree + agree, old_counted + counted)
        if rm != FALLBACK:
            return super().pairs_for(i, prompt, responses, scores, max_pairs)
        ensemble: FloatArray = np.mean([standardize(row) for row in matrix], axis=0)
        b.seen_scores[i] = ensemble
        return make_pairs(prompt, responses, ensemble, max_pairs)

    def _score_matrix(self, i: int, prompt: str, responses: Sequence[str],
                      scores: Mapping[str, Any]) -> FloatArray:
        """Every RM's scores for prompt ``i`` as a checked ``(n_rms, n_responses)`` array."""
        b = self._require_batch()
        if prompt != b.prompts[i]:
            raise ValueError(f"prompt {i} is {b.prompts[i][:60]!r} in the last batch, got {prompt[:60]!r}: "
                             "pass the index of the prompt as given to choose")
        missing = [n for n in self.rm_names if n not in scores]
        if missing:
            raise ValueError(f"prompt {i} needs every RM's scores but lacks {missing}; score it with the RMs "
                             "that choose named for it")
        rows = [as_float_array(scores[n], f"scores of {n!r} for prompt {i}").reshape(-1) for n in self.rm_names]
        bad = {n: len(r) for n, r in zip(self.rm_names, rows, strict=True) if len(r) != len(responses)}
        if bad:
            raise ValueError(f"prompt {i} has {len(responses)} responses but got score counts {bad}")
        return np.array(rows)

    # -- feedback and state
    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """No learning (the counts come from the probes); returns ``selector``, ``rm`` (the group label),
        ``n_prompts``, ``iteration`` and the batch's :class:`Decision` (``key``, ``mode``, ``fell_back``,
        ``reason``, ``accuracies`` per RM, ``counted_pairs``)."""
        idx = self._check_group(label, prompt_indices)
        decision = self.decision.as_log() if self.decision is not None else {}
        return {"selector": self.name, "rm": label, "n_prompts": len(idx), "iteration": self.iteration,
                **decision}

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the settings and the agreement counts per key."""
        counts = {key: {"agree": a.tolist(), "counted": c.tolist()} for key, (a, c) in self._counts.items()}
        return {**self._base_state(), "probe_size": self.probe_size, "min_pairs": self.min_pairs,
                "margin": self.margin, "counts": counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, settings included (the router must be built over the same RMs)."""
        self._load_base_state(state)
        k = len(self.rm_names)
        counts: dict[str, tuple[IntArray, IntArray]] = {}
        for key, entry in state["counts"].items():
            agree = np.asarray(entry["agree"], dtype=np.int64)
            counted = np.asarray(entry["counted"], dtype=np.int64)
            if agree.shape != (k, k) or counted.shape != (k, k) or np.any(agree < 0) or np.any(agree > counted):
                raise ValueError(f"counts for key {key!r} must be ({k}, {k}) with 0 <= agree <= counted, got "
                                 f"agree {agree.tolist()} and counted {counted.tolist()}")
            counts[str(key)] = (agree, counted)
        self.probe_size = check_positive_int("probe_size", state["probe_size"])
        self.min_pairs = check_positive_int("min_pairs", state["min_pairs"])
        self.margin = check_real("margin", state["margin"], low=0.0)
        self._counts, self.decision, self._counted = counts, None, set()
