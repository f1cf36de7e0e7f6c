"""Bootstrap intervals for accuracies measured over seeds and prompts: the interval of a mean, the interval
and p-value of a paired difference, and Holm's correction. Pure numpy.

A *unit* is one run: per task, whether each evaluation prompt's answer was right (0/1, in data order).
Units of one *group* (a world seed) were evaluated on the same prompts. One resample draws the units with
replacement and, independently per group and task, the prompts with replacement (the same prompt draws
for every unit of the group, and for both sides of a paired comparison); its value per task is the mean
over the drawn units of their accuracy on the drawn prompts, and ``mean`` is the average over tasks.
Intervals are percentile intervals of the resamples; the generator is seeded, so a result is reproducible.

A unit given as one accuracy per task (``{"math": [0.62]}``) has a single "prompt", which resampling
leaves as it is: such units give a bootstrap over seeds alone.

>>> units = [{"a": [1, 0, 1, 1], "b": [0, 1]}, {"a": [1, 1, 1, 0], "b": [0, 0]}]
>>> iv = bootstrap_mean(units, groups=[0, 0], resamples=500)
>>> iv["estimate"], iv["low"]["mean"] <= 0.5 <= iv["high"]["mean"]
({'a': 0.75, 'b': 0.25, 'mean': 0.5}, True)
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

#: Resamples per interval: the Monte Carlo error of a 95% percentile bound is then well under a point.
RESAMPLES = 2000
#: The seed of every bootstrap generator: the same runs always give the same intervals.
SEED = 0
LEVEL = 0.95
#: Prompt draws held at once (resamples x prompts), about 32 MB.
_BLOCK = 4_000_000

#: One run's evaluation: per task, whether each prompt's answer was right (0/1), or one accuracy.
Unit = Mapping[str, "npt.ArrayLike"]


def tasks_of(unit_sets: Sequence[Sequence[Unit]], groups: Sequence[Hashable]) -> list[str]:
    """The tasks every unit has; raises ``ValueError`` unless the sets are paired unit by unit (one group
    each), every unit has the same tasks, and the units of a group have as many prompts per task."""
    n = len(groups)
    if n == 0:
        raise ValueError("need at least one unit, got none")
    if any(len(units) != n for units in unit_sets):
        raise ValueError(f"every set needs one unit per group entry ({n}), got {[len(u) for u in unit_sets]}")
    tasks = sorted(unit_sets[0][0])
    if not tasks:
        raise ValueError("a unit holds no task")
    lengths: dict[tuple[Hashable, str], int] = {}
    for units in unit_sets:
        for i, (unit, group) in enumerate(zip(units, groups, strict=True)):
            if sorted(unit) != tasks:
                raise ValueError(f"unit {i} has tasks {sorted(unit)}, expected {tasks}")
            for t in tasks:
                m = int(np.size(unit[t]))
                if m < 1:
                    raise ValueError(f"unit {i} has no prompt for task {t!r}")
                if lengths.setdefault((group, t), m) != m:
                    raise ValueError(f"units of group {group!r} were not evaluated on the same prompts: task "
                                     f"{t!r} has {lengths[(group, t)]} and {m} of them")
    return tasks


def same_prompts(unit_sets: Sequence[Sequence[Unit]], groups: Sequence[Hashable]) -> bool:
    """Whether :func:`tasks_of` accepts the sets (so prompts can be resampled jointly).

    >>> same_prompts([[{"a": [1, 0]}, {"a": [1]}]], groups=[0, 0]), same_prompts([[{"a": [1, 0]}]], [0])
    (False, True)
    """
    try:
        tasks_of(unit_sets, groups)
    except ValueError:
        return False
    return True


def _estimate(units: Sequence[Unit], tasks: Sequence[str]) -> dict[str, float]:
    per_task = {t: float(np.mean([np.mean(np.asarray(u[t], dtype=np.float64)) for u in units])) for t in tasks}
    return {**per_task, "mean": float(np.mean(list(per_task.values())))}


def _replicates(unit_sets: Sequence[Sequence[Unit]], groups: Sequence[Hashable], resamples: int,
                rng: np.random.Generator) -> tuple[list[str], list[npt.NDArray[np.float64]]]:
    """Per set, the resampled accuracies, shape ``(resamples, tasks)``, from shared unit and prompt draws."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    tasks = tasks_of(unit_sets, groups)
    n = len(groups)
    draws = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0 / n)
    out = [np.zeros((resamples, len(tasks))) for _ in unit_sets]
    for group in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == group]
        for j, t in enumerate(tasks):
            hits = [np.stack([np.asarray(units[i][t], dtype=np.float64).ravel() for i in idx], axis=1)
                    for units in unit_sets]  # per set: (prompts, units of the group)
            m = hits[0].shape[0]
            step = max(1, _BLOCK // m)  # resamples per block, so a block's draws stay small
            for lo in range(0, resamples, step):
                share = _prompt_shares(rng, m, min(step, resamples - lo))
                for k in range(len(unit_sets)):
                    out[k][lo:lo + step, j] += (weights[lo:lo + step, idx] * (share @ hits[k])).sum(axis=1)
    return tasks, out


def _prompt_shares(rng: np.random.Generator, m: int, n: int) -> npt.NDArray[np.float64]:
    """``n`` resamples of ``m`` prompts drawn with replacement: how often each was drawn, divided by ``m``."""
    draws = rng.integers(0, m, size=(n, m)) + np.arange(n)[:, None] * m
    return np.bincount(draws.ravel(), minlength=n * m).reshape(n, m) / m


def _bounds(values: npt.NDArray[np.float64], level: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def bootstrap_mean(units: Sequence[Unit], groups: Sequence[Hashable], *, resamples: int = RESAMPLES,
                   seed: int | np.random.Generator | None = SEED, level: float = LEVEL) -> dict[str, Any]:
    """The mean accuracy per task and averaged over tasks (``mean``), with its ``level`` percentile interval:
    ``{"estimate": {task: x, "mean": x}, "low": {...}, "high": {...}, "units": n}``.

    >>> iv = bootstrap_mean([{"a": [0.6]}, {"a": [0.8]}], groups=[0, 1], resamples=200)  # seeds only
    >>> round(iv["estimate"]["a"], 3), iv["low"]["a"] >= 0.6, iv["high"]["a"] <= 0.8
    (0.7, True, True)
    """
    _check_level(level)
    tasks, (reps,) = _replicates([units], groups, resamples, np.random.default_rng(seed))
    estimate = _estimate(units, tasks)
    low, high = {}, {}
    for j, t in enumerate([*tasks, "mean"]):
        low[t], high[t] = _bounds(reps[:, j] if t != "mean" else reps.mean(axis=1), level)
    return {"estimate": estimate, "low": low, "high": high, "units": len(units)}


def paired_bootstrap(a: Sequence[Unit], b: Sequence[Unit], groups: Sequence[Hashable], *,
                     resamples: int = RESAMPLES, seed: int | np.random.Generator | None = SEED,
                     level: float = LEVEL) -> dict[str, Any]:
    """The difference ``a - b`` of mean accuracy (averaged over tasks) over paired units (``a[i]`` and ``b[i]``
    share seeds and prompts), resampling units and prompts jointly for both sides: ``{"diff", "low", "high",
    "p", "units"}``. ``p`` is two-sided: twice the smaller share of resampled differences on either side of
    0 (with the +1 correction), so it is below ``1 - level`` exactly when the interval excludes 0.

    >>> same = paired_bootstrap([{"a": [1, 0, 1]}], [{"a": [1, 0, 1]}], groups=[0], resamples=99)
    >>> same["diff"], same["p"]
    (0.0, 1.0)
    """
    _check_level(level)
    tasks, (ra, rb) = _replicates([a, b], groups, resamples, np.random.default_rng(seed))
    diffs = ra.mean(axis=1) - rb.mean(axis=1)
    low, high = _bounds(diffs, level)
    below = (np.sum(diffs <= 0) + 1) / (resamples + 1)
    above = (np.sum(diffs >= 0) + 1) / (resamples + 1)
    return {"diff": _estimate(a, tasks)["mean"] - _estimate(b, tasks)["mean"], "low": low, "high": high,
            "p": float(min(1.0, 2 * min(below, above))), "units": len(a)}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values of one family of tests (``None`` entries are not tests
    and stay ``None``): the k-th smallest of m becomes ``max over j <= k of min(1, (m - j + 1) p_(j))``.

    >>> holm([0.2, None, 0.01])
    [0.2, None, 0.02]
    """
    for p in pvalues:
        if p is not None and not 0 <= p <= 1:
            raise ValueError(f"p-values must be in [0, 1], got {p!r}")
    tested = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: float(pvalues[i] or 0))
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * float(pvalues[i] or 0)))
        out[i] = running
    return out
