"""The LASeR loop: iterative DPO where a selector (a bandit or a baseline) picks the reward model per batch.

This module is the recipe only. :func:`~laser_app.run_setup.prepare` resolves everything a run needs from a
:class:`~laser_app.config.RunConfig` (every input error surfaces there, before a run folder exists); the loop
that :func:`run_laser` and :func:`resume_laser` share (``_train``) reads top to bottom: for each iteration and
batch, 1. sample responses (whose prefill pass yields the contexts), 2. choose RM(s), 3. score and form pairs,
4. one DPO step per group and bandit feedback, 5. log, 6. every ``checkpoint_every`` steps a checkpoint; at
the end of each iteration the reference moves to the current policy, the policy is evaluated per domain and a
checkpoint written. From the last checkpoint, :func:`resume_laser` continues a stopped run exactly. Under
``accelerate launch`` each process takes its share of every batch (:mod:`laser_app.data_parallel`) and process
0 alone writes the run folder. The parts live in modules named for what they hold: :mod:`laser_app.policy`,
:mod:`laser_app.rms`, :mod:`laser_app.selection`, :mod:`laser_app.batching`, :mod:`laser_app.evaluation`,
:mod:`laser_app.events`, :mod:`laser_app.progress`, :mod:`laser_app.prompts`, :mod:`laser_app.checkpoint`.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from laser_adapters.bandit_rewards import StepInputs, get_bandit_reward
from laser_adapters.dpo import DPOLoss, DPOStep
from laser_adapters.generation import cut_at_stop
from laser_adapters.pairs import write_pairs_jsonl
from laser_app import data_parallel as dp
from laser_app import distributed
from laser_app.batching import derive_seed, make_batches
from laser_app.checkpoint import (
    LoopState,
    Parts,
    find_checkpoint,
    load_checkpoint,
    plan_digest,
    remove_checkpoint,
    require_training_checkpoint,
    save_checkpoint,
)
from laser_app.config import RunConfig, resolve_mab_reward
from laser_app.data import ExampleLike, by_task, task_of
from laser_app.dev_labels import PROBE_STREAM
from laser_app.evaluation import accuracy_of, correctness, evaluate_examples
from laser_app.events import STEP_PARTS, step_event, step_numbers
from laser_app.plots import draw_all
from laser_app.policy import generation_backend, save_policy, torch_threads
from laser_app.progress import stderr_console, step_bar
from laser_app.report import summarize_run
from laser_app.rms import diagnostics
from laser_app.run_dir import PAIRS, RunDir, default_out, mark_resumable
from laser_app.run_setup import Setup, prepare
from laser_app.selection import TimedEncoder, choose_rms, selector_for
from laser_app.trackers import check_report_to, iteration_values, make_tracker, step_values

if TYPE_CHECKING:
    from rich.console import Console

    from laser_adapters.generation_backends import GenerationBackend


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run_laser` returns: the run folder and the summary written to its ``metrics.json``."""

    run_dir: Path
    metrics: dict[str, Any]

    def accuracy(self, split: str = "test", iteration: int = -1) -> dict[str, float]:
        """Accuracy per domain (and ``mean``) on ``split`` after ``iteration`` (0 = before training)."""
        return dict(self.metrics["accuracy"][split][iteration])


# =============================================================================== the loop
def run_laser(config: RunConfig, *, progress: bool = True, console: Console | None = None) -> RunSummary:
    """Train the policy by iterative DPO with RM selection as ``config`` says; write a run folder.

    Raises :class:`~laser_app.errors.LaserError` for bad input before any run folder is created. A run
    that fails later leaves its folder marked ``failed`` (never ``complete``); one stopped after its first
    checkpoint continues with :func:`resume_laser`.
    """
    t_start = time.perf_counter()
    console = console or stderr_console()
    check_report_to(config.report_to)  # a missing tracker package fails before any model loads
    dp.check_launch(config)  # under accelerate launch: a prompt for every process, no --diagnostics
    out = dp.checked_folder(config.out or default_out(config.policy), overwrite=config.overwrite)
    main = distributed.is_main()
    job = _assemble(config, prepare(config, progress=progress and main, console=console if main else None))
    run = RunDir.create(out, overwrite=config.overwrite) if main else RunDir(out)  # process 0 writes the folder
    return _train(job, run, LoopState(), t_start=t_start, progress=progress, console=console)


