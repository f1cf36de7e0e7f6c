"""What a comparison runs: the settings every run shares, each method's config, the RMs and ood kinds in
use, and the planned runs with their folders (reused when complete, refused when made otherwise).

>>> from laser_app.compare.methods import parse_methods
>>> runs = plan_runs(parse_methods("random,laser"), {}, seeds=2, oods=["bias"], root=Path("cmp"))
>>> [(r.method, r.world_seed, r.seed, r.path.as_posix()) for r in runs][:2]
[('random', 0, 0, 'cmp/runs/bias/world0/random/seed0'), ('laser', 0, 0, 'cmp/runs/bias/world0/laser/seed0')]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import ValidationError

from laser_app.compare.methods import RESERVED_FIELDS, Method, MethodError, check_setting
from laser_app.config import RunConfig, format_validation_error, load_config_file, resolve_mab_reward
from laser_app.errors import LaserError, RunDirError
from laser_app.run_dir import CONFIG, METRICS, RESOLVED, RunDir, read_json
from laser_app.world import OOD_KINDS, world_for

if TYPE_CHECKING:
    from laser_app.world import World


class SharedSettings(NamedTuple):
    """What :func:`shared_settings` returns."""

    values: dict[str, Any]
    dropped: list[str]
    ood: str | None


def shared_settings(config_file: str | Path | None, overrides: Mapping[str, Any]) -> SharedSettings:
    """The settings every run shares: ``--config`` file values overridden by flags. The file's ``policy``,
    ``seed``, ``out`` and ``overwrite`` are dropped (compare sets them per run; their names are returned)
    and its ``ood``, if any, is returned apart (compare's ``--ood`` default).

    >>> shared_settings(None, {"iterations": "2", "batch-size": 4}).values
    {'iterations': '2', 'batch_size': 4}
    """
    values = load_config_file(config_file) if config_file is not None else {}
    ood = values.pop("ood", None)
    dropped = sorted(k for k in values if k in RESERVED_FIELDS)
    values = {k: v for k, v in values.items() if k not in RESERVED_FIELDS}
    for key, value in overrides.items():
        if value is not None:
            values[check_setting(key, "compare")] = value
    return SharedSettings(values, dropped, None if ood is None else str(ood))


def base_config(shared: Mapping[str, Any]) -> RunConfig:
    """The shared settings as a RunConfig (checked: unknown, reserved or bad values raise one line each).

    >>> base_config({"iterations": 2}).iterations
    2
    """
    for key in shared:
        check_setting(key, "compare")
    try:
        return RunConfig.model_validate(dict(shared))
    except ValidationError as err:
        raise MethodError(["invalid configuration: " + line
                           for line in format_validation_error(err)]) from None


def method_config(method: Method, shared: Mapping[str, Any], **per_run: Any) -> RunConfig:
    """One run's RunConfig: ``method``'s settings over the shared ones, ``per_run`` over both."""
    return RunConfig.model_validate({**shared, **method.settings, **per_run})


def check_method_configs(methods: Sequence[Method], shared: Mapping[str, Any],
                         rm_names: Sequence[str]) -> None:
    """Validate every method's settings before anything runs: one error line per field and method."""
    try:
        RunConfig.model_validate(dict(shared))
    except ValidationError as err:
        raise MethodError(["invalid configuration: " + line
                           for line in format_validation_error(err)]) from None
    lines: list[str] = []
    for m in methods:
        if m.is_sft:
            continue
        fixed = m.base[len("fixed:"):] if m.base.startswith("fixed:") else None
        if fixed is not None and fixed not in rm_names:
            lines.append(f"method {m.label}: RM {fixed!r} is not among the RMs in use; valid names: "
                         f"{', '.join(rm_names)}")
            continue
        try:
            method_config(m, shared)
        except ValidationError as err:
            lines += [f"method {m.label}: {line}" for line in format_validation_error(err)]
    if lines:
        raise MethodError(lines)


def parse_oods(text: str | Sequence[str] | None) -> list[str] | None:
    """``--ood bias,noise`` as a list (``None`` when not given).

    >>> parse_oods("noise, bias")
    ['noise', 'bias']
    """
    if text is None:
        return None
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    bad = [s for s in items if s not in OOD_KINDS]
    if bad or not items:
        raise LaserError(f"--ood {text!r}: unknown kind {', '.join(map(repr, bad)) or '(none)'}; valid: "
                         f"{', '.join(OOD_KINDS)} (comma-separated)")
    return list(dict.fromkeys(items))


def compare_world(cfg: RunConfig, *, progress: bool) -> World | None:
    """The built-in world the shared settings ``cfg`` name (its cache folder, seed and scale), when a run
    needs it for its model, data or RMs; else ``None``.

    >>> compare_world(RunConfig(model="m", data="d.jsonl", rm_registry="rms.toml"), progress=False) is None
    True
    """
    if cfg.model is None or cfg.data is None or cfg.rm_registry is None:
        return world_for(cfg, progress=progress)
    return None


def rm_names_for(cfg: RunConfig, world: World | None) -> list[str]:
    """The RMs the runs use: ``rms``, else every RM in ``rm_registry``, else the built-in world's.

    >>> rm_names_for(RunConfig(rms="rm-a,rm-b"), None)
    ['rm-a', 'rm-b']
    """
    if cfg.rms is not None:
        return list(cfg.rms)
    if cfg.rm_registry is not None:  # read as laser run reads it: the same one-line errors
        from laser_app.rms import load_registry

        return list(load_registry(cfg, world).names)
    if world is None:
        raise LaserError("no RMs to compare: pass --rms, --rm-registry, or use the built-in world")
    return list(world.registry(ood=cfg.ood).names)


def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config dump without the settings that do not change a run (``out``, ``overwrite``), with every
    setting it does not hold at its default (a run from before that setting existed ran with the default).

    >>> comparable({"iterations": 2, "out": "a"})["iterations"], comparable({})["iterations"]
    (2, 3)
    """
    defaults = RunConfig.model_validate({}).model_dump(mode="json")
    return {k: v for k, v in {**defaults, **config}.items() if k not in ("out", "overwrite")}


def effective_config(config: Mapping[str, Any], resolved_reward: str | None) -> dict[str, Any]:
    """A config dump with ``mab_reward="auto"`` replaced by the reward it resolved to, so that a change of the
    ``auto`` default is a change of settings.

    >>> effective_config({"mab_reward": "auto"}, "dpo+nll"), effective_config({"mab_reward": "gold"}, None)
    ({'mab_reward': 'dpo+nll'}, {'mab_reward': 'gold'})
    """
    if config.get("mab_reward") == "auto" and resolved_reward is not None:
        return {**config, "mab_reward": resolved_reward}
    return dict(config)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The settings that differ between two config dumps (``out`` and ``overwrite`` ignored).

    >>> config_diff({"iterations": 2, "out": "a"}, {"iterations": 3, "out": "b"})
    ['iterations: 2 -> 3']
    """
    a, b = comparable(old), comparable(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}".replace("'", "") for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


#: A run's key: ``(ood, world seed, method, seed)``.
RunKey = tuple[str, int, str, int]


@dataclass
class PlannedRun:
    """One run of one method for one ood kind, world seed and run seed; ``shares`` names the method whose
    identical run (same settings) it reuses."""

    ood: str
    method: str
    seed: int
    path: Path
    config: RunConfig
    shares: str | None = None
    world_seed: int = 0

    @property
    def key(self) -> RunKey:
        """``(ood, world seed, method, seed)``: the run's key in outcomes."""
        return self.ood, self.world_seed, self.method, self.seed

    def describe(self, show_ood: bool, show_world: bool = False) -> str:
        """``method seed k`` (with the world seed when ``show_world``, the ood kind when ``show_ood``), for
        progress and messages."""
        world = f" world {self.world_seed}" if show_world else ""
        return f"{self.method}{world} seed {self.seed}" + (f" ({self.ood})" if show_ood else "")


def parse_world_seeds(text: str | Sequence[int] | None) -> list[int] | None:
    """``--world-seeds 0,1`` as a list (``None`` when not given).

    >>> parse_world_seeds("0, 1"), parse_world_seeds(None)
    ([0, 1], None)
    """
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s) for s in text]
    bad = [s for s in items if not s.isdigit()]
    if bad or not items:
        raise LaserError(f"--world-seeds {text!r}: expected integers >= 0 separated by commas (e.g. 0,1), "
                         f"got {', '.join(map(repr, bad)) or 'nothing'}")
    return list(dict.fromkeys(int(s) for s in items))


