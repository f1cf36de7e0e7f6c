"""The loop's steps under ``accelerate launch``: each process samples, scores, trains and evaluates its share of
a batch, and the results are gathered, so that every process holds the whole batch's samples, scores, pairs
and step numbers and updates an identical bandit; the RM choice is process 0's, checked on every process.
In a single process every function here is the step as it always ran. The collective operations themselves
are :mod:`laser_app.distributed`'s.

>>> check_launch(RunConfig()), choices_agreed([("rm-a",)])
(None, [('rm-a',)])
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from laser_adapters.dpo import DPOStep, Share, StepResult
from laser_adapters.encoders import PrefillCapture
from laser_adapters.generation import greedy_answers
from laser_app import distributed
from laser_app.batching import derive_seed
from laser_app.config import RunConfig
from laser_app.data import ExampleLike
from laser_app.errors import LaserError
from laser_app.rms import score_responses
from laser_app.run_dir import RunDir

if TYPE_CHECKING:
    from laser_adapters.generation_backends import GenerationBackend
    from laser_adapters.reward_models.registry import RMRegistry


def check_launch(config: RunConfig) -> None:
    """Under a launch: refuse, in one line and before any model loads, a batch that leaves a process without
    prompts, ``--diagnostics`` (its counterfactual losses are not sharded) and ``--grad-accum`` under DeepSpeed;
    join the process group."""
    if not distributed.enabled():
        return
    distributed.check_shardable(config.batch_size)
    if config.diagnostics:
        raise LaserError("--diagnostics does not run under accelerate launch (every RM's counterfactual loss is "
                         "computed on the whole batch in one process); drop --diagnostics or run in one process")
    if config.grad_accum > 1 and distributed.accelerator().distributed_type == "DEEPSPEED":
        raise LaserError(f"--grad-accum {config.grad_accum} under DeepSpeed: its engine takes an optimizer step in "
                         "every backward pass; use --grad-accum 1 (or DDP)")
    distributed.accelerator()


def checked_folder(path: Path, *, overwrite: bool) -> Path:
    """The run folder ``path`` as process 0 names it (a default name holds the time), once every process has
    checked that it can be created (:meth:`~laser_app.run_dir.RunDir.check_creatable`): process 0 creates it
    only after that, so no process mistakes it for another live run's folder."""
    out = Path(distributed.broadcast(str(path)))
    RunDir.check_creatable(out, overwrite=overwrite)
    distributed.wait()
    return out


def check_plan(plan: Sequence[Sequence[Sequence[ExampleLike]]]) -> None:
    """Refuse a batch plan whose smallest batch (a task's last one under homogeneous batching) leaves a
    process without prompts."""
    if distributed.enabled():
        distributed.check_shardable(min((len(b) for batches in plan for b in batches), default=1))


def prepare(dpo: DPOStep) -> None:
    """Under a launch, train the DPO step data-parallel (accelerate wraps the policy and its optimizer)."""
    if distributed.enabled():
        dpo.prepare(distributed.accelerator())


def close(dpo: DPOStep) -> None:
    """Under a launch, at the end of a run (also a failed one): drop the data-parallel wrapper of the policy,
    then leave the process group (in that order: the wrapper's teardown needs the group)."""
    dpo.release()
    distributed.close()


def sample(backend: GenerationBackend, model: Any, asked: Sequence[str], *, config: RunConfig,
           seed: Sequence[int], max_new_tokens: int, stop: str | None,
           capture: bool) -> tuple[list[list[str]], Any]:
    """``config.n_responses`` responses to each prompt of ``asked`` (the stop string kept, as the DPO step trains
    on it) and, with ``capture``, the prefill capture their contexts are read from (else None); ``seed`` is
    what the one-process seed derives from. Under a launch every process gets the whole batch's samples and
    a capture of every prompt: with ``config.shard_generation`` each samples its share with a seed of its
    own, else each samples the whole batch with the one-process seed and keeps its share; then the shares
    are gathered."""
    launched = distributed.enabled()
    rows = distributed.shard(range(len(asked)))
    own = launched and config.shard_generation
    prompts = [asked[i] for i in rows] if own else list(asked)
    with PrefillCapture(model) if capture else nullcontext() as prefill:
        samples = backend.sample(prompts, n=config.n_responses, temperature=config.temperature,
                                 top_p=config.top_p, max_new_tokens=max_new_tokens, stop=stop, keep_stop=True,
                                 seed=derive_seed(*seed, distributed.rank()) if own else derive_seed(*seed))
    if not launched:
        return samples, prefill
    if not own:
        samples = [samples[i] for i in rows]
    mine = prefill if prefill is None or own else _RowsOf(prefill, rows, len(asked))
    return distributed.gather(samples), None if mine is None else distributed.GatheredCapture(mine, len(rows))


class _RowsOf:
    """This process's rows of a capture of the whole batch's ``n`` prompts."""

    def __init__(self, capture: Any, rows: Sequence[int], n: int) -> None:
        self.capture, self.rows, self.n = capture, list(rows), n

    def features(self, n_prompts: int) -> npt.NDArray[np.float64]:
        if n_prompts != len(self.rows):
            raise ValueError(f"this process holds {len(self.rows)} prompts' contexts, not {n_prompts}")
        return np.asarray(self.capture.features(self.n))[self.rows]


def choices_agreed(choices: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Process 0's RM choices, which every process must have made too (its bandit saw the same contexts and
    the same feedback); a difference means the bandits diverged, a bug that stops the run."""
    mine = [tuple(c) for c in choices]
    chosen = distributed.broadcast_choices(mine) if distributed.enabled() else mine
    if chosen != mine:
        raise RuntimeError(f"process {distributed.rank()} chose RMs {mine} where process 0 chose {chosen}: the "
                           "processes' bandit states differ")
    return chosen


def score(registry: RMRegistry, prompts: Sequence[str], responses: Sequence[Sequence[str]],
          choices: Sequence[tuple[str, ...]], *, label: str) -> list[dict[str, npt.NDArray[np.float64]]]:
    """:func:`~laser_app.rms.score_responses`, each process scoring its share of the prompts."""
    return distributed.map_sharded(functools.partial(score_responses, registry, label=label), prompts, responses,
                                   choices)


def train_step(dpo: DPOStep, pairs: Sequence[Mapping[str, Any]]) -> StepResult:
    """One DPO step on ``pairs``; under a launch each process trains on its share (accelerate averages the
    gradients, so every process takes the same step) and the numbers are gathered: every process holds the
    whole step's, as one process would."""
    if not distributed.enabled():
        return dpo.step(pairs)
    return distributed.gather_result(dpo.step(pairs, share=_share(len(pairs))))


def evaluate_pairs(dpo: DPOStep, pairs: Sequence[Mapping[str, Any]]) -> StepResult:
    """``dpo.evaluate(pairs)``, sharded and gathered as :func:`train_step`."""
    if not distributed.enabled():
        return dpo.evaluate(pairs)
    return distributed.gather_result(dpo.evaluate(pairs, share=_share(len(pairs))))


def _share(n_pairs: int) -> Share:
    rows, n_real = distributed.shard_padded(range(n_pairs))
    return Share(tuple(rows), n_real, distributed.world_size())


def greedy(model: Any, tokenizer: Any, prompts: Sequence[str], **kwargs: Any) -> list[str]:
    """:func:`~laser_adapters.generation.greedy_answers` for evaluation, each process answering its share."""
    return distributed.map_sharded(functools.partial(greedy_answers, model, tokenizer, **kwargs), prompts)
