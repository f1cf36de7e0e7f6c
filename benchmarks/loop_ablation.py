"""The LASeR loop ablation's grid and one case's runs: bandit policies x exploration values x RM modes.

A *case* is one method (a bandit policy at one exploration value, or a method that reads labels) under one
out-of-domain mode of the built-in RMs; it runs reduced built-in-world runs for each seed through ``laser
compare``'s planner and worker processes, with ``--diagnostics`` on so each step logs the reward every RM
would have earned (the regret against the oracle routing). :func:`run_case` returns the case's summary,
which the benchmark stores in ``extra_info`` and ``benchmarks.report`` tabulates.

Accuracy is on the dev split (where settings are chosen); the test split is not read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from laser_app.compare import execute_runs, parse_method, plan_runs
from laser_app.events import STEP_PARTS
from laser_app.run_dir import METRICS

#: Exploration values per bandit policy: (setting, values); ``None``: the policy has no exploration setting.
EXPLORATION: dict[str, tuple[str, tuple[float, ...]] | None] = {
    "linucb": ("alpha", (0.0, 0.01, 0.1, 0.5, 1.0, 2.0)),
    "lints": ("alpha", (0.0, 0.01, 0.1, 0.5, 1.0, 2.0)),
    "thompson": None,
    "exp3": ("mixing", (0.01, 0.1, 0.3)),
    "egreedy": ("epsilon", (0.01, 0.1, 0.3)),
    "ucb1": ("ucb_c", (0.1, 1.0, 2.0)),
}
#: Methods run once per mode: those that read labels (a few dev prompts, or every training answer), the
#: label-free agreement estimate, and the references (random routing; the oracle, the routing regret is
#: measured against).
REFERENCES = ("agree-estimate", "prior-router", "laser-dev", "laser-gold", "random", "oracle")
#: The built-in RMs' out-of-domain modes; ``weak`` and ``indep-bias`` leave the right RM identifiable.
MODES = ("weak", "indep-bias", "bias", "noise")
INFORMATIVE_MODES = ("weak", "indep-bias")
#: Contextual policies: they should route above chance at their best exploration value.
CONTEXTUAL = ("linucb", "lints")
SEEDS = (0, 1)
#: Run sizes of the full grid and of ``--quick`` (RunConfig settings shared by every run).
FULL = {"iterations": 2, "batches_per_iteration": 15, "eval_size": 25, "diagnostics": True}
QUICK = {"iterations": 1, "batches_per_iteration": 10, "eval_size": 10, "diagnostics": True}
QUICK_CASES = ("linucb[alpha=0.1]", "linucb[alpha=1.0]", "egreedy[epsilon=0.1]", "random", "oracle")
QUICK_MODES = ("weak",)


@dataclass(frozen=True)
class Case:
    """One method under one RM mode; ``setting``/``value`` its exploration value (``None`` for none)."""

    method: str
    mode: str
    policy: str
    setting: str | None = None
    value: float | None = None

    @property
    def id(self) -> str:
        """The pytest id: ``linucb[alpha=0.1]-weak``."""
        return f"{self.method}-{self.mode}"


def _format(value: float) -> str:
    return repr(float(value))


def cases(quick: bool = False) -> list[Case]:
    """Every case of the grid (``quick``: the CI-sized subset), modes outermost.

    >>> [c.id for c in cases(quick=True)][:2]
    ['linucb[alpha=0.1]-weak', 'linucb[alpha=1.0]-weak']
    >>> len(cases())
    112
    """
    methods: list[tuple[str, str, str | None, float | None]] = []
    for policy, grid in EXPLORATION.items():
        if grid is None:
            methods.append((policy, policy, None, None))
            continue
        setting, values = grid
        methods += [(f"{policy}[{setting}={_format(v)}]", policy, setting, v) for v in values]
    methods += [(name, name, None, None) for name in REFERENCES]
    if quick:
        methods = [m for m in methods if m[0] in QUICK_CASES]
    modes = QUICK_MODES if quick else MODES
    return [Case(name, mode, policy, setting, value) for mode in modes for name, policy, setting, value in methods]


def run_case(case: Case, root: Path, *, sizes: Mapping[str, Any], seeds: Sequence[int] = SEEDS,
             world_scale: float = 1.0, jobs: int = 2) -> dict[str, Any]:
    """Run ``case`` for each seed (in ``jobs`` worker processes) under ``root``; its summary
    (:func:`summarize_case`). Raises ``RuntimeError`` naming the failed runs' errors."""
    shared = {**sizes, "world_scale": world_scale}
    runs = plan_runs([parse_method(case.method)], shared, seeds=len(seeds), oods=[case.mode], root=root)
    runs = [r for r in runs if r.seed in seeds]
    outcomes = execute_runs(runs, jobs=jobs)
    failed = {r.path: outcomes.get(r.key, {}).get("error") for r in runs
              if outcomes.get(r.key, {}).get("status") != "complete"}
    if failed:
        raise RuntimeError(f"{case.id}: runs failed: {failed}")
    per_seed = [seed_summary(r.path) for r in runs]
    return summarize_case(case, per_seed)


