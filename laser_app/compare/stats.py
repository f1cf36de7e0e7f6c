"""The numbers of a comparison: one record per run from its ``metrics.json``, and the summary per ood kind
(accuracy with bootstrap intervals over seeds and prompts, paired bootstrap tests within each label budget,
time, in-domain share).

A *unit* is one (world seed, run seed) pair: the runs of every method on one unit share the starting policy,
the data and the evaluation prompts, so methods are paired unit by unit. The intervals and tests are in
:mod:`~laser_app.compare.bootstrap`; budgets and references in :mod:`~laser_app.compare.budgets`.

>>> [round(x, 4) for x in mean_std([0.5, 0.7])]
[0.6, 0.1414]
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from laser_app.compare.bootstrap import LEVEL, RESAMPLES, SEED, bootstrap_mean, holm, paired_bootstrap, same_prompts
from laser_app.compare.budgets import SFT_LABELS, class_references, method_labels, order_by_budget
from laser_app.compare.methods import SFT
from laser_app.errors import LaserError

#: Parts of a step (:data:`laser_app.events.STEP_PARTS`) left out of the training loop's time: extra work
#: a run can turn off.
UNTIMED_PARTS = ("diagnostics",)
#: Record keys that stay in memory: the per-prompt results are in the run folders, not in compare.json.
HITS_KEYS = ("hits", "hits_before")


def record_from_metrics(metrics: Mapping[str, Any], *, ood: str, method: str, seed: int, split: str | None,
                        run_dir: str | None = None, world_seed: int = 0) -> dict[str, Any]:
    """One run's row: final and before-training accuracy on ``split`` (default: test, else the first) and
    per prompt (``hits``, ``hits_before``: ``None`` for runs that did not record them), the label budget
    (``labels``, ``None`` when unknown), in-domain share and lock-in per domain (last iteration), timings.

    >>> m = {"accuracy": {"test": [{"math": 0.5, "mean": 0.5}, {"math": 0.7, "mean": 0.7}]},
    ...      "in_domain_share": None, "lock_in": None, "steps": 4,
    ...      "timings": {"total": 9.0,
    ...                  "per_step": {"generate": 1.0, "score": 0.5, "train": 0.4, "select": 0.1}}}
    >>> r = record_from_metrics(m, ood="bias", method="random", seed=0, split=None)
    >>> r["accuracy"], r["before"], r["timings"]["loop"], r["labels"], r["hits"]
    ({'math': 0.7, 'mean': 0.7}, {'math': 0.5, 'mean': 0.5}, 8.0, None, None)
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
    per_example = metrics.get("per_example") or {}
    hits = {when: (per_example.get(when) or {}).get(chosen) for when in ("final", "before")}
    return {
        "ood": ood, "world_seed": int(world_seed), "method": method, "seed": int(seed), "split": chosen,
        "run_dir": run_dir, "labels": dict(metrics["labels"]) if metrics.get("labels") else None,
        "accuracy": dict(series[-1]), "before": dict(series[0]), "iterations": len(series) - 1,
        "skipped_steps": metrics.get("skipped_steps"),
        "in_domain_share": dict(in_domain["per_task"]) if in_domain else None,
        "lock_in": {k: bool(v) for k, v in lock["per_task"].items()} if lock else None,
        "timings": {"total": t.get("total"), "setup": t.get("setup"), "eval": t.get("eval"),
                    "loop": sum(v for k, v in per_step.items() if k not in UNTIMED_PARTS) * steps,
                    "steps": steps, "per_step": per_step, "bandit_share": t.get("bandit_share_of_step")},
        "hits": hits["final"], "hits_before": hits["before"],
    }


def unit_of(record: Mapping[str, Any]) -> tuple[int, int]:
    """``(world seed, run seed)``: the record's paired unit."""
    return int(record.get("world_seed", 0)), int(record["seed"])


def sft_records(records: Sequence[Mapping[str, Any]], reference: str | None = None) -> list[dict[str, Any]]:
    """The starting policy's rows: per (ood, world seed, seed), the before-training accuracy of the reference
    method's run (else the first run of that unit), which every method's run shares. Its label budget is
    none, or unknown where no run of the ood kind recorded budgets."""
    with_budgets = {r["ood"] for r in records if r.get("labels")}
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r["method"] != reference):
        key = (r["ood"], *unit_of(r))
        if key not in out:
            out[key] = {"ood": r["ood"], "world_seed": unit_of(r)[0], "method": SFT, "seed": int(r["seed"]),
                        "split": r.get("split"), "run_dir": None,
                        "labels": dict(SFT_LABELS) if r["ood"] in with_budgets else None,
                        "accuracy": dict(r["before"]), "before": dict(r["before"]), "iterations": 0,
                        "in_domain_share": None, "lock_in": None, "timings": None, "source": r["method"],
                        "hits": r.get("hits_before"), "hits_before": r.get("hits_before")}
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
    """Paired comparison over the units both have: mean difference (reference - other), per-unit wins,
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
              learners: Collection[str] = (), resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """The comparison per ood kind, from run records (:func:`record_from_metrics`); ``sft`` in ``methods``
    gets its rows from the runs' before-training accuracy. Methods are ordered and compared by label budget
    (:mod:`~laser_app.compare.budgets`): each against the reference of its own class, ``reference`` being
    the reference of its class. ``learners`` are the LASeR variants (their in-domain share and lock-ins are
    reported). Intervals: :func:`~laser_app.compare.bootstrap.bootstrap_mean` over units and prompts.

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
        by_method = {m: sorted((r for r in here if r["method"] == m), key=unit_of) for m in present}
        labels = {m: method_labels(rs) for m, rs in by_method.items()}
        budgets = {m: (lab or {}).get("budget") for m, lab in labels.items()}
        ordered = order_by_budget(present, budgets)
        refs = class_references(ordered, budgets, reference=reference, learners=learners)
        main = reference if reference in present else refs.get("none", refs.get(None))
        boot = {"resamples": resamples, "seed": seed, "level": LEVEL}
        accuracy = {m: _accuracy_summary(by_method[m], domains, boot) for m in ordered}
        units = sorted({unit_of(r) for r in here})
        out[ood] = {
            "split": here[0].get("split"),
            "domains": domains,
            "methods": ordered,
            "seeds": sorted({s for _, s in units}),
            "world_seeds": sorted({w for w, _ in units}),
            "units": [list(u) for u in units],
            "reference": main,
            "references": {b or "unknown": r for b, r in refs.items() if r is not None},
            "labels": labels,
            "bootstrap": {**boot, "seeds_only": [m for m in ordered if accuracy[m]["resampled"] == "seeds"]},
            "accuracy": accuracy,
            "paired": _paired(by_method, ordered, budgets, refs, boot),
            "time": _time_summary({m: by_method[m] for m in ordered}, main),
            "in_domain": {m: _in_domain_summary(rs, domains) for m, rs in by_method.items()
                          if m in learners and any(r.get("in_domain_share") for r in rs)},
        }
    return out


