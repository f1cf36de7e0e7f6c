"""Best-of-n answering without training: per prompt a selector picks the RM, the RM picks the answer.

:func:`run_bon` streams the evaluation prompts (shuffled from the seed, so the bandit meets every task
early): per batch, sample ``n_responses`` per prompt (the prefill pass also yields the policy-state
contexts) -> the selector routes each prompt to an RM (instance granularity) -> the RM scores the samples
-> its top sample is the answer -> accuracy (the task's checker) and token F1 against the reference ->
bandit feedback. The policy never changes, so the bandit's reward cannot be a training loss: it is the
negative NLL of the chosen answer under the policy (``mab_reward="nll"``, no labels needed) or whether the
chosen answer was right (``mab_reward="heldout"``: the label arrives after the prompt was answered, as
online feedback); ``auto`` (the default) takes ``heldout`` when every prompt has an answer.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_app.config import LEARNING_POLICIES, RunConfig
from laser_app.data import ExampleLike, task_of
from laser_app.errors import LaserError
from laser_app.run_dir import RunDir, default_out

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

    from laser_adapters.selector import Selector
    from laser_app.loop import Setup, TimedEncoder

#: Bandit rewards ``laser bon`` accepts (the others need a training step).
BON_REWARDS = ("nll", "heldout")
#: The share of the stream (its end) over which RM choice shares, in-domain share and lock-in are read.
TAIL_SHARE = 0.5
#: A task whose tail choices give one wrong RM at least this share is locked in.
LOCK_IN_SHARE = 0.8
_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class BonSummary:
    """What :func:`run_bon` returns: the run folder and the summary written to its ``metrics.json``."""

    run_dir: Path
    metrics: dict[str, Any]


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between two strings (lower-cased word tokens; 1.0 when both are empty).

    >>> token_f1("the cat sat", "The cat"), token_f1("", ""), token_f1("dog", "cat")
    (0.8, 1.0, 0.0)
    """
    pred, ref = _TOKEN.findall(prediction.lower()), _TOKEN.findall(reference.lower())
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _check_reward(reward: str, *, allowed: Sequence[str]) -> None:
    if reward not in allowed:
        raise LaserError(f"--mab-reward {reward} needs a training step; laser bon takes "
                         f"{' or '.join(BON_REWARDS)}")


def bon_config(config: RunConfig, rows: Sequence[ExampleLike]) -> RunConfig:
    """``config`` as best-of-n needs it: one decision per prompt, and a reward that needs no training
    step (``auto``: ``heldout`` when every row has an answer, else ``nll``)."""
    reward = config.mab_reward
    if reward == "auto":
        reward = "heldout" if rows and all(ex.answer is not None for ex in rows) else "nll"
    _check_reward(reward, allowed=BON_REWARDS)
    granularity = "instance" if config.policy in (*LEARNING_POLICIES, "random") else "batch"
    return config.model_copy(update={"mab_reward": reward, "granularity": granularity})


def run_bon(config: RunConfig, *, progress: bool = True, console: Console | None = None) -> BonSummary:
    """Answer the evaluation prompts best-of-n with the RM the selector picks; write a run folder.

    The prompts are the built-in test split (or ``--data``, whose rows need an ``answer`` for accuracy).
    """
    from laser_app.loop import _progress_bar, _stderr_console, prepare, selector_for

    t_start = time.perf_counter()
    _check_reward(config.mab_reward, allowed=(*BON_REWARDS, "auto"))  # before anything loads
    console = console or _stderr_console()
    setup = prepare(config.model_copy(update={"mab_reward": "nll"}), progress=progress, console=console)
    rows: list[ExampleLike] = list(setup.train if config.data is not None else setup.evaluation["test"])
    if config.mab_reward == "heldout" and any(ex.answer is None for ex in rows):
        raise LaserError("--mab-reward heldout needs an \"answer\" on every row; add answers or use nll")
    given, config = config, bon_config(config, rows)
    order = np.random.default_rng(np.random.SeedSequence([config.seed, 3])).permutation(len(rows))
    rows = [rows[i] for i in order]
    selector, encoder, reuse_states = selector_for(config, setup)

    run = RunDir.create(config.out or default_out(f"bon-{config.policy}"), overwrite=config.overwrite)
    try:
        run.write_config(given.model_dump(mode="json"), {
            **setup.resolved, "mode": "best-of-n", "prompts": len(rows), "mab_reward": config.mab_reward,
            "granularity": config.granularity})
        batches = [rows[i:i + config.batch_size] for i in range(0, len(rows), config.batch_size)]
        with _progress_bar(console, len(batches), enabled=progress) as bar:
            bar.describe("best-of-n")
            for b, batch in enumerate(batches):
                event = _bon_batch(b, batch, config, setup, selector, encoder, reuse_states)
                run.append_event(event)
                bar.advance(rm=event["rm"], loss=event.get("mean_nll"))
        run.save_bandit(selector.state_dict())
        metrics = summarize_bon(run.events(), rm_names=setup.rm_names, rm_for_task=setup.rm_for_task,
                                policy=config.policy, n_responses=config.n_responses,
                                seconds=time.perf_counter() - t_start)
        run.write_metrics(metrics)
        run.mark_complete()
    except BaseException as err:
        run.mark_failed(err)
        raise
    return BonSummary(run_dir=run.path, metrics=metrics)