def seed_summary(run_dir: Path) -> dict[str, Any]:
    """What one run contributes: dev accuracy per domain before and after, in-domain share, lock-ins, the
    bandit reward's mean, the regret against the oracle routing and seconds per step by part."""
    m = json.loads((run_dir / METRICS).read_text())
    dev = m["accuracy"]["dev"]
    rewards = [r["raw"] for r in m["reward"]["per_iteration"] if r.get("raw") is not None]
    regret = m.get("oracle_regret") or {}
    return {
        "accuracy": dict(dev[-1]), "accuracy_start": dict(dev[0]),
        "in_domain_share": (m.get("in_domain_share") or {}).get("mean"),
        "lock_ins": len((m.get("lock_in") or {}).get("locked", [])),
        "reward_mean": float(np.mean(rewards)) if rewards else None,
        "regret": regret.get("total"), "regret_per_step": regret.get("per_step"),
        "seconds_per_step": {k: m["timings"]["per_step"].get(k) for k in STEP_PARTS},
        "steps": m["steps"],
    }


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize_case(case: Case, per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The case's ``extra_info``: means over seeds (accuracy per domain and mean, in-domain share, lock-ins
    summed, reward, regret, seconds per step by part) and the per-seed values."""
    domains = list(per_seed[0]["accuracy"])
    return {
        "method": case.method, "policy": case.policy, "setting": case.setting, "value": case.value,
        "mode": case.mode, "seeds": len(per_seed), "split": "dev",
        "accuracy": {d: _mean([s["accuracy"][d] for s in per_seed]) for d in domains},
        "accuracy_start": {d: _mean([s["accuracy_start"][d] for s in per_seed]) for d in domains},
        "in_domain_share": _mean([s["in_domain_share"] for s in per_seed]),
        "lock_ins": int(sum(s["lock_ins"] for s in per_seed)),
        "reward_mean": _mean([s["reward_mean"] for s in per_seed]),
        "regret": _mean([s["regret"] for s in per_seed]),
        "regret_per_step": _mean([s["regret_per_step"] for s in per_seed]),
        "seconds_per_step": {k: _mean([s["seconds_per_step"].get(k) for s in per_seed]) for k in STEP_PARTS},
        "per_seed": list(per_seed),
    }


def check_summary(info: Mapping[str, Any]) -> list[str]:
    """What is wrong with a case's summary (empty when nothing): every accuracy a finite share, the in-domain
    share a share where the method routes, the regret finite where measured, step times non-negative.

    >>> check_summary({"accuracy": {"mean": 0.5}, "in_domain_share": 1.5, "regret": None,
    ...                "seconds_per_step": {"train": 0.1}, "lock_ins": 0})
    ['in-domain share 1.5 is not in [0, 1]']
    """
    problems = [f"accuracy {d} {v!r} is not a share" for d, v in info["accuracy"].items()
                if v is None or not 0 <= v <= 1]
    share = info.get("in_domain_share")
    if share is not None and not 0 <= share <= 1:
        problems.append(f"in-domain share {share} is not in [0, 1]")
    for key in ("regret", "reward_mean"):
        value = info.get(key)
        if value is not None and not math.isfinite(value):
            problems.append(f"{key} {value} is not finite")
    problems += [f"seconds per step {k} = {v}" for k, v in info["seconds_per_step"].items()
                 if v is not None and not (math.isfinite(v) and v >= 0)]
    if info["lock_ins"] < 0:
        problems.append(f"lock_ins {info['lock_ins']} < 0")
    return problems
