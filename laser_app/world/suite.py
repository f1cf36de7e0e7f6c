"""Building, caching and loading the built-in long-document QA suite (:mod:`laser_app.world.longdoc`).

The recipe (sizes and step counts in :class:`SuiteSpec`, chosen on the dev split):

1. Draw the suite's ``test``/``dev``/``train`` splits and, disjoint from them, an ``sft`` split.
2. Train a word-level Llama reader by SFT on ``sft`` (all three subsets mixed). Its checkpoint at
   ``policy_step`` is the policy: middling on every subset, so best-of-n has room to help.
3. Each specialist RM continues from that checkpoint on a mixture that is mostly its own subset
   (``home_share``), so it becomes better there and stays near the policy elsewhere: the three subsets need
   three ways of counting (mentions in the document, passages, mentions in the last document). The RMs are
   ``likelihood`` RMs: an answer's mean log-probability under the specialist (an empty answer scores -100),
   registered in ``rms-longdoc.toml`` and loaded through ``RMRegistry`` like any hub model. Bradley-Terry
   classifier RMs trained from the same checkpoint within the same budget (200 steps of 8 pairs, answers
   against other values their documents name) picked worse on dev (best-of-4 F1 18-30 against 25-39), so the
   suite uses likelihood RMs.
4. Measure on dev: the policy's greedy F1 per subset, and best-of-n F1 with each RM picking among the policy's
   samples (with the samples' mean and best F1 as floor and ceiling); write ``suite.json`` last.

The build runs in a temporary sibling folder renamed into place at the end, on a fixed number of torch threads,
as the short world's does (:func:`laser_app.world.build.build_in_place`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from laser_app.world.build import Laps, _Progress, build_in_place, default_cache_dir
from laser_app.world.longdoc import SUBSETS, make_suite, suite_tokenizer, write_suite
from laser_app.world.specs import PolicySpec, check_scale, scale_count

SUITE_VERSION = 1
SPLITS = ("train", "dev", "test")
RM_FOR_SUBSET: dict[str, str] = {"doc-single": "rm-single", "doc-multi": "rm-multi", "doc-fewshot": "rm-fewshot"}
"""The specialist RM of each subset."""


@dataclass(frozen=True)
class SuiteSpec:
    """Sizes (per subset) and budgets of the suite's build. ``scaled(0.05)`` is a quick suite for tests."""

    n_sft: int = 4000
    n_train: int = 200
    n_dev: int = 60
    n_test: int = 100
    policy: PolicySpec = field(default_factory=lambda: PolicySpec(steps=600, batch_size=16, lr=3e-3, warmup=30))
    policy_step: int = 600
    specialist: PolicySpec = field(default_factory=lambda: PolicySpec(steps=220, batch_size=16, lr=2e-3,
                                                                      warmup=10))
    home_share: float = 0.8
    window: int = 256
    samples: int = 4
    temperature: float = 1.0

    def scaled(self, scale: float) -> SuiteSpec:
        check_scale(scale)
        if scale == 1:
            return self

        def s(n: int, low: int) -> int:
            return scale_count(n, scale, low)

        policy = replace(self.policy, steps=s(self.policy.steps, 4), warmup=1)
        return replace(self, n_sft=s(self.n_sft, 16), n_train=s(self.n_train, 4), n_dev=s(self.n_dev, 4),
                       n_test=s(self.n_test, 4), policy=policy,
                       policy_step=max(1, min(policy.steps, round(self.policy_step * scale))),
                       specialist=replace(self.specialist, steps=s(self.specialist.steps, 2), warmup=1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suite_dir(cache_dir: str | Path | None, seed: int, scale: float = 1.0) -> Path:
    """Where the suite for ``seed`` (and ``scale``) lives inside ``cache_dir``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    suffix = "" if scale == 1 else f"-scale{scale:g}"
    return root / f"longdoc-v{SUITE_VERSION}-seed{seed}{suffix}"


class Suite:
    """A built suite on disk: LongBench-format splits, the policy, the RM registry and what the build measured."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = self.path / "suite.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{self.path} holds no built suite (no suite.json); build it with "
                                    "`laser world build --suite`")
        self.meta: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        self.seed = int(self.meta["seed"])
        self.policy_path = self.path / "policy"
        self.registry_file = self.path / "rms-longdoc.toml"
        self.rm_for_task: dict[str, str] = dict(self.meta["rm_for_task"])

    def __repr__(self) -> str:
        return f"Suite(path={str(self.path)!r}, seed={self.seed})"

    def split_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return self.path / "data" / f"{split}.jsonl"

    @cached_property
    def data(self) -> dict[str, list[Any]]:
        """The ``train``/``dev``/``test`` splits as LongBench items."""
        from laser_app.longbench import load_longbench

        return {split: load_longbench(self.split_file(split)) for split in SPLITS}


def is_complete(path: str | Path) -> bool:
    meta = Path(path) / "suite.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return bool(data.get("complete")) and data.get("version") == SUITE_VERSION


def load_suite(cache_dir: str | Path | None = None, *, seed: int = 0, build: bool = True, progress: bool = True,
               scale: float = 1.0, threads: int = 1) -> Suite:
    """The suite for ``seed`` from the cache, built first when missing (unless ``build=False``)."""
    path = suite_dir(cache_dir, seed, scale)
    if is_complete(path):
        return Suite(path)
    if not build:
        raise FileNotFoundError(f"no built suite at {path}; run `laser world build --suite`")
    return build_suite(cache_dir, seed=seed, progress=progress, scale=scale, threads=threads)


def build_suite(cache_dir: str | Path | None = None, *, seed: int = 0, progress: bool = True, scale: float = 1.0,
                spec: SuiteSpec | None = None, threads: int = 1, force: bool = False) -> Suite:
    """Build the suite for ``seed`` into ``cache_dir`` and return it (an existing one is kept unless ``force``)."""
    spec = (spec or SuiteSpec()).scaled(scale)
    target = suite_dir(cache_dir, seed, scale)
    if is_complete(target) and not force:
        return Suite(target)
    build_in_place(target, lambda tmp: _build_into(tmp, seed=seed, spec=spec, progress=progress), threads=threads,
                   force=force, complete=is_complete)
    return Suite(target)


def _build_into(out: Path, *, seed: int, spec: SuiteSpec, progress: bool) -> None:
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    from laser_adapters.reward_models import RMRegistry
    from laser_app.longbench import truncate_middle
    from laser_app.world.policy_model import count_parameters, generate, mixed_batches, seeded, sft

    lap = Laps()

    bar = _Progress(progress, total=spec.policy.steps + len(SUBSETS) * spec.specialist.steps + 2)
    with bar.running():
        bar.stage("long-document suite: data")
        splits = make_suite(seed, {"test": spec.n_test, "dev": spec.n_dev, "train": spec.n_train,
                                   "sft": spec.n_sft})
        for split in SPLITS:
            write_suite(splits[split], out / "data" / f"{split}.jsonl")
        tok = suite_tokenizer()
        room = spec.window - 6  # the answer's tokens and the stop

        def fit(prompt: str) -> str:
            return truncate_middle(tok, prompt, room)[0]

        rows = {s: [(fit(e.prompt), f" {e.answers[0]}\n") for e in splits["sft"] if e.dataset == s] for s in SUBSETS}
        lap("data")

        bar.stage("long-document suite: policy SFT")
        config = replace(spec.policy).llama_config(tok)
        config.max_position_embeddings = spec.window
        with seeded(seed):
            model = LlamaForCausalLM(config)
        snapshot: dict[str, torch.Tensor] = {}

        def on_step(step: int) -> None:
            bar.advance()
            if step == spec.policy_step:
                snapshot.update({k: v.detach().clone() for k, v in model.state_dict().items()})

        everything = [r for s in SUBSETS for r in rows[s]]
        sft(model, tok, mixed_batches(everything, spec.policy.batch_size, seed=seed), spec.policy, on_step=on_step)
        model.load_state_dict(snapshot)
        model.eval()
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(out / "policy")
        tok.save_pretrained(out / "policy")
        lap("policy")

        lines = []
        for k, subset in enumerate(SUBSETS):
            name = RM_FOR_SUBSET[subset]
            bar.stage(f"long-document suite: {name}")
            rm = LlamaForCausalLM(config)
            rm.load_state_dict(snapshot)
            rng = np.random.default_rng([seed, 404, k])
            others = [r for s in SUBSETS if s != subset for r in rows[s]]
            n_home = round(len(rows[subset]) * spec.home_share / (1 - spec.home_share))
            home = [rows[subset][int(i)] for i in rng.integers(len(rows[subset]), size=max(n_home, 1))]
            sft(rm, tok, mixed_batches(home + others[: len(rows[subset])], spec.specialist.batch_size,
                                       seed=seed + 1 + k), spec.specialist, on_step=lambda _: bar.advance())
            rm.eval()
            rm.save_pretrained(out / "rms" / name)
            tok.save_pretrained(out / "rms" / name)
            lines.append(f'[rms.{name}]\nkind = "likelihood"\nmodel = "./rms/{name}"\n'
                         f"options = {{ batch_size = 32, max_length = {spec.window}, empty_score = -100.0 }}\n")
        (out / "rms-longdoc.toml").write_text(
            "# built-in long-document RMs: one specialist per subset\n\n" + "\n".join(lines), encoding="utf-8")
        lap("reward_models")

        bar.stage("long-document suite: measuring")
        dev = splits["dev"]
        prompts = [fit(e.prompt) for e in dev]
        greedy = generate(model, tok, prompts, max_new_tokens=4)
        sampled = generate(model, tok, prompts, n=spec.samples, temperature=spec.temperature, max_new_tokens=4,
                           seed=seed + 5)
        registry = RMRegistry.from_file(out / "rms-longdoc.toml", max_loaded=1)
        picks = {}
        for name in RM_FOR_SUBSET.values():
            scorer = registry.get(name)
            flat = scorer.score([p for p, rs in zip(prompts, sampled, strict=True) for _ in rs],
                                [r for rs in sampled for r in rs]).reshape(len(dev), spec.samples)
            picks[name] = [rs[int(np.argmax(row))] for rs, row in zip(sampled, flat, strict=True)]
        bar.advance(2)
        lap("measure")

    from laser_app.qa_metrics import score_prediction

    def f1(ex: Any, answer: str) -> float:
        return score_prediction(ex.dataset, answer, ex.answers)

    def by_subset(values: list[float]) -> dict[str, float]:
        return {s: round(100 * float(np.mean([v for v, e in zip(values, dev, strict=True) if e.dataset == s])), 1)
                for s in SUBSETS}

    sample_f1 = [[f1(e, r) for r in rs] for e, rs in zip(dev, sampled, strict=True)]
    measured = {
        "greedy": by_subset([f1(e, g[0]) for e, g in zip(dev, greedy, strict=True)]),
        "sample_mean": by_subset([float(np.mean(fs)) for fs in sample_f1]),
        "pass_at_n": by_subset([max(fs) for fs in sample_f1]),
        **{f"best_of_n[{name}]": by_subset([f1(e, p) for e, p in zip(dev, picks[name], strict=True)])
           for name in RM_FOR_SUBSET.values()},
    }
    tokens = [len(tok(e.prompt)["input_ids"]) for e in splits["test"]]
    meta = {
        "version": SUITE_VERSION, "complete": True, "seed": seed, "subsets": list(SUBSETS),
        "rm_for_task": dict(RM_FOR_SUBSET), "window": spec.window,
        "sizes": {"per_subset": {"test": spec.n_test, "dev": spec.n_dev, "train": spec.n_train, "sft": spec.n_sft}},
        "prompt_tokens_test": {"median": int(np.median(tokens)), "max": int(max(tokens)),
                               "over_window": int(sum(t > room for t in tokens))},
        "policy": {"parameters": count_parameters(model), "checkpoint_step": spec.policy_step},
        "dev_f1": measured, "timings": lap.summary(),
        "torch_threads": torch.get_num_threads(), "spec": spec.to_dict(),
    }
    (out / "suite.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