def _units(sides: Sequence[Sequence[Mapping[str, Any]]],
           domains: Sequence[str]) -> tuple[list[list[Any]], list[int], bool]:
    """The bootstrap units of each side (records paired by index): per-prompt results where every record
    has them on the same prompts, else each domain's accuracy alone (a bootstrap over seeds only)."""
    groups = [unit_of(r)[0] for r in sides[0]]
    full: list[list[Any]] = [[r.get("hits") for r in rows] for rows in sides]
    if all(h is not None and sorted(h) == sorted(domains) for hs in full for h in hs) and same_prompts(full, groups):
        return full, groups, True
    return [[{d: [r["accuracy"][d]] for d in domains} for r in rows] for rows in sides], groups, False


def _accuracy_summary(rows: Sequence[Mapping[str, Any]], all_domains: Sequence[str],
                      boot: Mapping[str, Any]) -> dict[str, Any]:
    domains = [d for d in all_domains if all(r["accuracy"].get(d) is not None for r in rows)]
    (units,), groups, prompts = _units([rows], domains)
    iv = None
    if domains and (prompts or len(rows) > 1):
        iv = bootstrap_mean(units, groups, resamples=boot["resamples"], seed=boot["seed"], level=boot["level"])
    mean = dict(iv["estimate"]) if iv else {d: mean_std([r["accuracy"][d] for r in rows])[0]
                                            for d in [*domains, "mean"]}
    std = {d: mean_std([r["accuracy"].get(d) for r in rows if r["accuracy"].get(d) is not None])[1]
           for d in [*all_domains, "mean"]}
    return {"n": len(rows), "mean": mean, "low": dict(iv["low"]) if iv else {},
            "high": dict(iv["high"]) if iv else {}, "std": std,
            "resampled": "seeds and prompts" if prompts else "seeds",
            "per_unit": [{"world_seed": unit_of(r)[0], "seed": unit_of(r)[1], "accuracy": dict(r["accuracy"])}
                         for r in rows]}


def _paired(by_method: Mapping[str, Sequence[Mapping[str, Any]]], ordered: Sequence[str],
            budgets: Mapping[str, str | None], refs: Mapping[str | None, str | None],
            boot: Mapping[str, Any]) -> dict[str, Any]:
    """Each method against its class's reference (reference - method), Holm-adjusted over the table."""
    out: dict[str, Any] = {}
    for m in ordered:
        ref = refs.get(budgets.get(m))
        if ref is None or ref == m:
            continue
        mine = {unit_of(r): r for r in by_method[m]}
        common = [r for r in by_method[ref] if unit_of(r) in mine]
        entry = paired_test({unit_of(r): r["accuracy"]["mean"] for r in by_method[ref]},
                            {u: r["accuracy"]["mean"] for u, r in mine.items()})
        entry = {**entry, "p_ttest": entry["p"], "p": None, "low": None, "high": None, "reference": ref,
                 "budget": budgets.get(m), "resampled": None}
        domains = sorted(d for d in (common[0]["accuracy"] if common else {}) if d != "mean")
        if common and domains and all(d in mine[unit_of(r)]["accuracy"] for r in common for d in domains):
            sides, groups, prompts = _units([common, [mine[unit_of(r)] for r in common]], domains)
            if prompts or len(common) > 1:
                res = paired_bootstrap(sides[0], sides[1], groups, resamples=boot["resamples"],
                                       seed=boot["seed"], level=boot["level"])
                entry.update(mean_diff=res["diff"], low=res["low"], high=res["high"], p=res["p"],
                             resampled="seeds and prompts" if prompts else "seeds")
        out[m] = entry
    for entry, adjusted in zip(out.values(), holm([e["p"] for e in out.values()]), strict=True):
        entry["p_holm"] = adjusted
    return out


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
    per_unit_mean = [float(np.mean(list(r["in_domain_share"].values()))) for r in shares]
    locked = [[*unit_of(r), d] for r in rows for d, v in sorted((r.get("lock_in") or {}).items()) if v]
    task_runs = sum(len(r.get("lock_in") or {}) for r in rows)
    return {"per_domain": per_domain, "mean": mean_std(per_unit_mean)[0], "std": mean_std(per_unit_mean)[1],
            "per_unit": [{"world_seed": unit_of(r)[0], "seed": unit_of(r)[1], "share": dict(r["in_domain_share"])}
                         for r in shares],
            "lock_ins": len(locked), "task_runs": task_runs, "locked": locked}
