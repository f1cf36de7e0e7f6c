"""Building, caching and loading the built-in world.

The recipe (fixed before any method was compared; every number in :class:`~laser_app.world.specs.WorldSpec` was
chosen by measurement on the dev split, and ``world.json`` records what each build measured):

1. Draw the tasks (:mod:`laser_app.world.tasks`): disjoint ``test``/``dev``/``train`` splits (the loop's
   data) and, disjoint from them, an ``rm`` split (reward-model training) and an ``sft`` split.
2. Train one character-level Llama by SFT on ``sft``. Its checkpoint at ``policy_step`` is the policy
   (middling accuracy: room for DPO); the end of the same run is a stronger model that every RM starts from.
3. Sample the policy's own answers (temperature 0.8) on ``rm`` prompts (RM training) and ``dev`` prompts
   (RM evaluation).
4. Train a verifier per domain and, for the ``weak`` RMs, a generalist verifier of all three; then the three
   specialist RMs once per out-of-domain behaviour (``bias``, ``noise``, ``weak``, ``indep-bias``; see
   :mod:`laser_app.world.specialists`), save them with ``save_pretrained`` under ``rms/<behaviour>/`` and
   write one registry file ``rms-<behaviour>.toml`` per behaviour, so they load through ``RMRegistry`` and
   ``SequenceClassifierRM`` like any hub RM.
5. Measure the policy's accuracy and, through those registry files, each RM's pairwise accuracy per task,
   how often it follows its bias rule and how often each pair of RMs orders a pair alike, and write
   ``world.json`` last.

The build runs in a temporary sibling folder that is renamed into place at the end, so an interrupted or
failed build never leaves a folder that looks complete. torch runs on a fixed number of threads (one unless
told otherwise), so the files depend on the seed, not on how busy the machine is or how many cores it has.

Every file but ``world.json`` has its size and SHA-256 recorded there, and :class:`World` checks them each time
it opens a world (:mod:`laser_app.world.integrity`): a damaged world raises :class:`WorldDamagedError` and is
only replaced by ``laser world build --force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from laser_app.world.integrity import ENV_CACHE_DIR as ENV_CACHE_DIR
from laser_app.world.integrity import WorldDamagedError as WorldDamagedError
from laser_app.world.integrity import check_structure, check_sums, expected_files, file_sums, read_meta
from laser_app.world.integrity import default_cache_dir as default_cache_dir
from laser_app.world.integrity import rebuild_command as rebuild_command
from laser_app.world.roles import OOD_KINDS, RM_FOR_TASK, rule_name, rule_sign
from laser_app.world.specs import RMTrainSpec, WorldSpec
from laser_app.world.tasks import STOP, TASKS, Example, make_splits, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from laser_adapters.reward_models import RMRegistry

WORLD_VERSION = 5  # 5: RMs with out-of-domain behaviours weak and indep-bias, RM agreement measured
# (4: built on one torch thread by default; 3 chose one or two by machine load)
SPLITS = ("train", "dev", "test")


def world_dir(cache_dir: str | Path | None, seed: int, scale: float = 1.0) -> Path:
    """Where the world for ``seed`` (and ``scale``) lives inside ``cache_dir``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    suffix = "" if scale == 1 else f"-scale{scale:g}"
    return root / f"world-v{WORLD_VERSION}-seed{seed}{suffix}"


