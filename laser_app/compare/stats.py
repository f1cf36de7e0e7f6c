"""The numbers of a comparison: one record per run from its ``metrics.json``, and the summary per ood kind
(accuracy mean and std over seeds, paired t-tests against the reference, time, in-domain share).

>>> [round(x, 4) for x in mean_std([0.5, 0.7])]
[0.6, 0.1414]
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from laser_app.compare.methods import SFT
from laser_app.errors import LaserError

#: Parts of a step (:data:`laser_app.events.STEP_PARTS`) left out of the training loop's time: extra work
#: a run can turn off.
UNTIMED_PARTS = ("diagnostics",)


def record_from_metrics(metrics: Mapping[str, Any], *, ood: str, method: str, seed: int, split: str | None,
                        run_dir: str | None = None) -> dict[str, Any]:
    """One run's row: final and before-training accuracy on ``split`` (default: test, else the first),
    in-domain share and lock-in per domain (last iteration), and timings.

    >>> m = {"accuracy": {"test": [{"math": 0.5, "mean": 0.5}, {"math": 0.7, "mean": 0.7}]},
    ...      "in_domain_share": None, "lock_in": None, "steps": 4,
    ...      "timings": {"total": 9.0,
    ...                  "per_step": {"generate": 1.0, "score": 0.5, "train": 0.4, "select": 0.1}}}
    >>> r = record_from_metrics(m, ood="bias", method="random", seed=0, split=None)
    >>> r["accuracy"], r["before"], r["timings"]["loop"]
    ({'math': 0.7, 'mean': 0.7}, {'math': 0.5, 'mean': 0.5}, 8.0)
    """
    acc = metrics.get("accuracy") or {}
    if not acc:
        raise LaserError(f"run {run_dir or method} recorded no accuracy; compare needs evaluation data "
                         "(the built-in dev/test splits, or --eval-data FILE)")
    chosen = split or ("test" if "test" in acc else next(iter(acc)))
    if chosen not in acc:
        raise LaserError(f"--split {chosen!r}: the runs evaluated on {', '.join(acc)}; pick one of those")
    series = acc[chosen]
    t = metrics.get("timings") or {}
    per_step = {k: v for k, v in (t.get("per_step") or {}).items() if v is not None}
    steps = int(metrics.get("steps") or 0)
    in_domain = metrics.get("in_domain_share")
    lock = metrics.get("lock_in")
    return {
        "ood": ood, "method": method, "seed": int(seed), "split": chosen, "run_dir": run_dir,
        "accuracy": dict(series[-1]), "before": dict(series[0]), "iterations": len(series) - 1,
        "skipped_steps": metrics.get("skipped_steps"),
        "in_domain_share": dict(in_domain["per_task"]) if in_domain else None,
        "lock_in": {k: bool(v) for k, v in lock["per_task"].items()} if lock else None,
        "timings": {"total": t.get("total"), "setup": t.get("setup"), "eval": t.get("eval"),
                    "loop": sum(v for k, v in per_step.items() if k not in UNTIMED_PARTS) * steps,
                    "steps": steps, "per_step": per_step, "bandit_share": t.get("bandit_share_of_step")},
    }


def sft_records(records: Sequence[Mapping[str, Any]], reference: str | None = None) -> list[dict[str, Any]]:
    """The starting policy's rows: per (ood, seed), the before-training accuracy of the reference method's
    run (else the first run of that seed), which every method's run shares."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r["method"] != reference):
        key = (r["ood"], int(r["seed"]))
        if key not in out:
            out[key] = {"ood": r["ood"], "method": SFT, "seed": int(r["seed"]), "split": r.get("split"),
                        "run_dir": None, "accuracy": dict(r["before"]), "before": dict(r["before"]),
                        "iterations": 0, "in_domain_share": None, "lock_in": None, "timings": None,
                        "source": r["method"]}
    return list(out.values())


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; ``None`` below two values).

    >>> [round(x, 4) for x in mean_std([0.5, 0.7])]
    [0.6, 0.1414]
    >>> mean_std([0.5])
    (0.5, None)
    """
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return None, None
    mean = float(np.mean(vals))
    return round(mean, 12), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def paired_test(reference: Mapping[Any, float], other: Mapping[Any, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both have: mean difference (reference - other), per-seed wins,
    ties and losses of the reference, and ``scipy.stats.ttest_rel`` (two-sided; ``None`` when undefined).

    >>> r = paired_test({0: 0.60, 1: 0.70, 2: 0.65}, {0: 0.55, 1: 0.62, 2: 0.66})
    >>> r["n"], r["wins"], r["ties"], r["losses"], round(r["mean_diff"], 3), round(r["p"], 3)
    (3, 2, 0, 1, 0.04, 0.27)
    """
    from scipy import stats

    seeds = sorted(set(reference) & set(other), key=str)
    a = np.array([reference[s] for s in seeds], dtype=np.float64)
    b = np.array([other[s] for s in seeds], dtype=np.float64)
    diff = a - b
    t = p = None
    if len(seeds) >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = stats.ttest_rel(a, b)
        t, p = _finite(res.statistic), _finite(res.pvalue)
    eps = 1e-12
    return {"n": len(seeds), "mean_diff": float(diff.mean()) if len(seeds) else None,
            "wins": int((diff > eps).sum()), "ties": int((np.abs(diff) <= eps).sum()),
            "losses": int((diff < -eps).sum()), "t": t, "p": p}