def plan_runs(methods: Sequence[Method], shared: Mapping[str, Any], *, seeds: int, oods: Sequence[str],
              root: Path, world_seeds: Sequence[int] | None = None) -> list[PlannedRun]:
    """Every run to do, ordered ood -> world seed -> seed -> method, so a partial compare has whole units.
    ``world_seeds`` default to the shared settings' ``world_seed``."""
    plans: list[PlannedRun] = []
    worlds = list(world_seeds) if world_seeds is not None else [base_config(shared).world_seed]
    for ood in oods:
        for world in worlds:
            for seed in range(seeds):
                seen: dict[str, PlannedRun] = {}
                for m in methods:
                    if m.is_sft:
                        continue
                    path = root / "runs" / ood / f"world{world}" / m.slug / f"seed{seed}"
                    cfg = method_config(m, shared, seed=seed, ood=ood, world_seed=world, out=path, overwrite=True)
                    key = json.dumps(comparable(cfg.model_dump(mode="json")), sort_keys=True)
                    first = seen.get(key)
                    if first is not None:
                        plans.append(PlannedRun(ood, m.label, seed, first.path, first.config,
                                                shares=first.method, world_seed=world))
                        continue
                    seen[key] = run = PlannedRun(ood, m.label, seed, path, cfg, world_seed=world)
                    plans.append(run)
    return plans