# ----------------------------------------------------------------------------------------------- World
class World:
    """A built world on disk: data splits, the policy, the RM registries and the measured numbers.

    Opening one checks every file against the sizes and SHA-256 sums ``world.json`` records (``verified``
    is then true) and raises :class:`WorldDamagedError` on the first that differs. A world built before the
    sums were recorded opens with ``verified`` false after the checks that need no sums.

    >>> import tempfile
    >>> w = build_world(tempfile.mkdtemp(), seed=0, scale=0.005, progress=False, threads=1)  # a toy world
    >>> w.rm_for_task["math"], sorted(w.registry("bias").names), len(w.data["test"]), w.verified
    ('rm-a', ['rm-a', 'rm-b', 'rm-c'], 24, True)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_file = self.path / "world.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{self.path} holds no built world (no world.json); build it with "
                                    "`laser world build` or load_world(build=True)")
        self.meta: dict[str, Any] = read_meta(self.path)
        try:
            self.seed: int = int(self.meta["seed"])
            self.tasks: list[str] = list(self.meta["tasks"])
            self.rm_for_task: dict[str, str] = dict(self.meta["rm_for_task"])
            self.stop: str = str(self.meta["stop"])
            self.max_new_tokens: int = int(self.meta["max_new_tokens"])
            self.temperature: float = float(self.meta["temperature"])
            quality = self.meta["quality"]
            if not isinstance(quality, dict):
                raise TypeError(f"quality is a {type(quality).__name__}")
        except (KeyError, TypeError, ValueError) as err:
            raise self.damaged("world.json", f"a bad or missing field ({type(err).__name__}: {err})") from None
        self.policy_path: Path = self.path / "policy"
        self.verified: bool = "files" in self.meta
        if self.verified:
            check_sums(self.path, self.meta["files"])
        else:
            check_structure(self.path, self.expected_files())

    def __repr__(self) -> str:
        return f"World(path={str(self.path)!r}, seed={self.seed})"

    def damaged(self, file: str, reason: str) -> WorldDamagedError:
        """The error for this world's ``file`` (relative to its folder) being damaged."""
        return WorldDamagedError(self.path, file, reason)

    def expected_files(self) -> list[str]:
        """The files every build writes, relative to the folder (``files`` in ``world.json`` lists them all)."""
        return expected_files(self.meta, SPLITS)

    @cached_property
    def data(self) -> dict[str, list[Example]]:
        """The ``train``/``dev``/``test`` splits (all tasks, shuffled), read from ``data/*.jsonl``."""
        out = {}
        for split in SPLITS:
            try:
                out[split] = read_jsonl(self.path / "data" / f"{split}.jsonl")
            except (OSError, ValueError) as err:
                raise self.damaged(f"data/{split}.jsonl", " ".join(str(err).split())) from err
        return out

    @property
    def ood_kinds(self) -> list[str]:
        return list(self.meta["quality"])

    def registry_file(self, ood: str = "bias") -> Path:
        """The TOML registry of the RMs with out-of-domain behaviour ``ood`` (one of ``ood_kinds``)."""
        if ood not in self.meta["quality"]:
            raise ValueError(f"ood must be one of {self.ood_kinds}, got {ood!r}")
        return self.path / f"rms-{ood}.toml"

    def registry(self, ood: str = "bias", *, max_loaded: int = 3) -> RMRegistry:
        """An ``RMRegistry`` holding ``rm-a``, ``rm-b``, ``rm-c`` with behaviour ``ood``."""
        from laser_adapters.reward_models import RMRegistry

        file = self.registry_file(ood)
        try:
            return RMRegistry.from_file(file, max_loaded=max_loaded)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise self.damaged(file.name, " ".join(str(err).split())) from err

    def quality(self, ood: str = "bias") -> dict[str, dict[str, float]]:
        """Pairwise accuracy of each RM (rows) on each task (columns), measured at build time."""
        self.registry_file(ood)  # validates ood
        return {rm: dict(row) for rm, row in self.meta["quality"][ood].items()}

    def info(self) -> dict[str, Any]:
        """What ``laser world info`` prints: sizes, policy accuracy, RM quality matrices, timings."""
        keys = ("version", "seed", "path", "tasks", "rm_for_task", "sizes", "policy", "rm_base", "quality",
                "bias_agreement", "bias_rules", "rm_agreement", "rm_parameters", "timings", "torch_threads", "spec")
        return {k: (str(self.path) if k == "path" else self.meta.get(k)) for k in keys}




def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a finished world of this version (its ``world.json`` says so; the files are
    checked when :class:`World` opens it)."""
    meta = Path(path) / "world.json"
    if not meta.is_file():
        return False
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("complete")) and data.get("version") == WORLD_VERSION


def load_world(cache_dir: str | Path | None = None, *, seed: int = 0, build: bool = True,
               progress: bool = True, scale: float = 1.0) -> World:
    """The world for ``seed`` from the cache, built first when its folder is absent (unless ``build=False``).

    A folder that is there but does not hold a sound world raises :class:`WorldDamagedError`, never a
    rebuild: ``build_world(force=True)`` (``laser world build --force``) replaces it.
    """
    path = world_dir(cache_dir, seed, scale)
    if not path.exists():
        if not build:
            raise FileNotFoundError(f"no built world at {path}; run `laser world build` (or load_world(build=True))")
        return build_world(cache_dir, seed=seed, progress=progress, scale=scale)
    return _open_cached(path)


def _open_cached(path: Path) -> World:
    """The world in the cache folder ``path``, which exists; a build renames a whole world into place, so one
    without ``world.json`` or of another version is damaged."""
    if not (path / "world.json").is_file():
        raise WorldDamagedError(path, "world.json", "missing")
    world = World(path)
    if world.meta.get("version") != WORLD_VERSION:
        raise world.damaged("world.json", f"version {world.meta.get('version')!r} in a folder of version "
                                          f"{WORLD_VERSION}")
    return world


# ----------------------------------------------------------------------------------------------- build
class Laps:
    """Seconds per build stage: ``lap(name)`` records the time since the previous call (or since creation).

    >>> lap = Laps(); lap("data"); sorted(lap.summary())
    ['data', 'total']
    """

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._clock, 2)
        self._clock = now

    def summary(self) -> dict[str, float]:
        """Every stage's seconds and their ``total``."""
        return {**self.timings, "total": round(sum(self.timings.values()), 2)}


