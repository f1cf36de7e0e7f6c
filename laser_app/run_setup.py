"""A run's set-up: everything the LASeR loop works with, resolved from a :class:`~laser_app.config.RunConfig`
before any run folder exists, so every input error surfaces here: the data and evaluation sets, the RM
registry, the policy (and how it is asked: :class:`~laser_app.prompts.PromptFormat`), the answer checker and
what a labelled-dev method reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from laser_adapters.methods import GOLD_RM
from laser_app.config import RunConfig, answer_checker, check_lora_compatible
from laser_app.data import ExampleLike, Window, by_task, fit_prompts, load_examples, task_of
from laser_app.dev_labels import DevCounts, dev_inputs, dev_rows
from laser_app.errors import LaserError
from laser_app.evaluation import cap_per_task
from laser_app.labels import gold_rm, label_kind, label_use
from laser_app.policy import load_policy, model_source, resolve_device, torch_threads
from laser_app.prompts import PromptFormat
from laser_app.rms import load_registry, load_rms
from laser_app.world import world_for
from laser_app.world.tasks import check_answer

if TYPE_CHECKING:
    from rich.console import Console

    from laser_adapters.reward_models.registry import RMRegistry

#: ``max_new_tokens`` for user data when the config does not set it.
USER_DATA_MAX_NEW_TOKENS = 64
#: Batches per iteration on the built-in world when the config does not set it (the compared setting).
WORLD_BATCHES_PER_ITERATION = 100


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
    threads: int
    fmt: PromptFormat = field(default_factory=PromptFormat)
    dev: DevCounts | None = None
    probe: Callable[..., dict[int, float]] | None = None  # the dev-gold reward's probes (dev_inputs)
    resolved: dict[str, Any] = field(default_factory=dict)

    def answers_of(self, batch: Sequence[ExampleLike], responses: Sequence[Sequence[str]]) -> list[list[str]]:
        """Each response's answer as the checker reads it, what self-consistency compares: the extracted
        answer on the user's data (``--answer-extractor``; the response itself when none is found), the
        response on the built-in world."""
        extract = getattr(self.check, "extract", None)
        if extract is None:
            return [list(rs) for rs in responses]
        return [[extract(task_of(ex), r, ex.answer) or r for r in rs] for ex, rs in zip(batch, responses, strict=True)]


def policy_window(model: Any, tokenizer: Any) -> int | None:
    """The policy's context window in tokens: its config's ``max_position_embeddings`` (or the older names
    ``n_positions``, ``max_sequence_length``, ``seq_length``, ``n_ctx``), else the tokenizer's
    ``model_max_length`` when it is a real limit; ``None`` when neither says (a model without one).

    >>> from types import SimpleNamespace as NS
    >>> policy_window(NS(config=NS(max_position_embeddings=256)), NS(model_max_length=10**30))
    256
    >>> policy_window(NS(config=NS()), NS(model_max_length=2048)), policy_window(NS(config=NS()), NS())
    (2048, None)
    """
    config: Any = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(text, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)  # transformers' "no limit" is about 1e30
    return limit if isinstance(limit, int) and 0 < limit < 10**8 else None


def _split_names(config: RunConfig) -> dict[str, str]:
    """How an error names each split's source (``dev_labels``: the labelled dev prompts a method reads)."""
    return {"train": f"data file {config.data}" if config.data is not None else "the built-in train split",
            "eval": f"eval data file {config.eval_data}", "dev": "the built-in dev split",
            "test": "the built-in test split",
            "dev_labels": f"dev data file {config.dev_data}" if config.dev_data is not None
            else "the built-in dev split"}


