"""What the dev-label methods read: each RM's top-1 accuracy per task on a few labelled dev prompts.

For the first ``per_task`` dev prompts of each task, the policy samples ``n`` responses (as in training),
every RM scores them, and an RM is right on a prompt when its top-ranked sample is right. ``dev-pick``
routes each task to the RM with the most right picks; ``prior-router`` starts its per-task Beta posteriors
from the counts (:func:`dev_counts`, once before training). The ``dev-gold`` bandit reward measures the same
top-1 correctness online, on a few of those prompts per step, answered by the current policy
(:class:`DevProbes`). The test split is never read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_adapters.bandit_rewards import get_bandit_reward
from laser_adapters.generation import cut_at_stop, sample_responses
from laser_adapters.methods import get_method
from laser_app.batching import derive_seed
from laser_app.config import RunConfig, resolve_mab_reward
from laser_app.data import ExampleLike, by_task, load_examples, task_of
from laser_app.errors import LaserError
from laser_app.evaluation import cap_per_task
from laser_app.rms import score_responses

if TYPE_CHECKING:
    from laser_adapters.reward_models.registry import RMRegistry

#: ``derive_seed`` stream of the dev samples (the training batches use iteration numbers from 0).
DEV_STREAM = 10_000
#: ``derive_seed`` streams of the dev probes start here (one per iteration).
PROBE_STREAM = 20_000
#: ``DevProbes.correctness`` with the model and sampling settings bound: ``(tasks, choices, seed=...)``.
ProbeFn = Callable[..., dict[int, float]]


@dataclass(frozen=True)
class DevCounts:
    """Per task, per RM: how many dev prompts its top-ranked sample got right and wrong."""

    counts: dict[str, dict[str, tuple[int, int]]]
    per_task: int

    def best(self, rm_names: Sequence[str]) -> dict[str, str]:
        """Per task, the RM with the most right picks (ties go to the earlier RM in ``rm_names``).

        >>> DevCounts({"math": {"a": (3, 5), "b": (6, 2)}}, per_task=8).best(["a", "b"])
        {'math': 'b'}
        """
        return {t: max(rm_names, key=lambda rm: (by.get(rm, (0, 0))[0], -list(rm_names).index(rm)))
                for t, by in self.counts.items()}

    def as_json(self) -> dict[str, Any]:
        """Plain data for ``resolved.json``."""
        return {"per_task": self.per_task, "right_wrong": {t: {rm: list(v) for rm, v in by.items()}
                                                           for t, by in self.counts.items()}}


def dev_counts(model: Any, tokenizer: Any, registry: RMRegistry, rm_names: Sequence[str],
               rows: Sequence[ExampleLike], *, per_task: int, n_responses: int, temperature: float,
               top_p: float, max_new_tokens: int, stop: str | None, check: Callable[[str, str, str], bool],
               seed: int, batch_size: int, ask: Callable[[ExampleLike], str] | None = None) -> DevCounts:
    """Count, per task and RM, the dev prompts on which the RM's top-ranked sample is right."""
    picked = labelled_dev_rows(rows, per_task)
    counts: dict[str, dict[str, list[int]]] = {}
    for start in range(0, len(picked), batch_size):
        batch = picked[start:start + batch_size]
        prompts = [ex.prompt for ex in batch]
        samples = sample_responses(model, tokenizer, [ask(ex) if ask else ex.prompt for ex in batch],
                                   n=n_responses, temperature=temperature, top_p=top_p,
                                   max_new_tokens=max_new_tokens, stop=stop, seed=derive_seed(seed, DEV_STREAM, start))
        responses = [[cut_at_stop(r, stop) for r in rs] for rs in samples]
        scores = score_responses(registry, prompts, responses, [tuple(rm_names)] * len(prompts),
                                 label=f"dev prompts {start}-{start + len(batch) - 1}")
        for ex, rs, by_rm in zip(batch, responses, scores, strict=True):
            right = [bool(check(task_of(ex), r, str(ex.answer))) for r in rs]
            slot = counts.setdefault(task_of(ex), {rm: [0, 0] for rm in rm_names})
            for rm in rm_names:
                slot[rm][0 if right[int(np.argmax(by_rm[rm]))] else 1] += 1
    return DevCounts({t: {rm: (v[0], v[1]) for rm, v in by.items()} for t, by in sorted(counts.items())},
                     per_task=per_task)


def labelled_dev_rows(rows: Sequence[ExampleLike], per_task: int) -> list[ExampleLike]:
    """The first ``per_task`` dev rows of each task: the labelled prompts a dev-label method may read; one
    clear error when a row has no answer or a task has too few rows."""
    picked = cap_per_task(rows, per_task)
    if any(ex.answer is None for ex in picked):
        raise LaserError("the dev-label methods need an answer on every dev row they read")
    short = {t: len(r) for t, r in by_task(picked).items() if len(r) < per_task}
    if short:
        raise LaserError(f"--dev-labels {per_task} asks for more dev prompts than some tasks have: {short}")
    return picked