class _Progress:
    """One rich progress bar over every stage (or nothing)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self._bar: Any = None
        self._task: Any = None

    @contextmanager
    def running(self) -> Iterator[_Progress]:
        if not self.enabled:
            yield self
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]world[/bold] {task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn(),
                      transient=False) as bar:
            self._bar = bar
            self._task = bar.add_task("starting", total=self.total)
            yield self
        self._bar = None

    def stage(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


@contextmanager
def _quiet_torch(threads: int) -> Iterator[None]:
    """torch's thread count set to ``threads`` and transformers' own progress bars off, both restored."""
    import torch
    from transformers.utils import logging as hf_logging

    before, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if bars:
            hf_logging.enable_progress_bar()


def build_world(cache_dir: str | Path | None = None, *, seed: int = 0, progress: bool = True,
                scale: float = 1.0, spec: WorldSpec | None = None, threads: int = 1,
                force: bool = False) -> World:
    """Build the world for ``seed`` into ``cache_dir`` (default :func:`default_cache_dir`) and return it.

    ``threads`` is torch's thread count during the build (restored afterwards; ``world.json`` records it).
    Its results depend on the thread count, never on the machine's load or number of cores, so a seed and a
    thread count give the same files on the same kind of CPU with the same library versions (other CPUs or
    versions may round differently). One thread by default: on 2 CPU cores the full build takes about 3
    minutes with one and 1.7 with two on an idle machine, but two threads made SFT steps 8-16 times slower
    while other work kept the cores busy (measured). ``scale`` < 1 shrinks every size and step count (a quick world for
    tests; it lives in its own folder). An existing world is returned as is unless ``force``, which replaces
    it; a damaged one raises :class:`WorldDamagedError` without ``force``.
    """
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    spec = (spec or WorldSpec()).scaled(scale)
    target = world_dir(cache_dir, seed, scale)
    if target.exists() and not force:  # a damaged world raises: only force replaces it
        return _open_cached(target)
    build_in_place(target, lambda tmp: _build_into(tmp, seed=seed, spec=spec, progress=progress), threads=threads,
                   force=force, complete=is_complete)
    return _open_cached(target)


def build_in_place(target: Path, build_into: Callable[[Path], None], *, threads: int, force: bool,
                   complete: Callable[[Path], bool]) -> None:
    """Run ``build_into`` on a temporary sibling folder of ``target`` (torch on ``threads`` threads), then rename
    it into place, so an interrupted or failed build never leaves a folder that looks complete. When another
    process finished ``target`` first (``complete``), its folder is kept unless ``force``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-{os.getpid()}-", dir=target.parent))
    try:
        with _quiet_torch(threads):
            build_into(tmp)
        if target.exists():
            if complete(target) and not force:  # another process finished first: keep its folder
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_abandoned(target: Path) -> None:
    """Delete temporary build folders for ``target`` left by processes that no longer run (killed builds)."""
    for folder in target.parent.glob(f".{target.name}.building-*"):
        pid_text = folder.name.rsplit(".building-", 1)[1].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except (ProcessLookupError, OverflowError):
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            continue