def fit_splits(splits: Mapping[str, Sequence[ExampleLike]], config: RunConfig, *, model: Any, tokenizer: Any,
               fmt: PromptFormat, max_new_tokens: int, console: Console | None,
               names: Mapping[str, str]) -> tuple[dict[str, list[ExampleLike]], dict[str, Any]]:
    """Each split's rows fitted to the policy's window as ``config.long_prompts`` says (see
    :func:`~laser_app.data.fit_prompts`), and what resolved.json records: the window, the room a prompt has
    and the prompts cut per split. One notice line when any were cut."""
    tokens = policy_window(model, tokenizer)
    info: dict[str, Any] = {"mode": config.long_prompts, "window": tokens, "room": None, "truncated": {}}
    if tokens is None:
        return {split: list(rows) for split, rows in splits.items()}, info
    window = Window(tokens, max_new_tokens)
    if window.room <= 0:
        raise LaserError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the policy's window "
                         f"({tokens} tokens); lower --max-new-tokens")
    info["room"] = window.room
    out = {}
    for split, rows in splits.items():
        out[split], info["truncated"][split] = fit_prompts(
            rows, tokenizer=tokenizer, ask=fmt.policy_prompt, window=window, where=names.get(split, split),
            mode=config.long_prompts)
    cut = {split: n for split, n in info["truncated"].items() if n}
    if cut and console is not None:
        listed = ", ".join(f"{n} in {split}" for split, n in cut.items())
        console.print(f"[yellow]note:[/] --long-prompts truncate: kept the last {window.room} tokens of the prompts "
                      f"longer than that ({listed}; the policy's window is {tokens} tokens, {max_new_tokens} of "
                      "them for the answer)", soft_wrap=True)
    return out, info