@dataclass(frozen=True)
class DevProbes:
    """The labelled dev prompts the ``dev-gold`` reward probes: per step and chosen RM, ``per_step`` of them
    from the batch's task (any task's when the batch's task has none) are answered by the current policy and
    ranked by that RM; the reward is the share on which its top-ranked sample is right."""

    rows: dict[str, list[ExampleLike]]
    per_step: int

    @classmethod
    def build(cls, rows: Sequence[ExampleLike], *, per_task: int, per_step: int) -> DevProbes:
        """The probes over the first ``per_task`` labelled dev rows of each task."""
        return cls(by_task(labelled_dev_rows(rows, per_task)), per_step)

    def as_json(self) -> dict[str, Any]:
        """Plain data for ``resolved.json``."""
        return {"per_task": {t: len(r) for t, r in self.rows.items()}, "probes_per_step": self.per_step}

    def correctness(self, model: Any, tokenizer: Any, registry: RMRegistry, tasks: Sequence[str],
                    choices: Sequence[tuple[str, ...]], *, seed: int, n_responses: int, temperature: float,
                    top_p: float, max_new_tokens: int, stop: str | None,
                    check: Callable[[str, str, str], bool],
                    ask: Callable[[ExampleLike], str] | None = None) -> dict[int, float]:
        """Per batch position whose prompt was routed to one RM: that RM's top-1 correctness on dev probes
        of the prompt's task (prompts with the same task and RM share one probe draw)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (task, chosen) in enumerate(zip(tasks, choices, strict=True)):
            if len(chosen) == 1:
                groups.setdefault((task, chosen[0]), []).append(i)
        rng = np.random.default_rng(seed)
        everything = [ex for rows in self.rows.values() for ex in rows]
        out: dict[int, float] = {}
        for (task, rm), positions in groups.items():
            pool = self.rows.get(task) or everything
            probes = [pool[k] for k in rng.choice(len(pool), size=min(self.per_step, len(pool)), replace=False)]
            prompts = [ex.prompt for ex in probes]
            samples = sample_responses(model, tokenizer, [ask(ex) if ask else ex.prompt for ex in probes],
                                       n=n_responses, temperature=temperature, top_p=top_p,
                                       max_new_tokens=max_new_tokens, stop=stop, seed=int(rng.integers(2**31)))
            responses = [[cut_at_stop(r, stop) for r in rs] for rs in samples]
            scores = score_responses(registry, prompts, responses, [(rm,)] * len(prompts),
                                     label=f"dev probes for {rm}")
            right = [bool(check(task_of(ex), rs[int(np.argmax(by_rm[rm]))], str(ex.answer)))
                     for ex, rs, by_rm in zip(probes, responses, scores, strict=True)]
            out.update(dict.fromkeys(positions, float(np.mean(right))))
        return out


def dev_inputs(config: RunConfig, rows: Sequence[ExampleLike], *, model: Any, tokenizer: Any,
               registry: RMRegistry, rm_names: Sequence[str], max_new_tokens: int, stop: str | None,
               check: Callable[[str, str, str], bool], ask: Callable[[ExampleLike], str] | None = None,
               ) -> tuple[DevCounts | None, ProbeFn | None, dict[str, Any]]:
    """What a run whose label budget is dev-N reads from the labelled dev ``rows``: the counts (dev-pick,
    prior-router: once, before training), the probe function of the ``dev-gold`` reward (``probe(tasks,
    choices, seed=...)``, called each step) and what to add to ``resolved.json``."""
    dev: DevCounts | None = None
    probe: ProbeFn | None = None
    info: dict[str, Any] = {}
    sampling: dict[str, Any] = {"n_responses": config.n_responses, "temperature": config.temperature,
                                "top_p": config.top_p, "max_new_tokens": max_new_tokens, "stop": stop,
                                "check": check, "ask": ask}
    if get_method(config.policy).labels == "dev":
        dev = dev_counts(model, tokenizer, registry, rm_names, rows, per_task=config.dev_labels, seed=config.seed,
                         batch_size=config.batch_size, **sampling)
        info["dev_labels"] = dev.as_json()
    if get_bandit_reward(resolve_mab_reward(config).mab_reward).labels == "dev":
        probes = DevProbes.build(rows, per_task=config.dev_labels, per_step=config.dev_probes)
        probe = functools.partial(probes.correctness, model, tokenizer, registry, **sampling)
        info["dev_probes"] = probes.as_json()
    return dev, probe, info


def dev_rows(config: RunConfig, world: Any) -> list[ExampleLike]:
    """The labelled dev prompts a dev-label method or reward may read: ``--dev-data``, else the built-in world's
    dev split (never the test split)."""
    if config.dev_data is not None:
        return list(load_examples(config.dev_data, require_answers=True, what="dev data file",
                                  **config.data_options))
    if world is not None and config.data is None:
        return list(world.data["dev"])
    reader = (f"--policy {config.policy}" if get_method(config.policy).labels == "dev"
              else f"--mab-reward {config.mab_reward}")
    raise LaserError(f"{reader} reads labelled dev prompts: pass --dev-data FILE (JSONL with prompt, answer, "
                     "task)")