def _build_into(out: Path, *, seed: int, spec: WorldSpec, progress: bool) -> None:
    import numpy as np
    import torch

    from laser_adapters.reward_models import RMRegistry
    from laser_app.world.policy_model import (
        accuracy_by_task,
        count_parameters,
        generate,
        mixed_batches,
        new_policy,
        rows_of,
        sft,
    )
    from laser_app.world.quality import (
        bias_agreement,
        by_task,
        eval_candidates,
        pairwise_agreement,
        preferences,
    )
    from laser_app.world.specialists import (
        Candidate,
        RMTrainingPair,
        label_pairs,
        make_candidates,
        near_miss,
        new_reward_model,
        train_reward_model,
    )

    lap = Laps()

    policy_spec = spec.policy

    def stage_two(ood: str) -> RMTrainSpec:
        return spec.weak_rm if ood == "weak" else spec.rm

    bar = _Progress(progress, total=policy_spec.steps + sum(v.steps for v in spec.verifiers) + spec.generalist.steps
                    + len(TASKS) * sum(stage_two(ood).steps for ood in OOD_KINDS) + 2)
    gen_kw: dict[str, Any] = dict(temperature=spec.temperature, max_new_tokens=spec.max_new_tokens)

    with bar.running():
        bar.stage("tasks")
        sizes: dict[str, Any] = {"test": spec.n_test, "dev": spec.n_dev, "train": spec.n_train,
                                 "rm": spec.n_rm, "sft": dict(zip(TASKS, spec.n_sft, strict=True))}
        splits = make_splits(seed, sizes)
        for split in SPLITS:
            write_jsonl(splits[split], out / "data" / f"{split}.jsonl")
        lap("tasks")

        bar.stage("SFT")
        model, tok = new_policy(policy_spec, seed=seed)
        snapshot: dict[str, torch.Tensor] = {}
        curve: dict[int, dict[str, float]] = {}

        def on_step(step: int) -> None:
            bar.advance()
            if step == spec.policy_step:
                snapshot.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            if step in spec.curve_steps:  # dev accuracy around the checkpoint: why this step
                curve[step] = accuracy_by_task(model, tok, splits["dev"], max_new_tokens=spec.max_new_tokens)
                model.train()

        sft(model, tok, mixed_batches(rows_of(splits["sft"]), policy_spec.batch_size, seed=seed), policy_spec,
            on_step=on_step)
        base = model
        policy, _ = new_policy(policy_spec, seed=seed)
        policy.load_state_dict(snapshot)
        policy.eval()
        policy.generation_config.pad_token_id = tok.pad_token_id
        policy.save_pretrained(out / "policy")
        tok.save_pretrained(out / "policy")
        lap("sft")

        bar.stage("sampling")
        rm_examples, dev, test = splits["rm"], splits["dev"], splits["test"]
        rm_samples = generate(policy, tok, [e.prompt for e in rm_examples], n=spec.rm_samples,
                              seed=seed + 1, **gen_kw)
        dev_samples = generate(policy, tok, [e.prompt for e in dev], n=spec.eval_samples, seed=seed + 2,
                               **gen_kw)
        policy_info = {
            "parameters": count_parameters(policy),
            "checkpoint_step": spec.policy_step,
            "sft_dev_curve": {str(k): v for k, v in sorted(curve.items())},
            "greedy_test": accuracy_by_task(policy, tok, test, max_new_tokens=spec.max_new_tokens),
            "greedy_dev": accuracy_by_task(policy, tok, dev, max_new_tokens=spec.max_new_tokens),
            "sampled_test": accuracy_by_task(policy, tok, test, n=4, seed=seed + 3, **gen_kw),
        }
        base_info = {"sft_steps": policy_spec.steps,
                     "greedy_test": accuracy_by_task(base, tok, test, max_new_tokens=spec.max_new_tokens)}
        bar.advance()
        lap("sampling_and_policy_eval")

        rng = np.random.default_rng([seed, 2024])
        sampled = make_candidates(rm_examples, rm_samples, distractor_share=spec.distractor_share, rng=rng)
        synthetic = [Candidate(e.prompt, e.task, e.response, near_miss(e, rng)) for e in splits["sft"]]
        candidates = sampled + [c for c, e in zip(synthetic, splits["sft"], strict=True)
                                if e.answer is not None and not _right(e.task, c.wrong, e.answer)]
        rm_params = 0
        verifiers: dict[str, dict[str, torch.Tensor]] = {}
        for t_index, task in enumerate(TASKS):
            bar.stage(f"verifier for {task}")
            own = [RMTrainingPair(c.prompt, c.correct, c.wrong, c.task) for c in candidates if c.task == task]
            rm = new_reward_model(base, seed=seed + t_index)
            train_reward_model(rm, tok, own, task, spec.verifiers[t_index], seed=seed + t_index,
                               progress=bar.advance)
            verifiers[task] = {k: v.detach().clone() for k, v in rm.state_dict().items()}
        lap("verifiers")

        # the "weak" RMs' first stage: the slowest domain's verifier, trained on every domain
        bar.stage("generalist verifier")
        slowest = max(range(len(TASKS)), key=lambda i: spec.verifiers[i].steps)
        rm = new_reward_model(base, seed=seed + len(TASKS))
        rm.load_state_dict(verifiers[TASKS[slowest]])
        every = [RMTrainingPair(c.prompt, c.correct, c.wrong, c.task) for c in candidates]
        train_reward_model(rm, tok, every, None, spec.generalist, seed=seed + len(TASKS), progress=bar.advance)
        generalist = {k: v.detach().clone() for k, v in rm.state_dict().items()}
        lap("generalist")

        for v_index, ood in enumerate(OOD_KINDS):
            lines = []
            for t_index, (task, name) in enumerate(RM_FOR_TASK.items()):
                bar.stage(f"reward model {name} ({ood})")
                rm_seed = seed + 10 * (v_index + 1) + t_index
                pairs = label_pairs(candidates, home=task, ood=ood, rng=np.random.default_rng([seed, 77, rm_seed]))
                rm = new_reward_model(base, seed=rm_seed)
                rm.load_state_dict(generalist if ood == "weak" else verifiers[task])
                train_reward_model(rm, tok, pairs, task, stage_two(ood), seed=rm_seed, progress=bar.advance)
                rm_params = count_parameters(rm)
                rm.save_pretrained(out / "rms" / ood / name)
                tok.save_pretrained(out / "rms" / ood / name)
                lines.append(f'[rms.{name}]\nkind = "classifier"\nmodel = "./rms/{ood}/{name}"\n'
                             f'options = {{ batch_size = 64, max_length = 128 }}\n')
            (out / f"rms-{ood}.toml").write_text(
                f"# built-in reward models, out-of-domain behaviour '{ood}'\n\n" + "\n".join(lines),
                encoding="utf-8")
        lap("reward_models")

        bar.stage("RM quality")
        held_out = eval_candidates(dev, dev_samples)
        quality: dict[str, dict[str, dict[str, float]]] = {}
        agreement: dict[str, dict[str, dict[str, float]]] = {}
        rules: dict[str, dict[str, dict[str, str]]] = {}
        rm_agreement: dict[str, dict[str, dict[str, float]]] = {}
        for ood in OOD_KINDS:
            registry = RMRegistry.from_file(out / f"rms-{ood}.toml", max_loaded=1)
            prefs = {}
            quality[ood] = {}
            if ood != "weak":  # the weak RMs follow no rule; the others are measured against theirs
                agreement[ood], rules[ood] = {}, {}
            for task, name in RM_FOR_TASK.items():
                scorer = registry.get(name)
                prefs[name] = preferences(scorer.score, held_out)
                quality[ood][name] = by_task(prefs[name], held_out)
                if ood in rules:
                    signs = {t: rule_sign(ood, name, t) for t in TASKS if t != task}
                    agreement[ood][name] = {t: v for t, v in bias_agreement(scorer.score, held_out, signs=signs).items()
                                            if t != task}
                    rules[ood][name] = {t: rule_name(ood, name, t) for t in signs}
            rm_agreement[ood] = pairwise_agreement(prefs, held_out)
        bar.advance()
        bar.stage("done")
        lap("rm_quality")

    per_task: dict[str, int] = {}
    for c in held_out:
        per_task[c.task] = per_task.get(c.task, 0) + 1
    files = file_sums(out)  # what World checks on each load; everything but world.json is written by now
    meta = {
        "version": WORLD_VERSION,
        "complete": True,
        "seed": seed,
        "tasks": list(TASKS),
        "rm_for_task": dict(RM_FOR_TASK),
        "stop": STOP,
        "max_new_tokens": spec.max_new_tokens,
        "temperature": spec.temperature,
        "sizes": {"per_task": sizes, "quality_pairs": per_task, "rm_training_candidates": len(candidates)},
        "policy": policy_info,
        "rm_base": base_info,
        "rm_parameters": rm_params,
        "quality": quality,
        "bias_agreement": agreement,
        "bias_rules": rules,
        "rm_agreement": rm_agreement,
        "timings": lap.summary(),
        "torch_threads": torch.get_num_threads(),
        "spec": spec.to_dict(),
        "files": files,
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _right(task: str, response: str, answer: str) -> bool:
    from laser_app.world.tasks import check_answer

    return check_answer(task, response, answer)