def run_state(run: PlannedRun) -> str:
    """``complete`` (reusable), ``resumable`` (stopped with a checkpoint, made with the same settings: it
    continues from there), ``pending`` (missing, or stopped otherwise: it runs from the start) or raises when
    the folder holds a complete run made with other settings, or something that is not a run folder."""
    path = run.path
    if not path.exists():
        return "pending"
    try:
        status = RunDir.open(path).status()
    except RunDirError:
        if path.is_dir() and not any(path.iterdir()):
            return "pending"
        raise RunDirError(f"{path} exists but is not a run folder; move it away or choose another "
                          "--out") from None
    if status["state"] != "complete" or not (path / METRICS).is_file():
        return "resumable" if _resumable(run) else "pending"
    old = read_json(path / CONFIG) if (path / CONFIG).is_file() else {}
    resolved = read_json(path / RESOLVED) if (path / RESOLVED).is_file() else {}
    diff = config_diff(effective_config(old, resolved.get("mab_reward")),
                       resolve_mab_reward(run.config).model_dump(mode="json"))
    if diff:
        raise RunDirError(f"run folder {path} was made with other settings ({'; '.join(diff[:5])}); pass "
                          "--rerun to replace the compare's runs, or choose another --out")
    return "complete"


def _resumable(run: PlannedRun) -> bool:
    """Whether the unfinished run in ``run.path`` can continue: it stopped (not still running), left a
    checkpoint and was started with the settings planned now."""
    from laser_app.checkpoint import find_checkpoint  # imports torch: only for an unfinished run

    folder = RunDir(run.path)
    try:
        state, old = folder.state(), folder.config()
    except RunDirError:
        return False
    return (state in ("failed", "interrupted", "crashed") and bool(old) and find_checkpoint(run.path) is not None
            and not config_diff(old, run.config.model_dump(mode="json")))
