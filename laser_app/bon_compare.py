"""``laser bon --compare``: every best-of-n method on the same prompts and samples, over seeds.

The policy and the RMs load once per world seed; each (world seed, method, run seed) is one best-of-n run folder
under ``OUT/runs/world<W>/<method>/seed<S>`` (complete ones are kept, so an interrupted comparison continues
where it stopped). Intervals are over (world seed, run seed) units. Every method of a seed sees the same
samples (sampling is seeded by the run seed and the batch, never by the method), so the differences between
methods are differences in picking alone. Rows, and what each reads beyond the policy and the RMs:

- ``greedy``: one greedy answer per prompt (n = 1), no RM;
- ``fixed:RM`` for each RM, ``random``, ``ensemble-score`` (every RM scores every sample), ``ensemble-agree``
  and the LASeR policies named: no labels;
- ``oracle``: routes each prompt to its subset's specialist (reads the suite's RM-for-subset map);
- ``pass@n``: the best F1 among the n samples, what a picker that reads the references would reach
  (oracle-only, from the same runs).

Output in ``OUT``: ``bon_compare.json`` (every per-seed value), ``bon_compare.csv``, ``bon_compare.md`` and
``bon_compare.png``; ``laser report OUT`` prints the table again.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_app.bon import BonInputs, answer_bon, answer_scores, bon_inputs
from laser_app.config import RunConfig
from laser_app.data import task_of
from laser_app.errors import LaserError, RunDirError
from laser_app.run_dir import RunDir, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from rich.console import Console

RESULT = "bon_compare.json"
GREEDY, PASS_AT_N = "greedy", "pass@n"
#: LASeR's bandit policies compared by default (each with its default settings and the label-free reward).
DEFAULT_POLICIES = ("linucb",)
#: What each row reads beyond the policy and the RMs.
LABELS = {GREEDY: "none", "oracle": "RM map", PASS_AT_N: "references (oracle-only)"}


def default_methods(rm_names: Sequence[str], policies: Sequence[str] = DEFAULT_POLICIES) -> list[str]:
    """Greedy, each single RM, random, both ensembles, the LASeR policies and the oracle routing.

    >>> default_methods(["rm-a", "rm-b"])
    ['greedy', 'fixed:rm-a', 'fixed:rm-b', 'random', 'ensemble-score', 'ensemble-agree', 'linucb', 'oracle']
    """
    return [GREEDY, *(f"fixed:{rm}" for rm in rm_names), "random", "ensemble-score", "ensemble-agree",
            *policies, "oracle"]


def run_bon_compare(config: RunConfig, *, out: Path, seeds: int, methods: Sequence[str] | None = None,
                    world_seeds: Sequence[int] | None = None,
                    policies: Sequence[str] = DEFAULT_POLICIES, progress: bool = True,
                    console: Console | None = None, longbench: Path | None = None,
                    datasets: Sequence[str] | None = None, suite: str | None = None,
                    split: str = "test") -> dict[str, Any]:
    """Run every method for ``seeds`` run seeds on the same prompts, for each of ``world_seeds`` (default: the
    config's); write and return the comparison."""
    from laser_app.progress import stderr_console

    if seeds < 1:
        raise LaserError(f"--seeds must be >= 1, got {seeds}")
    if out.exists() and not out.is_dir():
        raise LaserError(f"--out {out} exists and is not a folder; choose another --out")
    RunDir.check_creatable(out / "runs" / "probe", overwrite=False)
    console = console or stderr_console()
    worlds = list(world_seeds) if world_seeds is not None else [config.world_seed]
    if not worlds or any(w < 0 for w in worlds) or len(set(worlds)) < len(worlds):
        raise LaserError(f"--world-seeds must be distinct seeds >= 0, got {worlds}")
    records: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    parsed: dict[str, dict[str, Any]] = {}
    for world in worlds:
        inputs = bon_inputs(config.model_copy(update={"world_seed": world}), progress=progress, console=console,
                            longbench=longbench, datasets=datasets, suite=suite, split=split)
        if not parsed:  # the methods are checked once, before any run
            names = list(methods) if methods is not None else default_methods(inputs.setup.rm_names, policies)
            parsed = _parse(names, inputs)
        records += _run_world(inputs, parsed, out / "runs" / f"world{world}", world=world, seeds=seeds,
                              progress=progress, console=console)
    data = summarize(records, rm_names=inputs.setup.rm_names, tasks=sorted({task_of(ex) for ex in inputs.rows}))
    data.update({"n_responses": inputs.config.n_responses, "seeds": seeds, "world_seeds": worlds,
                 "units": len(worlds) * seeds, "prompts": len(inputs.rows),
                 "split": split if suite is not None else "given",
                 "policy_model": inputs.setup.resolved.get("model"),
                 "truncated": inputs.setup.resolved.get("longbench", {}).get("truncated"),
                 "seconds": round(time.perf_counter() - t_all, 1)})
    write_outputs(data, out)
    return data


def _run_world(inputs: BonInputs, parsed: Mapping[str, Mapping[str, Any]], root: Path, *, world: int, seeds: int,
               progress: bool, console: Console) -> list[dict[str, Any]]:
    """Every method and run seed on one world seed's prompts (finished runs reused)."""
    records = []
    for method, settings in parsed.items():
        for seed in ([0] if method == GREEDY else range(seeds)):  # greedy is deterministic
            folder = root / _slug(method) / f"seed{seed}"
            metrics = _reuse(folder, settings, seed)
            if metrics is None:
                if progress:
                    console.print(f"[bold]{method}[/] world {world} seed {seed}", markup=True, highlight=False)
                metrics = (_greedy(inputs, folder) if method == GREEDY else
                           answer_bon(inputs, inputs.config.model_copy(update={
                               **settings, "seed": seed, "out": folder, "overwrite": True}),
                               progress=progress, console=console).metrics)
            reads = LABELS.get(method) or ("references (oracle-only)" if settings.get("mab_reward") == "gold"
                                           else "RM map" if settings.get("policy") == "oracle" else "none")
            records.append({"method": method, "world": world, "seed": seed, "labels": reads, **_record(metrics)})
    return records


def _parse(names: Sequence[str], inputs: BonInputs) -> dict[str, dict[str, Any]]:
    """Each method's label and the run settings it sets (``linucb[alpha=0.5,mab_reward=gold]`` as in
    ``laser compare``); ``greedy`` sets none. Unknown names, RMs or settings are one line each."""
    from laser_app.compare.methods import MethodError, parse_method

    out: dict[str, dict[str, Any]] = {}
    problems = []
    for name in names:
        if name == GREEDY:
            out[name] = {}
            continue
        try:
            method = parse_method(name)
        except MethodError as err:
            problems += err.lines
            continue
        policy = str(method.settings.get("policy"))
        if policy.startswith("fixed:") and policy.split(":", 1)[1] not in inputs.setup.rm_names:
            problems.append(f"method {name!r}: no RM {policy.split(':', 1)[1]!r}; RMs in use: "
                            f"{', '.join(inputs.setup.rm_names)}")
        if method.label in out:
            problems.append(f"method {method.label!r} is listed twice")
        out[method.label] = dict(method.settings)
    if problems:
        raise LaserError("--methods: " + "; ".join(problems))
    return out


def _slug(method: str) -> str:
    """The run folder name of a method: ``laser compare``'s (:attr:`Method.slug`)."""
    from laser_app.compare.methods import parse_method

    return method if method == GREEDY else parse_method(method).slug


def _reuse(folder: Path, settings: Mapping[str, Any], seed: int) -> dict[str, Any] | None:
    """A complete run's metrics when its folder holds these settings and seed; anything else runs again."""
    try:
        run = RunDir.open(folder)
        if run.state() != "complete":
            return None
        config = run.config()
        if settings and (config.get("seed") != seed or any(config.get(k) != v for k, v in settings.items())):
            return None
        return run.metrics()
    except (RunDirError, OSError, ValueError):
        return None


def _greedy(inputs: BonInputs, folder: Path) -> dict[str, Any]:
    """The greedy answer (n = 1) to every prompt, scored like the best-of-n runs; written as a run folder."""
    from laser_adapters.generation import cut_at_stop, greedy_answers
    from laser_app.policy import torch_threads

    t0 = time.perf_counter()
    setup = inputs.setup
    stop = setup.fmt.stop(setup.stop)
    run = RunDir.create(folder, overwrite=True)
    try:
        run.write_config({**inputs.config.model_dump(mode="json"), "policy": GREEDY, "seed": 0},
                         {**setup.resolved, "mode": "greedy"})
        with torch_threads(setup.threads):
            answers = greedy_answers(setup.model, setup.tokenizer, [setup.fmt.policy_prompt(ex) for ex in inputs.rows],
                                     max_new_tokens=setup.max_new_tokens, stop=stop,
                                     batch_size=inputs.config.eval_batch_size)
        scores = [answer_scores(ex, cut_at_stop(a, stop)) for ex, a in zip(inputs.rows, answers, strict=True)]
        tasks = [task_of(ex) for ex in inputs.rows]
        metrics = {"mode": "greedy", "policy": GREEDY, "prompts": len(tasks),
                   "f1": _by_task(tasks, [f for f, _ in scores]), "em": _by_task(tasks, [e for _, e in scores]),
                   "rm_passes_per_prompt": 0.0, "timings": {"total": round(time.perf_counter() - t0, 3)}}
        run.write_metrics(metrics)
        run.mark_complete()
    except BaseException as err:
        run.mark_stopped(err)
        raise
    return metrics


def _by_task(tasks: Sequence[str], values: Sequence[float | None]) -> dict[str, float | None]:
    table: dict[str, float | None] = {}
    for t in sorted(set(tasks)):
        kept = [v for tt, v in zip(tasks, values, strict=True) if tt == t and v is not None]
        table[t] = float(np.mean(kept)) if kept else None
    means = [v for v in table.values() if v is not None]
    table["mean"] = float(np.mean(means)) if means else None
    return table


def _record(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the comparison keeps from one run's ``metrics.json``."""
    prompts = int(metrics.get("prompts") or 0)
    total = float((metrics.get("timings") or {}).get("total") or 0.0)
    return {"f1": dict(metrics.get("f1") or {}), "em": dict(metrics.get("em") or {}),
            "oracle_f1": dict(metrics.get("oracle_f1") or {}),
            "shares": dict(metrics.get("choice_share_tail") or {}),
            "rm_passes": float(metrics.get("rm_passes_per_prompt") or 0.0),
            "seconds_per_prompt": total / prompts if prompts else None}


# ----------------------------------------------------------------------------------------------- summary
def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the ``level`` t-interval over seeds (the mean twice when there is one value).

    >>> [round(v, 3) for v in interval([0.4, 0.5, 0.6])]
    [0.5, 0.252, 0.748]
    """
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size))
    return mean, mean - half, mean + half


def summarize(records: Sequence[Mapping[str, Any]], *, rm_names: Sequence[str], tasks: Sequence[str]) -> dict[str, Any]:
    """Per method: F1 and EM per task and overall (mean and 95% interval over seeds, in %), RM shares per task,
    RM forward passes and seconds per prompt; ``pass@n`` from the runs' best sample; paired differences of
    every label-free method against ``random`` and ``ensemble-score`` (same seeds, same samples)."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    cols = [*tasks, "mean"]
    rows: dict[str, Any] = {}

    def stat(values: Sequence[float | None]) -> dict[str, Any]:
        kept = [100 * float(v) for v in values if v is not None]
        if not kept:
            return {"mean": None, "low": None, "high": None, "values": []}
        mean, low, high = interval(kept)
        return {"mean": round(mean, 2), "low": round(low, 2), "high": round(high, 2), "values": kept}

    for method in methods:
        recs = [r for r in records if r["method"] == method]
        shares = {t: {rm: float(np.mean([r["shares"].get(t, {}).get(rm, 0.0) for r in recs])) for rm in rm_names}
                  for t in tasks} if method != GREEDY else {}
        rows[method] = {
            "labels": recs[0].get("labels", LABELS.get(method, "none")), "units": [_unit(r) for r in recs],
            "f1": {c: stat([r["f1"].get(c) for r in recs]) for c in cols},
            "em": {c: stat([r["em"].get(c) for r in recs]) for c in cols},
            "rm_passes": round(float(np.mean([r["rm_passes"] for r in recs])), 2),
            "seconds_per_prompt": _round(_mean([r["seconds_per_prompt"] for r in recs])),
            "shares": shares}
    pool = [r for r in records if r["method"] not in (GREEDY,) and r["oracle_f1"]]
    if pool:  # every run of a unit saw the same samples: pass@n is one number per unit
        by_unit = {_unit(r): r["oracle_f1"] for r in pool}
        rows[PASS_AT_N] = {"labels": LABELS[PASS_AT_N], "units": sorted(by_unit),
                           "f1": {c: stat([by_unit[u].get(c) for u in sorted(by_unit)]) for c in cols},
                           "em": {c: stat([]) for c in cols}, "rm_passes": None, "seconds_per_prompt": None,
                           "shares": {}}
    return {"tasks": list(tasks), "rms": list(rm_names), "methods": rows,
            "differences": {ref: _differences(records, ref) for ref in ("random", "ensemble-score")
                            if any(r["method"] == ref for r in records)}}


def _differences(records: Sequence[Mapping[str, Any]], reference: str) -> dict[str, Any]:
    """Mean F1 of each method minus ``reference``'s, paired by (world, run) seed (points, 95% interval)."""
    ref = {_unit(r): r["f1"].get("mean") for r in records if r["method"] == reference}
    out: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        if method in (reference, GREEDY):
            continue
        diffs = [100 * (r["f1"]["mean"] - ref[_unit(r)]) for r in records
                 if r["method"] == method and _unit(r) in ref and r["f1"].get("mean") is not None
                 and ref[_unit(r)] is not None]
        if diffs:
            mean, low, high = interval(diffs)
            out[method] = {"mean": round(mean, 2), "low": round(low, 2), "high": round(high, 2)}
    return out


def _unit(record: Mapping[str, Any]) -> str:
    """A record's (world seed, run seed) unit as a label: ``w0s2``."""
    return f"w{record.get('world', 0)}s{record['seed']}"


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ----------------------------------------------------------------------------------------------- outputs
def _cell(s: Mapping[str, Any]) -> str:
    if s.get("mean") is None:
        return "-"
    if s["low"] == s["high"]:
        return f"{s['mean']:.1f}"
    return f"{s['mean']:.1f} [{s['low']:.1f}, {s['high']:.1f}]"


def markdown(data: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table: F1 per subset and overall, EM overall, RM passes and seconds per
    question, and what each row reads."""
    cols = [*data["tasks"], "mean"]
    head = ["method", "labels", *(f"F1 {c}" for c in cols), "EM mean", "RM passes / q", "s / q"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in data["methods"].items():
        secs = row.get("seconds_per_prompt")
        lines.append("| " + " | ".join([
            method, row["labels"], *(_cell(row["f1"][c]) for c in cols), _cell(row["em"]["mean"]),
            "-" if row.get("rm_passes") is None else f"{row['rm_passes']:g}",
            "-" if secs is None else f"{secs:.3f}"]) + " |")
    notes = []
    for ref, diffs in data.get("differences", {}).items():
        parts = [f"{m} {d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]" for m, d in diffs.items()]
        notes.append(f"Mean F1 minus {ref} (points, paired by world and run seed, 95% interval): "
                     + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + ("\n" if notes else "")


def write_outputs(data: Mapping[str, Any], out: Path) -> list[Path]:
    """``bon_compare.json``, ``.csv`` (one row per method, seed and column), ``.md`` and ``.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RESULT, dict(data))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "labels", "metric", "column", "seed_index", "value"])
    for method, row in data["methods"].items():
        for metric in ("f1", "em"):
            for col, s in row[metric].items():
                for i, v in enumerate(s["values"]):
                    writer.writerow([method, row["labels"], metric, col, i, f"{v:.4f}"])
    write_text_atomic(out / "bon_compare.csv", buf.getvalue())
    write_text_atomic(out / "bon_compare.md", markdown(data))
    paths = [out / RESULT, out / "bon_compare.csv", out / "bon_compare.md"]
    try:
        paths.append(plot(data, out / "bon_compare.png"))
    except Exception as err:  # a plot must never fail a finished comparison
        import warnings

        warnings.warn(f"could not draw {out / 'bon_compare.png'}: {err}", RuntimeWarning, stacklevel=2)
    return paths