def _bon_batch(b: int, batch: Sequence[ExampleLike], config: RunConfig, setup: Setup, selector: Selector,
               encoder: TimedEncoder | None, reuse_states: bool) -> dict[str, Any]:
    """One batch of best-of-n: sample, route, score, pick, check, give feedback; returns its event."""
    from laser_adapters.dpo import StepResult, response_nll
    from laser_adapters.encoders import PrefillCapture
    from laser_adapters.generation import cut_at_stop, sample_responses
    from laser_app.loop import choose_rms, derive_seed, score_responses

    prompts = [ex.prompt for ex in batch]
    tasks = [task_of(ex) for ex in batch]
    secs = dict.fromkeys(("encode", "select", "generate", "score", "feedback"), 0.0)
    t0 = time.perf_counter()
    with PrefillCapture(setup.model) if reuse_states else nullcontext() as capture:
        samples = sample_responses(setup.model, setup.tokenizer, prompts, n=config.n_responses,
                                   temperature=config.temperature, top_p=config.top_p,
                                   max_new_tokens=setup.max_new_tokens, stop=setup.stop,
                                   seed=derive_seed(config.seed, 0, b))
    responses = [[cut_at_stop(r, setup.stop) for r in rs] for rs in samples]
    secs["generate"] = time.perf_counter() - t0
    choices = choose_rms(selector, prompts, tasks, encoder, capture, secs)

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
    f1 = [None if a is None else token_f1(r, a) for r, a in zip(best, answers, strict=True)]
    sample_correct = [None if a is None else [bool(setup.check(t, r, a)) for r in rs]
                      for t, rs, a in zip(tasks, responses, answers, strict=True)]
    samples_right = [None if c is None else float(np.mean(c)) for c in sample_correct]

    t0 = time.perf_counter()
    nlls = response_nll(setup.model, setup.tokenizer, prompts, best, max_length=config.max_length)
    feedback = []
    for label, idx in selector.groups(choices):
        values = nlls[idx]
        zeros = np.zeros(len(idx))
        result = StepResult(loss=float(values.mean()), losses=values, dpo_losses=zeros, nll_losses=values,
                            chosen_rewards=zeros, rejected_rewards=zeros, dpo_loss=0.0,
                            nll_loss=float(values.mean()))
        extra: dict[str, Any] = {"pair_prompt": list(idx), "scores": {i: dict(scores[i]) for i in idx}}
        if all(c is not None for c in sample_correct):
            extra["correct"] = sample_correct
        feedback.append(selector.feedback(label, list(idx), result, extra))
    secs["feedback"] = time.perf_counter() - t0

    routed = [c[0] for c in choices]  # ensembles need every RM: they are logged under their own name
    ensemble = selector.name if selector.name.startswith("ensemble") else None
    return {"batch": b, "tasks": tasks, "rms": [ensemble or r for r in routed],
            "rm": ensemble or Counter(routed).most_common(1)[0][0],
            "correct": correct, "f1": f1, "sample_accuracy": samples_right, "nll": nlls.tolist(),
            "mean_nll": float(nlls.mean()), "answers": best, "feedback": feedback,
            "seconds": {k: round(v, 6) for k, v in secs.items()}}