def summarize(records: Sequence[Mapping[str, Any]], *, methods: Sequence[str], reference: str | None,
              learners: Collection[str] = ()) -> dict[str, Any]:
    """The comparison per ood kind, from run records (:func:`record_from_metrics`); ``sft`` in ``methods``
    gets its rows from the runs' before-training accuracy. ``learners`` are the LASeR variants (their
    in-domain share and lock-ins are reported).

    >>> runs = [("laser", 0, 0.7), ("laser", 1, 0.8), ("random", 0, 0.6), ("random", 1, 0.6)]
    >>> recs = [record_from_metrics({"accuracy": {"test": [{"a": 0.5, "mean": 0.5}, {"a": acc, "mean": acc}]},
    ...                              "timings": {"total": 10.0}}, ood="bias", method=m, seed=s, split=None)
    ...         for m, s, acc in runs]
    >>> out = summarize(recs, methods=["sft", "laser", "random"], reference="laser")["bias"]
    >>> out["accuracy"]["sft"]["mean"]["mean"], out["paired"]["random"]["wins"], out["paired"]["sft"]["n"]
    (0.5, 2, 2)
    """
    rows = [dict(r) for r in records if r["method"] in methods and r["method"] != SFT]
    if SFT in methods:
        rows += sft_records(rows, reference)
    out: dict[str, Any] = {}
    for ood in dict.fromkeys(r["ood"] for r in rows):
        here = [r for r in rows if r["ood"] == ood]
        domains = sorted({d for r in here for d in r["accuracy"] if d != "mean"})
        present = [m for m in methods if any(r["method"] == m for r in here)]
        by_method = {m: sorted((r for r in here if r["method"] == m), key=lambda r: r["seed"])
                     for m in present}
        out[ood] = {
            "split": here[0].get("split"),
            "domains": domains,
            "methods": present,
            "seeds": sorted({int(r["seed"]) for r in here}),
            "reference": reference if reference in present else None,
            "accuracy": {m: _accuracy_summary(rs, domains) for m, rs in by_method.items()},
            "paired": _paired(by_method, reference),
            "time": _time_summary(by_method, reference),
            "in_domain": {m: _in_domain_summary(rs, domains) for m, rs in by_method.items()
                          if m in learners and any(r.get("in_domain_share") for r in rs)},
        }
    return out


def _accuracy_summary(rows: Sequence[Mapping[str, Any]], domains: Sequence[str]) -> dict[str, Any]:
    per_seed = {str(r["seed"]): dict(r["accuracy"]) for r in rows}
    mean, std = {}, {}
    for d in [*domains, "mean"]:
        mean[d], std[d] = mean_std([r["accuracy"][d] for r in rows if r["accuracy"].get(d) is not None])
    return {"n": len(rows), "mean": mean, "std": std, "per_seed": per_seed}


def _paired(by_method: Mapping[str, Sequence[Mapping[str, Any]]], reference: str | None) -> dict[str, Any]:
    if reference is None or reference not in by_method:
        return {}
    ref = {r["seed"]: r["accuracy"]["mean"] for r in by_method[reference]}
    return {m: {**paired_test(ref, {r["seed"]: r["accuracy"]["mean"] for r in rs}), "reference": reference}
            for m, rs in by_method.items() if m != reference}


def _time_summary(by_method: Mapping[str, Sequence[Mapping[str, Any]]],
                  reference: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m, rs in by_method.items():
        timed = [r["timings"] for r in rs if r.get("timings")]
        if not timed:
            continue
        wall, wall_std = mean_std([t["total"] for t in timed if t.get("total") is not None])
        work, _ = mean_std([t["total"] - (t.get("setup") or 0.0) for t in timed
                            if t.get("total") is not None])
        loop, _ = mean_std([t["loop"] for t in timed])
        parts = sorted({k for t in timed for k in t["per_step"]})
        out[m] = {"wall": wall, "wall_std": wall_std, "work": work, "loop": loop,
                  "steps": mean_std([t["steps"] for t in timed])[0],
                  "per_step": {k: mean_std([t["per_step"][k] for t in timed if k in t["per_step"]])[0]
                               for k in parts},
                  "bandit_share": mean_std([t.get("bandit_share") for t in timed
                                            if t.get("bandit_share") is not None])[0]}
    ref = out.get(reference or "")
    for t in out.values():
        for key in ("wall", "work", "loop"):
            ok = ref is not None and ref[key] and t[key] is not None
            t[f"relative_{key}"] = t[key] / ref[key] if ok and ref is not None else None
    return out


def _in_domain_summary(rows: Sequence[Mapping[str, Any]], domains: Sequence[str]) -> dict[str, Any]:
    shares = [r for r in rows if r.get("in_domain_share")]
    per_domain = {d: mean_std([r["in_domain_share"][d] for r in shares if d in r["in_domain_share"]])[0]
                  for d in domains}
    per_seed_mean = [float(np.mean(list(r["in_domain_share"].values()))) for r in shares]
    locked = [[int(r["seed"]), d] for r in rows for d, v in sorted((r.get("lock_in") or {}).items()) if v]
    task_runs = sum(len(r.get("lock_in") or {}) for r in rows)
    return {"per_domain": per_domain, "mean": mean_std(per_seed_mean)[0], "std": mean_std(per_seed_mean)[1],
            "per_seed": {str(r["seed"]): dict(r["in_domain_share"]) for r in shares},
            "lock_ins": len(locked), "task_runs": task_runs, "locked": locked}
