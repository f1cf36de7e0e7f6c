"""Best-of-n answering without training: per prompt a selector picks the RM, the RM picks the answer.

:func:`run_bon` streams the evaluation prompts (shuffled from the seed, so the bandit meets every task
early): per batch, sample ``n_responses`` per prompt (the prefill pass also yields the policy-state
contexts) -> the selector routes each prompt to an RM (instance granularity) -> the RM scores the samples
-> its top sample is the answer -> accuracy (the task's checker) and token F1 against the reference ->
bandit feedback. The policy never changes, so the bandit's reward cannot be a training loss: it is the
negative NLL of the chosen answer under the policy (``mab_reward="nll"``, no labels needed) or whether the
chosen answer was right (``mab_reward="gold"``: the label arrives after the prompt was answered, as
online feedback, so the run reads every prompt's answer); ``auto`` (the default) is ``nll``, which reads
no labels.

After each batch's event the run folder's ``checkpoint/`` holds ``selector.state_dict()`` (its generators
included) and the number of batches done, swapped in whole as ``laser run``'s checkpoints are. Sampling seeds
derive from the run's seed and the batch, the prompt order from the seed alone, so :func:`resume_bon`
continues a stopped run from there and ends as the uninterrupted run does, timings aside.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_adapters.bandit_rewards import AnswerLosses, StepInputs
from laser_adapters.dpo import response_nll
from laser_adapters.encoders import PrefillCapture
from laser_adapters.generation import cut_at_stop, sample_responses
from laser_adapters.methods import get_method
from laser_app.batching import derive_seed
from laser_app.checkpoint import (
    CHECKPOINT,
    FORMAT,
    MANIFEST,
    TEMP_PREFIX,
    crc32_of,
    find_checkpoint,
    fsync_path,
    install_checkpoint,
    plan_digest,
    remove_checkpoint,
)
from laser_app.config import RunConfig
from laser_app.data import ExampleLike, task_of
from laser_app.errors import LaserError, RunDirError
from laser_app.evaluation import cap_per_task
from laser_app.events import BON_PARTS
from laser_app.longbench import MAX_NEW_TOKENS, LongExample, load_longbench, truncate_examples, truncated_counts
from laser_app.policy import torch_threads
from laser_app.progress import stderr_console, step_bar
from laser_app.qa_metrics import exact_match, exact_match_prediction, score_prediction, token_f1
from laser_app.report import summarize_bon
from laser_app.rms import score_responses
from laser_app.run_dir import RESOLVED, RunDir, default_out, load_state, mark_resumable, read_json, save_state
from laser_app.run_setup import Setup, prepare
from laser_app.selection import TimedEncoder, choose_rms, selector_for

if TYPE_CHECKING:
    from rich.console import Console

    from laser_adapters.selector import Selector

#: Bandit rewards ``laser bon`` accepts (the others need a training step).
BON_REWARDS = ("nll", "consistency", "gold")
#: ``resolved.json``'s ``mode`` (and a checkpoint's) for a best-of-n run.
BON_MODE = "best-of-n"
#: The files of a best-of-n checkpoint besides its manifest: the position and ``selector.state_dict()``.
BON_FILES = ("state.json", "selector.json", "selector.npz")


@dataclass(frozen=True)
class BonSummary:
    """What :func:`run_bon` returns: the run folder and the summary written to its ``metrics.json``."""

    run_dir: Path
    metrics: dict[str, Any]


def _check_reward(reward: str, *, allowed: Sequence[str]) -> None:
    if reward not in allowed:
        raise LaserError(f"--mab-reward {reward} needs a training step; laser bon takes "
                         f"{', '.join(BON_REWARDS[:-1])} or {BON_REWARDS[-1]}")


def bon_config(config: RunConfig, rows: Sequence[ExampleLike]) -> RunConfig:
    """``config`` as best-of-n needs it: one decision per prompt, and a reward that needs no training
    step (``auto``: ``nll``, which reads no labels)."""
    reward = config.mab_reward
    if reward == "auto":
        reward = "nll"
    _check_reward(reward, allowed=BON_REWARDS)
    granularity = "instance" if get_method(config.policy).learns or config.policy == "random" else "batch"
    return config.model_copy(update={"mab_reward": reward, "granularity": granularity})


@dataclass
class BonInputs:
    """What every best-of-n run over the same prompts shares: the resolved config (the suite's policy and RMs
    filled in), the loaded set-up, and the prompts in their original order."""

    config: RunConfig
    setup: Setup
    rows: list[ExampleLike]


def bon_inputs(config: RunConfig, *, progress: bool = True, console: Console | None = None,
               longbench: Path | None = None, datasets: Sequence[str] | None = None,
               suite: str | None = None, split: str = "test") -> BonInputs:
    """Resolve and load what :func:`answer_bon` needs; every input error surfaces here, before any run folder."""
    _check_reward(config.mab_reward, allowed=(*BON_REWARDS, "auto"))  # before anything loads
    check_sources(config, longbench=longbench, suite=suite, datasets=datasets, split=split)
    console = console or stderr_console()
    long_rows: list[LongExample] | None
    if suite is not None:
        config, long_rows = suite_inputs(config, datasets=datasets, progress=progress, split=split)
    else:
        long_rows = None if longbench is None else load_longbench(longbench, datasets=datasets)
    if long_rows is not None and config.eval_size is not None:
        long_rows = [ex for ex in cap_per_task(long_rows, config.eval_size) if isinstance(ex, LongExample)]
    setup = prepare(config.model_copy(update={"mab_reward": "nll"}), progress=progress, console=console,
                    rows=long_rows, training=False)
    rows: list[ExampleLike] = (list(fit_window(setup, long_rows, config)) if long_rows is not None
                               else list(setup.train if config.data is not None else setup.evaluation["test"]))
    if config.mab_reward == "gold" and any(ex.answer is None for ex in rows):
        raise LaserError("--mab-reward gold needs an \"answer\" on every row; add answers or use nll")
    # what laser bon --resume rebuilds the prompts from (the rest is in the config)
    setup.resolved["source"] = {"suite": suite, "longbench": None if longbench is None else str(longbench),
                                "datasets": None if datasets is None else list(datasets), "split": split}
    return BonInputs(config=config, setup=setup, rows=rows)


def run_bon(config: RunConfig, *, progress: bool = True, console: Console | None = None,
            longbench: Path | None = None, datasets: Sequence[str] | None = None,
            suite: str | None = None, split: str = "test") -> BonSummary:
    """Answer the evaluation prompts best-of-n with the RM the selector picks; write a run folder.

    The prompts are the built-in test split, ``--data`` (whose rows need an ``answer`` for accuracy), a
    LongBench JSONL file (``longbench``, optionally only ``datasets``): prompts built per dataset, cut in the
    middle to fit the policy's window, scored by LongBench's metrics (F1 and EM per dataset), or the built-in
    long-document suite (``suite="longbench"``: its test split, policy and specialist RMs, unless ``--model`` or
    ``--rm-registry`` name others).
    """
    t_start = time.perf_counter()
    RunDir.check_creatable(config.out or default_out(f"bon-{config.policy}"), overwrite=config.overwrite)
    console = console or stderr_console()
    inputs = bon_inputs(config, progress=progress, console=console, longbench=longbench, datasets=datasets,
                        suite=suite, split=split)
    return answer_bon(inputs, inputs.config, progress=progress, console=console, started=t_start, resumable=True)


def answer_bon(inputs: BonInputs, config: RunConfig, *, progress: bool = True, console: Console | None = None,
               started: float | None = None, resumable: bool = False) -> BonSummary:
    """One best-of-n run over ``inputs``' prompts with ``config``'s method, seed and run folder; with
    ``resumable``, an interrupt carries the folder so the command can say how to resume it."""
    t_start = time.perf_counter() if started is None else started
    console = console or stderr_console()
    job = _bon_job(inputs, config)
    run = RunDir.create(job.config.out or default_out(f"bon-{job.config.policy}"), overwrite=job.config.overwrite)
    return _answer(job, run, first=0, new=True, t_start=t_start, progress=progress, console=console,
                   resumable=resumable)


def resume_bon(path: str | Path, *, progress: bool = True, console: Console | None = None) -> BonSummary:
    """Continue the best-of-n run in folder ``path`` after its last checkpointed batch, with the settings and
    prompts saved there; the finished folder is what an uninterrupted run writes (timings aside).

    Raises :class:`~laser_app.errors.RunDirError` when ``path`` is not a run folder, holds a ``laser run``
    run, a complete run or one still running, has no checkpoint, or its prompts changed since.
    """
    t_start = time.perf_counter()
    console = console or stderr_console()
    run = RunDir.open_to_resume(path)
    resolved = run.resolved()
    mode = resolved.get("mode")
    if resolved and mode is None:
        raise RunDirError(f"run folder {run.path} holds a training run, not a best-of-n one; resume it with "
                          f"laser run --resume {run.path}")
    if resolved and mode != BON_MODE:
        raise RunDirError(f"run folder {run.path} is not a best-of-n run (its mode is {mode!r}); laser bon "
                          "--resume continues laser bon runs")
    if find_checkpoint(run.path) is None:
        raise RunDirError(f"run folder {run.path} has no checkpoint (it stopped before writing one); rerun it "
                          "with --overwrite")
    source = resolved.get("source")
    if not isinstance(source, dict) or not {"suite", "longbench", "datasets", "split"} <= set(source):
        raise RunDirError(f"{run.path / RESOLVED} does not say which prompts the run answered (it started before "
                          "laser bon could resume); rerun it with --overwrite")
    given = RunConfig.model_validate(run.config())
    run.mark_resumed()  # from now on another resume or --overwrite sees this process running
    try:
        inputs = bon_inputs(given, progress=progress, console=console, suite=source["suite"],
                            longbench=None if source["longbench"] is None else Path(source["longbench"]),
                            datasets=source["datasets"], split=source["split"])
        job = _bon_job(inputs, given)
        first, elapsed = load_progress(run.path, job.selector, plan=job.plan)
        run.truncate_events(first, key="batch", unit="batches")  # the batches after the checkpoint run again
    except BaseException as err:
        _stopped(run, err, resumable=True)
        raise
    return _answer(job, run, first=first, new=False, t_start=t_start - elapsed, progress=progress,
                   console=console, resumable=True)


@dataclass
class _BonJob:
    """A run's resolved pieces: the configuration as given and as run, the set-up, the batches in answer order
    and their digest, the selector and its context encoder."""

    given: RunConfig
    config: RunConfig
    setup: Setup
    batches: list[list[ExampleLike]]
    plan: str
    selector: Selector
    encoder: TimedEncoder | None
    reuse_states: bool


def _bon_job(inputs: BonInputs, given: RunConfig) -> _BonJob:
    setup, config = inputs.setup, bon_config(given, inputs.rows)
    order = np.random.default_rng(np.random.SeedSequence([config.seed, 3])).permutation(len(inputs.rows))
    rows = [inputs.rows[i] for i in order]
    batches = [rows[i:i + config.batch_size] for i in range(0, len(rows), config.batch_size)]
    selector, encoder, reuse_states = selector_for(config, model=setup.model, tokenizer=setup.tokenizer,
                                                 rm_names=setup.rm_names, rm_for_task=setup.rm_for_task,
                                                 dev=setup.dev)
    return _BonJob(given, config, setup, batches, plan_digest([batches]), selector, encoder, reuse_states)


def _answer(job: _BonJob, run: RunDir, *, first: int, new: bool, t_start: float, progress: bool,
            console: Console, resumable: bool) -> BonSummary:
    """The batches from ``first`` on (a ``new`` run: its configuration first), each followed by its event and
    a checkpoint; then the bandit state, the summary and "complete" last."""
    config, setup, selector, batches = job.config, job.setup, job.selector, job.batches

    def checkpoint(done: int) -> None:
        save_progress(run.path, selector, batch=done, plan=job.plan, elapsed=time.perf_counter() - t_start)

    try:
        if new:
            run.write_config(job.given.model_dump(mode="json"), {
                **setup.resolved, "mode": BON_MODE, "prompts": sum(map(len, batches)),
                "mab_reward": config.mab_reward, "granularity": config.granularity})
            checkpoint(0)
        with torch_threads(setup.threads), step_bar(console, len(batches) - first, enabled=progress) as bar:
            bar.describe("best-of-n")
            for b in range(first, len(batches)):
                event = _bon_batch(b, batches[b], config, setup, selector, job.encoder, job.reuse_states)
                run.append_event(event)
                checkpoint(b + 1)
                bar.advance(rm=event["rm"], loss=event.get("mean_nll"))
        run.save_bandit(selector.state_dict())
        metrics = summarize_bon(run.events(), rm_names=setup.rm_names, rm_for_task=setup.rm_for_task,
                                policy=config.policy, n_responses=config.n_responses,
                                seconds=time.perf_counter() - t_start)
        run.write_metrics(metrics)
        run.mark_complete()
        remove_checkpoint(run.path)
    except BaseException as err:  # Ctrl-C and termination signals mark it interrupted, anything else failed
        _stopped(run, err, resumable=resumable)
        raise
    return BonSummary(run_dir=run.path, metrics=metrics)


def _stopped(run: RunDir, err: BaseException, *, resumable: bool) -> None:
    run.mark_stopped(err)
    if resumable and isinstance(err, KeyboardInterrupt) and find_checkpoint(run.path) is not None:
        mark_resumable(err, run.path)


# ------------------------------------------------------------------------------- checkpoints
def save_progress(run: Path, selector: Selector, *, batch: int, plan: str, elapsed: float) -> None:
    """Checkpoint a best-of-n run in folder ``run`` once ``batch`` batches are done: ``selector.state_dict()``
    and the position, written into a temporary folder and swapped in whole (see :mod:`laser_app.checkpoint`)."""
    for leftover in run.glob(f"{TEMP_PREFIX}*"):  # a write that a crash cut short
        shutil.rmtree(leftover, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=run))
    try:
        save_state(selector.state_dict(), folder / "selector")
        doc = {"format": FORMAT, "mode": BON_MODE, "batch": batch, "plan": plan, "elapsed": elapsed}
        (folder / "state.json").write_text(json.dumps(doc), encoding="utf-8")
        files = [folder / name for name in BON_FILES]
        manifest = {"format": FORMAT, "files": {p.name: p.stat().st_size for p in files},
                    "crc32": {p.name: crc32_of(p) for p in files}}
        (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        for path in (*files, folder / MANIFEST, folder):
            fsync_path(path)
        install_checkpoint(folder, run / CHECKPOINT)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


#: What restoring a checkpoint that does not fit the run raises (other RMs, policy or kinds of values).
_UNFIT = (ValueError, KeyError, TypeError, AttributeError, IndexError, ArithmeticError)


def load_progress(run: Path, selector: Selector, *, plan: str) -> tuple[int, float]:
    """Restore ``selector`` from the last complete checkpoint of best-of-n run folder ``run``; the batches
    done and the seconds the run had been going. A checkpoint that is missing, damaged or made for other
    prompts (``plan``, :func:`~laser_app.checkpoint.plan_digest` of the batches) is a :class:`RunDirError`."""
    folder = find_checkpoint(run)
    if folder is None:
        raise RunDirError(f"run folder {run} has no checkpoint (it stopped before writing one); rerun it with "
                          "--overwrite")
    try:
        _check_files(folder)
        doc = read_json(folder / "state.json")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("mode") != BON_MODE:
            raise ValueError("state.json is not a best-of-n checkpoint's")
        if doc["plan"] != plan:
            raise RunDirError(f"the prompts differ from when the run in {run} started (its data files or the suite "
                              "changed?); restore them or rerun it with --overwrite")
        selector.load_state_dict(load_state(folder / "selector"))
        return int(doc["batch"]), float(doc["elapsed"])
    except _UNFIT as err:
        detail = " ".join(str(err).split())[:300]
        raise RunDirError(f"checkpoint {folder} cannot be restored ({detail}); rerun the run with "
                          "--overwrite") from err


def _check_files(folder: Path) -> None:
    """Raise ``ValueError`` unless the manifest lists the checkpoint's files with their sizes and CRC-32s."""
    manifest = read_json(folder / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    crcs = manifest.get("crc32") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not isinstance(crcs, dict) or set(files) != set(BON_FILES) or \
            set(crcs) != set(files):
        raise ValueError(f"{MANIFEST} is not a best-of-n checkpoint's")
    for name in BON_FILES:
        path = folder / name
        if not path.is_file() or path.stat().st_size != files[name] or crc32_of(path) != crcs[name]:
            raise ValueError(f"{name} is missing or has other contents than when it was written")


def _bon_batch(b: int, batch: Sequence[ExampleLike], config: RunConfig, setup: Setup, selector: Selector,
               encoder: TimedEncoder | None, reuse_states: bool) -> dict[str, Any]:
    """One batch of best-of-n: sample, route, score, pick, check, give feedback; returns its event."""
    prompts = [ex.prompt for ex in batch]  # what the RMs read
    asked = [setup.fmt.policy_prompt(ex) for ex in batch]  # what the policy is asked with
    stop = setup.fmt.stop(setup.stop)
    tasks = [task_of(ex) for ex in batch]
    secs = dict.fromkeys(BON_PARTS, 0.0)
    t0 = time.perf_counter()
    with PrefillCapture(setup.model) if reuse_states else nullcontext() as capture:
        samples = sample_responses(setup.model, setup.tokenizer, asked, n=config.n_responses,
                                   temperature=config.temperature, top_p=config.top_p,
                                   max_new_tokens=setup.max_new_tokens, stop=stop,
                                   seed=derive_seed(config.seed, 0, b))
    responses = [[cut_at_stop(r, stop) for r in rs] for rs in samples]
    secs["generate"] = time.perf_counter() - t0
    choices = choose_rms(selector, asked, tasks, encoder, capture, secs)

    t0 = time.perf_counter()
    scores = score_responses(setup.registry, prompts, responses, choices, label=f"best-of-n batch {b}")
    best = []
    for i in range(len(prompts)):  # the top-vs-bottom pair's chosen response is the RM's best sample
        pairs = selector.pairs_for(i, prompts[i], responses[i], scores[i], 1).pairs
        best.append(pairs[0]["chosen"] if pairs else responses[i][0])
    secs["score"] = time.perf_counter() - t0

    answers = [None if ex.answer is None else str(ex.answer) for ex in batch]
    correct = [None if a is None else bool(setup.check(t, r, a)) for t, r, a in zip(tasks, best, answers,
                                                                                    strict=True)]
    f1, em = zip(*[answer_scores(ex, r) for ex, r in zip(batch, best, strict=True)], strict=True)
    # pass@n: the best F1 among the n samples, what an oracle picking among them would reach
    sample_f1 = [[answer_scores(ex, r)[0] for r in rs] for ex, rs in zip(batch, responses, strict=True)]
    best_of_samples = [max(kept) if (kept := [f for f in fs if f is not None]) else None for fs in sample_f1]
    sample_correct = [None if a is None else [bool(setup.check(t, r, a)) for r in rs]
                      for t, rs, a in zip(tasks, responses, answers, strict=True)]
    samples_right = [None if c is None else float(np.mean(c)) for c in sample_correct]

    t0 = time.perf_counter()
    nlls = response_nll(setup.model, setup.tokenizer, asked, [setup.fmt.trained(ex, r) for ex, r in
                                                              zip(batch, best, strict=True)],
                        max_length=config.max_length, append_eos=not setup.fmt.templated)
    feedback = []
    labelled = all(c is not None for c in sample_correct)
    extracted = setup.answers_of(batch, responses)  # what self-consistency compares
    for label, idx in selector.groups(choices):
        # no training step: the "pairs" are the chosen answers, one per prompt, and their loss is the NLL
        inputs = StepInputs(pair_prompt=list(idx),
                            scores={i: dict(scores[i]) for i in idx} if "scores" in selector.needs else None,
                            correct=sample_correct if labelled and "correct" in selector.needs else None,
                            responses=extracted if "responses" in selector.needs else None)
        feedback.append(selector.feedback(label, list(idx), AnswerLosses(nlls[idx]), inputs))
    secs["feedback"] = time.perf_counter() - t0

    routed = [c[0] for c in choices]  # ensembles need every RM: they are logged under their own name
    ensemble = selector.name if selector.name.startswith("ensemble") else None
    return {"batch": b, "tasks": tasks, "rms": [ensemble or r for r in routed],
            "rm": ensemble or Counter(routed).most_common(1)[0][0],
            "correct": correct, "f1": list(f1), "em": list(em), "oracle_f1": best_of_samples,
            "rm_passes": [len(c) * config.n_responses for c in choices],  # responses scored, per prompt
            "sample_accuracy": samples_right, "nll": nlls.tolist(),
            "mean_nll": float(nlls.mean()), "answers": best, "feedback": feedback,
            "seconds": {k: round(v, 6) for k, v in secs.items()}}


#: The built-in suites ``laser bon --suite`` answers.
SUITES = ("longbench",)


def check_sources(config: RunConfig, *, longbench: Path | None, suite: str | None,
                  datasets: Sequence[str] | None, split: str = "test") -> None:
    """One source of prompts at a time, a known suite, and known dataset names for it (before anything loads)."""
    given = [flag for flag, value in (("--suite", suite), ("--longbench", longbench), ("--data", config.data))
             if value is not None]
    if len(given) > 1:
        raise LaserError(f"{' and '.join(given)} both name the prompts to answer; pass one of them")
    if suite is not None and suite not in SUITES:
        raise LaserError(f"unknown suite {suite!r}; built-in suites: {', '.join(SUITES)} (the long-document QA "
                         "suite); for LongBench's own files use --longbench FILE")
    if datasets is not None and longbench is None and suite is None:
        raise LaserError("--datasets picks datasets of --longbench FILE or --suite longbench; pass one of them")
    if split not in ("test", "dev"):
        raise LaserError(f"--split must be test or dev, got {split!r}")
    if split != "test" and suite is None:
        raise LaserError("--split picks a split of --suite longbench; other prompts are answered as given")
    if suite is not None and datasets is not None:
        from laser_app.world.longdoc import SUBSETS

        unknown = [d for d in datasets if d not in SUBSETS]
        if unknown:
            raise LaserError(f"unknown dataset {', '.join(map(repr, unknown))} in --suite {suite}; its datasets: "
                             f"{', '.join(SUBSETS)}")


def suite_inputs(config: RunConfig, *, datasets: Sequence[str] | None, progress: bool,
                 split: str = "test") -> tuple[RunConfig, list[LongExample]]:
    """The built-in long-document suite's ``split`` (test, or dev to choose settings on), and ``config``
    pointed at its policy and RMs (each kept when the user named another with ``--model`` /
    ``--rm-registry``); the suite is built on first use."""
    from laser_app.world.suite import load_suite

    built = load_suite(config.cache_dir, seed=config.world_seed, scale=config.world_scale, progress=progress)
    rows = [ex for ex in built.data[split] if datasets is None or ex.dataset in datasets]
    update: dict[str, Any] = {}
    if config.model is None:
        update["model"] = str(built.policy_path)
    if config.rm_registry is None:
        update["rm_registry"] = built.registry_file
        if config.rm_for_task is None:
            update["rm_for_task"] = dict(built.rm_for_task)
    return config.model_copy(update=update), rows


def answer_scores(example: ExampleLike, answer: str) -> tuple[float | None, float | None]:
    """Token F1 and exact match of ``answer``: LongBench's metric for a LongBench example (the best over its
    references; the first line only on few-shot datasets), else against the row's ``answer``; ``None``
    without a reference."""
    if isinstance(example, LongExample):
        return (score_prediction(example.dataset, answer, example.answers, example.all_classes),
                exact_match_prediction(example.dataset, answer, example.answers))
    if example.answer is None:
        return None, None
    return token_f1(answer, str(example.answer)), exact_match(answer, str(example.answer))


def fit_window(setup: Setup, rows: Sequence[LongExample], config: RunConfig) -> list[LongExample]:
    """LongBench's prompts cut in the middle to fit the policy's window with room for the answer (the
    datasets' own answer lengths unless ``--max-new-tokens`` is given); the counts go to ``resolved.json``."""
    if config.max_new_tokens is None:
        setup.max_new_tokens = max(MAX_NEW_TOKENS.get(ex.dataset, setup.max_new_tokens) for ex in rows)
    window = getattr(setup.model.config, "max_position_embeddings", None) or 2048
    overhead = len(setup.tokenizer(setup.fmt.policy_prompt(replace(rows[0], prompt="")))["input_ids"])
    room = window - setup.max_new_tokens - overhead
    if room < 16:
        raise LaserError(f"the policy's window ({window} tokens) leaves {room} for a LongBench prompt after "
                         f"{setup.max_new_tokens} answer tokens; lower --max-new-tokens or use a longer-context model")
    fitted, cut = truncate_examples(setup.tokenizer, rows, room)
    setup.resolved["longbench"] = {"prompts": len(fitted), "max_prompt_tokens": room,
                                   "truncated": truncated_counts(fitted, cut)}
    return fitted