def resume_laser(path: str | Path, *, progress: bool = True, console: Console | None = None) -> RunSummary:
    """Continue the run in folder ``path`` from its last complete checkpoint, with the configuration saved
    there; the finished folder is what an uninterrupted run writes (timings aside).

    Raises :class:`~laser_app.errors.RunDirError` when ``path`` is not a run folder, holds a complete run or
    one still running, or has no checkpoint.
    """
    t_start = time.perf_counter()
    console = console or stderr_console()
    main = distributed.is_main()  # under accelerate launch every process loads the checkpoint
    run = RunDir.open_to_resume(path) if main else RunDir(path)
    require_training_checkpoint(run.path)
    given = RunConfig.model_validate(run.config())
    check_report_to(given.report_to)
    dp.check_launch(given)
    if main:
        run.mark_resumed()  # from now on another resume or --overwrite sees this process running
    try:
        job = _assemble(given, prepare(given, progress=progress and main, console=console if main else None))
        state = load_checkpoint(run.path, job.parts, plan=plan_digest(job.plan))
        if main:
            run.truncate_events(state.step)  # the steps after the checkpoint run again
    except BaseException as err:
        _stopped(run, err)
        raise
    state.timings["setup"] += time.perf_counter() - t_start
    return _train(job, run, state, t_start=t_start - state.elapsed, progress=progress, console=console)


@dataclass
class _Job:
    """A run's resolved pieces: the configuration as given and with its reward resolved, the set-up, the
    objects a checkpoint holds, the context encoder, the batch plan and the generation backend."""

    given: RunConfig
    config: RunConfig
    setup: Setup
    parts: Parts
    encoder: TimedEncoder | None
    reuse_states: bool
    plan: list[list[list[ExampleLike]]]
    backend: GenerationBackend


def _assemble(given: RunConfig, setup: Setup) -> _Job:
    config = resolve_mab_reward(given)  # config.json keeps "auto"; the resolved value goes to resolved.json
    setup.resolved["mab_reward"] = config.mab_reward
    model, tokenizer = setup.model, setup.tokenizer
    selector, encoder, reuse_states = selector_for(config, model=model, tokenizer=tokenizer,
                                                 rm_names=setup.rm_names, rm_for_task=setup.rm_for_task,
                                                 dev=setup.dev)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    dpo = DPOStep(model, tokenizer, optimizer,
                  DPOLoss(beta=config.beta, nll_weight=config.nll_weight,
                          label_smoothing=config.label_smoothing, dpo_weight=config.dpo_weight),
                  reference="adapter" if config.lora else "copy", max_length=config.max_length,
                  append_eos=not setup.fmt.templated,  # a templated reply ends with the template's end of turn
                  grad_accum=config.grad_accum)
    batch_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    plan = [make_batches(setup.train, config.batch_size, homogeneous=config.batching == "homogeneous",
                         rng=batch_rng, limit=setup.resolved["batches_per_iteration"])
            for _ in range(config.iterations)]
    dp.check_plan(plan)
    backend = generation_backend(config, model, tokenizer, setup.resolved["model"])
    return _Job(given, config, setup, Parts(model, optimizer, dpo, selector), encoder,
                reuse_states and backend.captures_prefill, plan, backend)