def prepare(config: RunConfig, *, progress: bool = True, console: Console | None = None,
            rows: Sequence[ExampleLike] | None = None, training: bool = True) -> Setup:
    """Resolve the policy, data, RM registry and evaluation sets; every input error surfaces here.
    ``rows``: prompts read by the caller (e.g. LongBench's), used as the user's ``--data``; ``training``:
    False for best-of-n answering, which evaluates its own prompts."""
    resolve_device(config.device)  # a device this machine lacks fails before anything loads
    if config.model is not None:
        model_source(config.model)  # a missing path fails now, before anything loads
    own = config.data is not None or rows is not None  # the user's data, not the built-in world's
    world: Any = None
    if config.model is None or not own or config.rm_registry is None:
        world = world_for(config, progress=progress)

    # data
    if rows is not None:
        train: list[ExampleLike] = list(rows)
    elif config.data is not None:
        train = list(load_examples(config.data, what="data file", **config.data_options))
    else:
        train = list(world.data["train"])
    evaluation: dict[str, list[ExampleLike]] = {}
    if config.eval_data is not None:
        evaluation["eval"] = list(load_examples(config.eval_data, require_answers=True, what="eval data file",
                                                **config.data_options))
    elif not own:
        evaluation = {"dev": list(world.data["dev"]), "test": list(world.data["test"])}
    elif console is not None and training:
        console.print("[yellow]note:[/] no evaluation data (pass --eval-data FILE to track accuracy)")
    if config.eval_size is not None:
        evaluation = {split: cap_per_task(rows, config.eval_size) for split, rows in evaluation.items()}
    if config.mab_reward == "gold" and any(ex.answer is None for ex in train):
        raise LaserError("--mab-reward gold needs an \"answer\" on every training row; add answers or "
                         "pick another reward")

    # the built-in world's tasks have their own checker; the user's data is read by --answer-extractor
    check: Callable[[str, str, str], bool] = answer_checker(config) if own else check_answer

    # reward models
    registry = load_registry(config, world)
    names = list(registry.names)
    rm_names = list(config.rms) if config.rms is not None else names
    unknown = [n for n in rm_names if n not in names]
    if unknown:
        raise LaserError(f"unknown RM {', '.join(map(repr, unknown))}; valid names: {', '.join(names)}")
    fixed = config.fixed_rm
    if fixed is not None and fixed not in rm_names:
        raise LaserError(f"--policy {config.policy}: RM {fixed!r} is not among the RMs in use; valid names: "
                         f"{', '.join(rm_names)}")
    load_rms(registry, rm_names, config.max_loaded_rms)
    rm_for_task = config.rm_for_task
    if rm_for_task is None and world is not None and not own and config.rm_registry is None:
        rm_for_task = {t: rm for t, rm in world.rm_for_task.items() if rm in rm_names} or None

    # policy model
    builtin_on_cpu = config.model is None and resolve_device(config.device) == "cpu"
    threads = config.threads or (1 if builtin_on_cpu else torch.get_num_threads())
    model_ref = config.model if config.model is not None else str(world.policy_path)
    if config.lora and config.model is None:
        check_lora_compatible(model_ref)
    model, tokenizer = load_policy(model_ref, device=config.device, lora=config, seed=config.seed)
    fmt = PromptFormat.for_policy(tokenizer, config.chat_template)
    if fmt.chat is not None:
        fmt.chat.stop_generation_at_end_of_turn(model)

    max_new = config.max_new_tokens or (world.max_new_tokens if world is not None and not own
                                        else USER_DATA_MAX_NEW_TOKENS)
    # prompts longer than the window fail (or are cut) now, before any sampling; LongBench's rows (``rows``)
    # are cut in the middle by best-of-n itself
    splits = {**({} if rows is not None else {"train": train}), **evaluation}
    fitted, long_prompts = fit_splits(splits, config, model=model, tokenizer=tokenizer, fmt=fmt,
                                      max_new_tokens=int(max_new), console=console,
                                      names=_split_names(config))
    train = fitted.pop("train", train)
    evaluation = fitted
    if config.policy == GOLD_RM:  # the answer checker ranks the samples: it reads every training label
        registry.register(GOLD_RM, gold_rm(train, check), replace=True)
        rm_names = [*rm_names, GOLD_RM]
    stop = world.stop if world is not None and not own else None
    batches = config.batches_per_iteration or (WORLD_BATCHES_PER_ITERATION if not own else None)
    resolved = {"batches_per_iteration": batches, "model": model_ref,
                "data": (str(config.data) if config.data else "given prompts" if rows is not None
                         else "built-in train split"),
                "evaluation": {split: len(examples) for split, examples in evaluation.items()},
                "rm_registry": str(config.rm_registry) if config.rm_registry else f"built-in ({config.ood})",
                "rms": rm_names, "rm_for_task": rm_for_task, "max_new_tokens": max_new, "stop": stop,
                "threads": threads, "chat_template": fmt.templated, "long_prompts": long_prompts,
                "train_examples": len(train), "tasks": sorted(by_task(train)),
                "world": None if world is None else str(world.path),
                "labels": label_use(config, train_labelled=sum(ex.answer is not None for ex in train),
                                    dev_per_task=config.dev_labels, tasks=len(by_task(train)))}
    dev, probe = None, None
    if label_kind(config) == "dev":  # a few labelled dev prompts per task, never the test split
        with torch_threads(threads):
            dev_fitted, dev_long = fit_splits({"dev_labels": dev_rows(config, world)}, config, model=model,
                                              tokenizer=tokenizer, fmt=fmt, max_new_tokens=int(max_new),
                                              console=console, names=_split_names(config))
            long_prompts["truncated"].update(dev_long["truncated"])
            dev, probe, info = dev_inputs(config, dev_fitted["dev_labels"], model=model, tokenizer=tokenizer,
                                          registry=registry, rm_names=rm_names, max_new_tokens=int(max_new),
                                          stop=fmt.stop(stop), check=check, ask=fmt.policy_prompt)
        resolved.update(info)
    return Setup(model=model, tokenizer=tokenizer, train=train, evaluation=evaluation, registry=registry,
                 rm_names=rm_names, rm_for_task=rm_for_task, max_new_tokens=int(max_new), stop=stop,
                 check=check, threads=threads, fmt=fmt, dev=dev, probe=probe, resolved=resolved)