def plot(data: Mapping[str, Any], path: Path) -> Path:
    """F1 per subset per method with 95% intervals (left), mean F1 against RM forward passes (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(data["methods"])
    cols = [*data["tasks"], "mean"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        stats_ = [data["methods"][method]["f1"][c] for c in cols]
        means = [s["mean"] if s["mean"] is not None else np.nan for s in stats_]
        err = [[(s["mean"] - s["low"]) if s["mean"] is not None else 0 for s in stats_],
               [(s["high"] - s["mean"]) if s["mean"] is not None else 0 for s in stats_]]
        ax.bar(np.arange(len(cols)) + i * width, means, width, yerr=err, label=method, capsize=2)
    ax.set_xticks(np.arange(len(cols)) + width * (len(methods) - 1) / 2, cols)
    ax.set_ylabel("token F1 (%)")
    ax.set_title(f"best-of-{data['n_responses']}: F1 per subset (95% interval over "
                 f"{data.get('units', data['seeds'])} seed units)")
    ax.legend(fontsize=7, ncol=2)
    for method, row in data["methods"].items():
        if row.get("rm_passes") is None or row["f1"]["mean"]["mean"] is None:
            continue
        ax2.scatter(row["rm_passes"], row["f1"]["mean"]["mean"])
        ax2.annotate(method, (row["rm_passes"], row["f1"]["mean"]["mean"]), fontsize=7)
    ax2.set_xlabel("RM forward passes per question")
    ax2.set_ylabel("mean token F1 (%)")
    ax2.set_title("quality against RM cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_bon_compare(path: Path, console: Console, *, plots: bool = True) -> None:
    """Print a saved comparison's table (and redraw its PNG)."""
    from laser_app.run_dir import read_json

    data = read_json(path / RESULT)
    if not isinstance(data, dict) or "methods" not in data:
        raise LaserError(f"{path / RESULT} is not a best-of-n comparison; rerun laser bon --compare")
    if plots:
        plot(data, path / "bon_compare.png")
    console.print(markdown(data), markup=False, soft_wrap=True)