def _mean(values: Sequence[float | bool | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize_bon(events: Sequence[Mapping[str, Any]], *, rm_names: Sequence[str],
                  rm_for_task: Mapping[str, str] | None, policy: str, n_responses: int,
                  seconds: float) -> dict[str, Any]:
    """The ``metrics.json`` of a best-of-n run: accuracy and F1 per task, the samples' own accuracy (a
    random pick), RM choice shares over the stream's last half, in-domain share and lock-in, timings.

    >>> ev = [{"tasks": ["math"] * 4, "rms": ["rm-b", "rm-a", "rm-a", "rm-a"], "correct": [False, True] * 2,
    ...        "f1": [0.0, 1.0] * 2, "sample_accuracy": [0.5] * 4, "seconds": {"select": 0.001, "generate": 0.1}}]
    >>> m = summarize_bon(ev, rm_names=["rm-a", "rm-b"], rm_for_task={"math": "rm-a"}, policy="linucb",
    ...                   n_responses=4, seconds=1.0)
    >>> m["accuracy"]["math"], m["in_domain_share"]["per_task"]["math"]  # shares: the last half only
    (0.5, 1.0)
    """
    flat = [(t, rm, c, f, s) for e in events for t, rm, c, f, s in zip(
        e["tasks"], e["rms"], e["correct"], e["f1"], e["sample_accuracy"], strict=True)]
    tasks = sorted({t for t, *_ in flat})
    accuracy = {t: _mean([c for tt, _, c, _, _ in flat if tt == t]) for t in tasks}
    f1 = {t: _mean([f for tt, _, _, f, _ in flat if tt == t]) for t in tasks}
    sampled = {t: _mean([s for tt, _, _, _, s in flat if tt == t]) for t in tasks}
    for table in (accuracy, f1, sampled):
        table["mean"] = _mean([table[t] for t in tasks])
    tail = flat[int(len(flat) * (1 - TAIL_SHARE)):]
    shares: dict[str, dict[str, float]] = {}
    for t in tasks:
        routed = Counter(rm for tt, rm, *_ in tail if tt == t)
        total = sum(routed.values())
        shares[t] = {rm: n / total for rm, n in sorted(routed.items())} if total else {}
    in_domain = lock_in = None
    if rm_for_task and all(rm in rm_names for s in shares.values() for rm in s):
        per_task = {t: shares[t].get(rm_for_task[t], 0.0) for t in tasks if t in rm_for_task}
        in_domain = {"per_task": per_task, "mean": _mean(list(per_task.values()))}
        locked = sorted(t for t in per_task if any(rm != rm_for_task[t] and s >= LOCK_IN_SHARE
                                                  for rm, s in shares[t].items()))
        lock_in = {"locked": locked, "threshold": LOCK_IN_SHARE}
    secs = {k: float(sum(e.get("seconds", {}).get(k, 0.0) for e in events))
            for k in ("encode", "select", "generate", "score", "feedback")}
    per_prompt = sum(secs.values())
    return {"mode": "best-of-n", "policy": policy, "rms": list(rm_names), "n_responses": n_responses,
            "prompts": len(flat), "tasks": tasks, "accuracy": accuracy, "f1": f1, "sample_accuracy": sampled,
            "choice_share_tail": shares, "in_domain_share": in_domain, "lock_in": lock_in,
            "timings": {"total": round(seconds, 3), **{k: round(v, 3) for k, v in secs.items()},
                        "bandit_share": (secs["encode"] + secs["select"]) / per_prompt if per_prompt else None}}


def render_bon(metrics: Mapping[str, Any], console: Console) -> None:
    """Print a best-of-n run's summary: accuracy, F1 and the samples' accuracy per task; RM shares."""
    from rich.table import Table

    table = Table(title=f"best-of-{metrics['n_responses']} with {metrics['policy']}")
    for col in ("task", "accuracy", "token F1", "a random sample", "in-domain RM (last half)"):
        table.add_column(col, justify="left" if col == "task" else "right")
    in_domain = (metrics.get("in_domain_share") or {}).get("per_task", {})
    for t in [*metrics["tasks"], "mean"]:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}%"
        share = in_domain.get(t) if t != "mean" else (metrics.get("in_domain_share") or {}).get("mean")
        table.add_row(t, pct(metrics["accuracy"].get(t)), pct(metrics["f1"].get(t)),
                      pct(metrics["sample_accuracy"].get(t)), pct(share))
    console.print(table)
    locked = (metrics.get("lock_in") or {}).get("locked")
    if locked:
        console.print(f"[yellow]locked onto a wrong RM:[/] {', '.join(locked)}")
    share = metrics["timings"].get("bandit_share")
    console.print(f"{metrics['prompts']} prompts in {metrics['timings']['total']:.1f} s; the bandit's share "
                  f"of the per-prompt work: {'-' if share is None else f'{100 * share:.1f}%'}")