def _train(job: _Job, run: RunDir, state: LoopState, *, t_start: float, progress: bool,
           console: Console) -> RunSummary:
    """The loop from ``state`` on (a new run: from its first evaluation), then the run's products."""
    config, setup, plan = job.config, job.setup, job.plan
    model, tokenizer, selector, dpo = setup.model, setup.tokenizer, job.parts.selector, job.parts.dpo
    encoder, reuse_states, main = job.encoder, job.reuse_states, distributed.is_main()
    fmt, stop = setup.fmt, setup.fmt.stop(setup.stop)
    evaluate = functools.partial(evaluate_examples, model, tokenizer, setup.evaluation, greedy=dp.greedy,
                                 check=setup.check, max_new_tokens=setup.max_new_tokens, stop=stop,
                                 batch_size=config.eval_batch_size, prompt_of=fmt.policy_prompt)
    digest = plan_digest(plan)

    def checkpoint(iteration: int, batch: int) -> None:  # the next batch to run
        state.iteration, state.batch, state.elapsed = iteration, batch, time.perf_counter() - t_start
        if main:
            save_checkpoint(run.path, job.parts, state, plan=digest)

    try:
        start_m, start_b, n_steps = state.iteration, state.batch, sum(len(batches) for batches in plan)
        dp.prepare(dpo)  # under accelerate launch: data-parallel DPO steps
        setup.registry.take_moves()  # the RMs loaded during set-up are no step's
        with torch_threads(setup.threads), step_bar(console, n_steps - state.step, enabled=progress and main) as bar, \
                make_tracker(config.report_to if main else "none", run.path, run_name=run.path.name,
                             config=job.given.model_dump(mode="json"), rm_names=setup.rm_names) as tracker:
            if not state.per_example:  # a new run: its configuration, then the policy before training
                if main:
                    run.write_config(job.given.model_dump(mode="json"), setup.resolved)
                state.timings = {"setup": time.perf_counter() - t_start, "eval": 0.0}
                bar.describe("evaluating (before training)")
                t0 = time.perf_counter()
                state.per_example = [evaluate()]
                tracker.log_iteration(0, iteration_values(accuracy_of(state.per_example[0])))
                state.timings["eval"] += time.perf_counter() - t0
                checkpoint(0, 0)
            for m in range(start_m, config.iterations):
                first = start_b if m == start_m else 0
                if first == 0:
                    selector.new_iteration(m)
                for b in range(first, len(plan[m])):
                    batch = plan[m][b]
                    prompts = [ex.prompt for ex in batch]  # what the RMs read
                    asked = [fmt.policy_prompt(ex) for ex in batch]  # what the policy is asked with
                    tasks = [task_of(ex) for ex in batch]
                    secs = dict.fromkeys(STEP_PARTS, 0.0)
                    bar.describe(f"iteration {m + 1}/{config.iterations}")

                    # 1. sample n responses per prompt (sampling does not depend on the RM, so it comes
                    #    first and its prefill pass also yields the policy-state contexts)
                    t0 = time.perf_counter()
                    samples, capture = dp.sample(job.backend, model, asked, config=config, seed=(config.seed, m, b),
                                                 max_new_tokens=setup.max_new_tokens, stop=stop,
                                                 capture=reuse_states)
                    # RMs and checkers read the answers; the DPO step trains on the samples as generated,
                    # stop string (or the chat template's end of turn) included, so the policy keeps
                    # learning where its answers end
                    responses = [[cut_at_stop(r, stop) for r in rs] for rs in samples]
                    trained = fmt.trained_batch(batch, samples)
                    secs["generate"] += time.perf_counter() - t0

                    # 2. choose the RM(s): the context (read from generation or encoded), then the bandit
                    choices = dp.choices_agreed(choose_rms(selector, asked, tasks, encoder, capture, secs))

                    # 3. score with the needed RMs, then form pairs per prompt
                    t0 = time.perf_counter()
                    scores = dp.score(setup.registry, prompts, responses, choices, label=f"iteration {m}, batch {b}")
                    results = [selector.pairs_for(i, asked[i], trained[i], scores[i],
                                                  config.pairs_per_prompt) for i in range(len(prompts))]
                    correct = correctness(batch, responses, setup.check)
                    secs["score"] += time.perf_counter() - t0
                    t0 = time.perf_counter()  # the dev-gold reward's probes: part of the bandit's feedback
                    probe = setup.probe(tasks, choices, seed=derive_seed(config.seed, PROBE_STREAM + m, b)) \
                        if setup.probe is not None else None
                    secs["select"] += time.perf_counter() - t0

                    # optional: what every RM's pairs would cost at the current policy (before the step)
                    counterfactual = None
                    if config.diagnostics:
                        t0 = time.perf_counter()
                        counterfactual = diagnostics(setup.registry, setup.rm_names, prompts, responses,
                                                     scores, dpo.evaluate, config.pairs_per_prompt,
                                                     label=f"{m}/{b}", samples=trained, asked=asked,
                                                     correct=correct,
                                                     reward=get_bandit_reward(config.mab_reward))
                        secs["diagnostics"] += time.perf_counter() - t0

                    # 4. one DPO step per group (one group per batch under batch granularity), then feedback
                    group_logs = []
                    for label, idx in selector.groups(choices):
                        pairs = [p for i in idx for p in results[i].pairs]
                        group = {"label": label, "rms": list(choices[idx[0]]), "prompts": len(idx),
                                 "pairs": len(pairs)}
                        if not pairs:  # every response tied or identical: nothing to learn, no bandit update
                            group["skipped"] = True
                            group_logs.append(group)
                            continue
                        t0 = time.perf_counter()
                        result = dp.train_step(dpo, pairs)
                        job.backend.policy_updated()  # a vLLM engine loads the new weights before its next sample
                        secs["train"] += time.perf_counter() - t0
                        # the bandit's reward reads what it declares (selector.needs), computed only then
                        t0 = time.perf_counter()
                        needs = selector.needs
                        inputs = StepInputs(
                            pair_prompt=[i for i in idx for _ in results[i].pairs],
                            scores={i: dict(scores[i]) for i in idx} if "scores" in needs else None,
                            correct=correct if "correct" in needs else None,
                            responses=setup.answers_of(batch, responses) if "responses" in needs else None,
                            loss_after=dp.evaluate_pairs(dpo, pairs) if "loss_after" in needs else None,
                            dev_probe=probe)
                        feedback = selector.feedback(label, idx, result, inputs)
                        secs["select"] += time.perf_counter() - t0
                        group.update(step_numbers(result), skipped=False, feedback=feedback)
                        group_logs.append(group)
                        state.pairs += [{**p, "iteration": m, "rm": label} for i in idx
                                        for p in fmt.exported(batch[i], results[i].pairs, trained[i], samples[i])]

                    # 5. log the step ("select" is the bandit's decision and update, "encode" its contexts)
                    event = step_event(m, b, state.step, batch, choices, results, group_logs, secs, correct,
                                       counterfactual, setup.registry.take_moves())
                    if main:
                        run.append_event(event)
                    tracker.log_step(state.step, step_values(event))
                    bar.advance(rm=event["rm"], loss=event["loss"])
                    state.step += 1
                    if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                        checkpoint(m, b + 1)  # 6. every checkpoint_every steps, a checkpoint

                # end of iteration: iterative DPO moves the reference to the current policy
                if m + 1 < config.iterations:
                    dpo.sync_reference()
                if main:
                    run.save_bandit(selector.state_dict())
                bar.describe(f"evaluating (after iteration {m + 1})")
                t0 = time.perf_counter()
                state.per_example.append(evaluate())
                tracker.log_iteration(m + 1, iteration_values(accuracy_of(state.per_example[-1])))
                state.timings["eval"] += time.perf_counter() - t0
                checkpoint(m + 1, 0)

        metrics = distributed.broadcast(_finish(job, run, state, t_start=t_start, console=console) if main else {})
    except BaseException as err:
        _stopped(run, err)
        raise
    finally:
        dp.close(dpo)  # a launched process that exits still holding the process group can abort or hang
    return RunSummary(run_dir=run.path, metrics=metrics)


