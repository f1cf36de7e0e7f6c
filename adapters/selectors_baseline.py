"""Baseline RM selectors with the same interface as LASeR's (``laser_adapters.methods`` builds any by name).

Single-RM baselines (fixed, random, sequential) route each prompt to one RM; ensembles need every RM's
scores and combine them per prompt. Their ``feedback`` learns nothing and returns a small log dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .checks import FloatArray, check_choice, check_rm_names
from .pairs import PairResult, make_pairs
from .selector import RoutingSelector

if TYPE_CHECKING:
    from .bandit_rewards import StepInputs, StepLosses


def _log(sel: RoutingSelector | EnsembleSelector, label: str, idx: list[int]) -> dict[str, Any]:
    return {"selector": sel.name, "rm": label, "n_prompts": len(idx), "iteration": sel.iteration}


class FixedSelector(RoutingSelector):
    """Always the RM ``rm``.

    >>> sel = FixedSelector(["rm-a", "rm-b"], "rm-b")
    >>> sel.choose(["p1", "p2"])
    [('rm-b',), ('rm-b',)]
    """

    def __init__(self, rm_names: Sequence[str], rm: str, *, name: str | None = None) -> None:
        super().__init__(rm_names, name=name or f"fixed:{rm}")
        if rm not in self.rm_names:
            raise ValueError(f"unknown RM {rm!r}; valid names: {', '.join(self.rm_names)}")
        self.rm = rm

    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        return [self.rm] * len(prompts)

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """No learning; returns ``{"selector", "rm", "n_prompts", "iteration"}``."""
        return _log(self, label, self._check_group(label, prompt_indices))

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rm": self.rm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        self.rm = check_choice("rm", state["rm"], self.rm_names)


class RandomSelector(RoutingSelector):
    """A uniformly random RM per batch (or per prompt with ``granularity="instance"``), from ``seed``.

    >>> sel = RandomSelector(["rm-a", "rm-b", "rm-c"], seed=0)
    >>> len(set(sel.choose(["p1", "p2", "p3"])))
    1
    """

    def __init__(self, rm_names: Sequence[str], seed: int | np.random.Generator | None = 0, *,
                 granularity: str = "batch", name: str = "random") -> None:
        super().__init__(rm_names, name=name, granularity=granularity)
        self._rng = np.random.default_rng(seed)

    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        k = len(self.rm_names)
        if self.granularity == "batch":
            return [self.rm_names[int(self._rng.integers(k))]] * len(prompts)
        return [self.rm_names[int(a)] for a in self._rng.integers(k, size=len(prompts))]

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """No learning; returns ``{"selector", "rm", "n_prompts", "iteration"}``."""
        return _log(self, label, self._check_group(label, prompt_indices))

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]


class SequentialSelector(RoutingSelector):
    """One RM per iteration, round-robin: iteration ``m`` (as passed to ``new_iteration``) uses
    ``rm_names[m % len(rm_names)]``.

    >>> sel = SequentialSelector(["rm-a", "rm-b"])
    >>> [(sel.new_iteration(m), sel.choose(["p"])[0][0])[1] for m in range(3)]
    ['rm-a', 'rm-b', 'rm-a']
    """

    def __init__(self, rm_names: Sequence[str], *, name: str = "sequential") -> None:
        super().__init__(rm_names, name=name)

    @property
    def current(self) -> str:
        """The RM of the current iteration."""
        return self.rm_names[self.iteration % len(self.rm_names)]

    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        return [self.current] * len(prompts)

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """No learning; returns ``{"selector", "rm", "n_prompts", "iteration"}``."""
        return _log(self, label, self._check_group(label, prompt_indices))

    def state_dict(self) -> dict[str, Any]:
        return self._base_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)


class OracleSelector(RoutingSelector):
    """Each prompt to the RM built for its task (``rm_for_task``): the upper bound a selector can reach
    when it knows which RM suits which task. Needs task labels; prompts are grouped by RM.

    >>> sel = OracleSelector(["rm-a", "rm-b"], {"math": "rm-a", "yesno": "rm-b"})
    >>> sel.choose(["2+2?", "Is it?"], tasks=["math", "yesno"])
    [('rm-a',), ('rm-b',)]
    """

    def __init__(self, rm_names: Sequence[str], rm_for_task: Mapping[str, str], *,
                 name: str = "oracle") -> None:
        super().__init__(rm_names, name=name, granularity="instance")
        if not rm_for_task:
            raise ValueError("the oracle needs rm_for_task: the RM meant for each task, e.g. {'math': 'rm-a'}")
        unknown = sorted(set(rm_for_task.values()) - set(self.rm_names))
        if unknown:
            raise ValueError(f"rm_for_task names unknown RMs {unknown}; valid names: {', '.join(self.rm_names)}")
        self.rm_for_task = {str(k): str(v) for k, v in rm_for_task.items()}

    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        if tasks is None:
            raise ValueError("the oracle routes by task: pass tasks to choose")
        missing = sorted(set(tasks) - set(self.rm_for_task))
        if missing:
            raise ValueError(f"the oracle has no RM for task(s) {', '.join(missing)}; add them to rm_for_task")
        return [self.rm_for_task[t] for t in tasks]

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """No learning; returns ``{"selector", "rm", "n_prompts", "iteration"}``."""
        return _log(self, label, self._check_group(label, prompt_indices))

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rm_for_task": dict(self.rm_for_task)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        self.rm_for_task = {str(k): check_choice("rm_for_task", v, self.rm_names)
                            for k, v in state["rm_for_task"].items()}


# --------------------------------------------------------------------------- ensembles
def standardize(scores: FloatArray) -> FloatArray:
    """Z-scores of one RM's scores over a prompt's responses (population std); a constant RM gives 0.

    >>> standardize(np.array([1.0, 2.0, 3.0])).round(4).tolist()
    [-1.2247, 0.0, 1.2247]
    >>> standardize(np.array([4.0, 4.0])).tolist()
    [0.0, 0.0]
    """
    s: FloatArray = np.asarray(scores, dtype=np.float64)
    sd = float(s.std())
    if sd == 0.0 or not np.isfinite(sd):
        return np.zeros_like(s)
    z: FloatArray = (s - s.mean()) / sd
    return z


class EnsembleSelector:
    """Base of the ensembles: every prompt needs every RM's scores; one DPO step per batch."""

    granularity = "batch"
    needs: frozenset[str] = frozenset()  # learns nothing, so reads nothing

    def __init__(self, rm_names: Sequence[str], *, name: str) -> None:
        self.rm_names = check_rm_names(rm_names)
        self.name = name
        self.iteration = 0
        self._n: int | None = None

    def choose(self, prompts: Sequence[str], *, tasks: Sequence[str] | None = None,
               contexts: Any = None) -> list[tuple[str, ...]]:
        """Every RM for every prompt (``contexts`` is accepted for the protocol and not needed)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, got a single string; wrap it in a list")
        n = len(list(prompts))
        if n == 0:
            raise ValueError("choose needs at least one prompt, got an empty batch")
        if tasks is not None and len(tasks) != n:
            raise ValueError(f"got {n} prompts but {len(tasks)} task labels")
        self._n = n
        return [tuple(self.rm_names)] * n

    def _check_index(self, index: int) -> int:
        if self._n is None:
            raise ValueError(f"{self.name}: call choose(prompts) before pairs_for/groups/feedback")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self._n:
            raise ValueError(f"prompt index {index!r} is out of range: the last batch had {self._n} prompts")
        return int(index)

    def score_matrix(self, index: int, n_responses: int, scores: Mapping[str, Any]) -> FloatArray:
        """Each RM's scores for prompt ``index`` as a (n_rms, n_responses) array, checked."""
        self._check_index(index)
        missing = [n for n in self.rm_names if n not in scores]
        if missing:
            raise ValueError(f"{self.name} needs every RM's scores; prompt {index} lacks {missing}")
        rows = []
        for n in self.rm_names:
            s = np.asarray(scores[n], dtype=np.float64).reshape(-1)
            if len(s) != n_responses:
                raise ValueError(f"RM {n!r} gave {len(s)} scores for prompt {index} but it has {n_responses} "
                                 "responses")
            if not np.all(np.isfinite(s)):
                raise ValueError(f"RM {n!r} gave NaN or inf scores for prompt {index}: {s.tolist()}")
            rows.append(s)
        return np.array(rows)

    def mean_standardized(self, index: int, n_responses: int, scores: Mapping[str, Any]) -> FloatArray:
        """The ensemble score: mean over RMs of per-RM standardized scores."""
        m = self.score_matrix(index, n_responses, scores)
        return np.asarray(np.mean([standardize(row) for row in m], axis=0), dtype=np.float64)

    def groups(self, choices: list[tuple[str, ...]]) -> list[tuple[str, list[int]]]:
        """One group for the whole batch, labelled with the selector's name."""
        if self._n is None or len(choices) != self._n:
            raise ValueError("choices do not match the last choose call: pass what choose returned")
        return [(self.name, list(range(self._n)))]

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """No learning; returns ``{"selector", "rm", "n_prompts", "iteration"}``."""
        return _log(self, label, [self._check_index(i) for i in prompt_indices])

    def new_iteration(self, iteration: int) -> None:
        """Mark the start of iteration ``iteration`` (0-based)."""
        if isinstance(iteration, bool) or not isinstance(iteration, (int, np.integer)) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0, got {iteration!r}")
        self.iteration = int(iteration)

    def state_dict(self) -> dict[str, Any]:
        return {"selector": type(self).__name__, "name": self.name, "rm_names": list(self.rm_names),
                "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("selector") != type(self).__name__ or list(state["rm_names"]) != self.rm_names:
            raise ValueError(f"state is for {state.get('selector')!r} over {state.get('rm_names')}, not "
                             f"{type(self).__name__} over {self.rm_names}")
        self.iteration = int(state["iteration"])


class ScoreEnsembleSelector(EnsembleSelector):
    """Pairs ranked by the mean of per-RM standardized (z-scored within the prompt) scores.

    >>> sel = ScoreEnsembleSelector(["a", "b"])
    >>> _ = sel.choose(["q"])
    >>> pr = sel.pairs_for(0, "q", ["x", "y", "z"], {"a": [3.0, 1.0, 2.0], "b": [0.0, 0.0, 0.0]}, 1)
    >>> pr.pairs[0]["chosen"], pr.pairs[0]["rejected"]
    ('x', 'y')
    """

    def __init__(self, rm_names: Sequence[str], *, name: str = "ensemble-score") -> None:
        super().__init__(rm_names, name=name)

    def pairs_for(self, index: int, prompt: str, responses: Sequence[str], scores: Mapping[str, Any],
                  max_pairs: int) -> PairResult:
        """Top-vs-bottom pairs by the mean standardized score."""
        return make_pairs(prompt, responses, self.mean_standardized(index, len(responses), scores), max_pairs)


class AgreementEnsembleSelector(EnsembleSelector):
    """Top-vs-bottom candidate pairs by the mean standardized score, kept only where a strict majority
    of RMs strictly prefer the chosen response; ``dropped_disagreements`` counts the rest.

    >>> sel = AgreementEnsembleSelector(["a", "b", "c"])
    >>> _ = sel.choose(["q"])
    >>> s = {"a": [3.0, 0.0, 2.0, 1.0], "b": [3.0, 0.0, 1.0, 1.1], "c": [3.0, 0.0, 1.0, 1.1]}
    >>> pr = sel.pairs_for(0, "q", ["w", "x", "y", "z"], s, 2)  # candidates (w, x) and (y, z)
    >>> [(p["chosen"], p["rejected"]) for p in pr.pairs], sel.dropped_disagreements
    ([('w', 'x')], 1)
    """

    def __init__(self, rm_names: Sequence[str], *, name: str = "ensemble-agree") -> None:
        super().__init__(rm_names, name=name)
        self.dropped_disagreements = 0
        self._dropped: dict[int, int] = {}

    def choose(self, prompts: Sequence[str], *, tasks: Sequence[str] | None = None,
               contexts: Any = None) -> list[tuple[str, ...]]:
        self._dropped = {}
        return super().choose(prompts, tasks=tasks, contexts=contexts)

    def pairs_for(self, index: int, prompt: str, responses: Sequence[str], scores: Mapping[str, Any],
                  max_pairs: int) -> PairResult:
        """Candidates by the mean standardized score; disagreements (no strict majority) dropped."""
        m = self.score_matrix(index, len(responses), scores)
        mean_z = np.mean([standardize(row) for row in m], axis=0)
        cand = make_pairs(prompt, responses, mean_z, max_pairs)
        kept, dropped = [], 0
        for pair in cand.pairs:
            c = _response_index(responses, mean_z, pair["chosen"], pair.get("chosen_score"))
            r = _response_index(responses, mean_z, pair["rejected"], pair.get("rejected_score"))
            votes = int(np.sum(m[:, c] > m[:, r]))
            if 2 * votes > len(self.rm_names):
                kept.append(pair)
            else:
                dropped += 1
        self._dropped[int(index)] = dropped
        self.dropped_disagreements += dropped
        return dataclasses.replace(cand, pairs=kept)

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """No learning; the log adds ``dropped_disagreements`` for the group's prompts."""
        log = super().feedback(label, prompt_indices, result, inputs)
        log["dropped_disagreements"] = sum(self._dropped.get(int(i), 0) for i in prompt_indices)
        return log

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "dropped_disagreements": self.dropped_disagreements}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.dropped_disagreements = int(state["dropped_disagreements"])


def _response_index(responses: Sequence[str], scores: FloatArray, text: str, score: float | None) -> int:
    """Index of the response ``text`` (the copy whose score is ``score`` when the text repeats)."""
    hits = [i for i, r in enumerate(responses) if r == text]
    if not hits:
        raise ValueError(f"pair text {text[:60]!r} is not among the responses")
    if score is None or len(hits) == 1:
        return hits[0]
    return min(hits, key=lambda i: abs(float(scores[i]) - float(score)))