def _finish(job: _Job, run: RunDir, state: LoopState, *, t_start: float, console: Console) -> dict[str, Any]:
    """Write the run's products, then the summary, then "complete" last (process 0 alone); the summary."""
    config, setup = job.config, job.setup
    save_policy(setup.model, setup.tokenizer, run.file("adapter" if config.lora else "policy"))
    write_pairs_jsonl(state.pairs, run.file(PAIRS))
    timings = {**state.timings, "total": time.perf_counter() - t_start}
    per_example = state.per_example
    metrics = summarize_run(run.events(), accuracy=[accuracy_of(e) for e in per_example],
                            tasks=sorted(by_task(setup.train)), rm_names=setup.rm_names,
                            rm_for_task=setup.rm_for_task, policy=config.policy, timings=timings)
    metrics["per_example"] = {"before": per_example[0], "final": per_example[-1]}
    metrics["labels"] = setup.resolved["labels"]
    run.write_metrics(metrics)
    try:
        draw_all(run.path)
    except Exception as err:  # a plot must never fail a finished run
        warnings.warn(f"could not draw plots for {run.path}: {err}", RuntimeWarning, stacklevel=2)
    if metrics["skipped_steps"]:
        skipped, steps = metrics["skipped_steps"], metrics["steps"]
        console.print(f"[yellow]warning:[/] {skipped} of {steps} steps formed "
                      "no preference pair (all responses tied or identical); they were skipped and the "
                      "bandit was not updated")
    run.mark_complete()
    remove_checkpoint(run.path)
    return metrics


def _stopped(run: RunDir, err: BaseException) -> None:
    """Mark the run interrupted (Ctrl-C, termination signals) or failed (anything else); an interrupt of a run
    with a checkpoint carries the folder, so the command can say how to resume it (process 0 marks the folder)."""
    if distributed.is_main():
        run.mark_stopped(err)
    if isinstance(err, KeyboardInterrupt) and find_checkpoint(run.path) is not None:
        mark_resumable(err, run.path)
