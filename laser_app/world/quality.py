"""How good each reward model is on each task: the RM quality matrix, and its display.

Quality is measured where it matters to DPO: on held-out prompts, between responses the SFT policy itself
samples (temperature 0.8), one correct and one wrong. An RM's pairwise accuracy on a task is the share of such
pairs it ranks correct-over-wrong (a tie counts one half). For the biased variant the share of pairs it orders
by the stated bias rule is reported too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from laser_app.world.tasks import Example, check_answer

if TYPE_CHECKING:  # the RM module imports torch; this one stays importable without it
    from laser_app.world.specialists import Candidate

ScoreFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def eval_candidates(examples: Sequence[Example], samples: Sequence[Sequence[str]], *,
                    max_per_prompt: int = 4) -> list[Candidate]:
    """(correct, wrong) pairs among each prompt's distinct sampled responses, up to ``max_per_prompt``.

    >>> ex = Example("Q: 2+2? A:", "4", "math")
    >>> [(c.correct, c.wrong) for c in eval_candidates([ex], [[" 4", " 5", " 4", " 3"]])]
    [(' 4', ' 3'), (' 4', ' 5')]
    """
    from laser_app.world.specialists import Candidate

    out: list[Candidate] = []
    for ex, responses in zip(examples, samples, strict=True):
        if ex.answer is None:
            raise ValueError(f"example has no answer to check against: {ex.prompt!r}")
        distinct = sorted(set(responses))
        good = [r for r in distinct if check_answer(ex.task, r, ex.answer)]
        bad = [r for r in distinct if not check_answer(ex.task, r, ex.answer)]
        combos = [(g, b) for g in good for b in bad][:max_per_prompt]
        out.extend(Candidate(ex.prompt, ex.task, g, b) for g, b in combos)
    return out


def _scores(score: ScoreFn, candidates: Sequence[Candidate]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted({(c.prompt, r) for c in candidates for r in (c.correct, c.wrong)})
    index = {k: i for i, k in enumerate(keys)}
    values = np.asarray(score([k[0] for k in keys], [k[1] for k in keys]), dtype=np.float64)
    good = np.array([values[index[(c.prompt, c.correct)]] for c in candidates])
    bad = np.array([values[index[(c.prompt, c.wrong)]] for c in candidates])
    return good, bad


def pairwise_accuracy(score: ScoreFn, candidates: Sequence[Candidate]) -> dict[str, float]:
    """Per task, the share of candidates scored correct > wrong (ties count 0.5).

    >>> from laser_app.world.specialists import Candidate
    >>> cands = [Candidate("p", "math", " 4", " 5"), Candidate("q", "math", " 1", " 2")]
    >>> pairwise_accuracy(lambda ps, rs: np.array([float(r) for r in rs]), cands)
    {'math': 0.0}
    """
    if not candidates:
        return {}
    good, bad = _scores(score, candidates)
    hit = (good > bad) + 0.5 * (good == bad)
    tasks = np.array([c.task for c in candidates])
    return {t: float(hit[tasks == t].mean()) for t in sorted(set(tasks.tolist()))}


def bias_agreement(score: ScoreFn, candidates: Sequence[Candidate]) -> dict[str, float]:
    """Per task, the share of rule-decidable candidates the RM orders as the bias rule does."""
    usable = [c for c in candidates if _rule(c) is not None]
    if not usable:
        return {}
    good, bad = _scores(score, usable)
    rule = np.array([_rule(c) for c in usable], dtype=bool)  # True: the rule prefers the correct answer
    follows = np.where(rule, good > bad, bad > good) + 0.5 * (good == bad)
    tasks = np.array([c.task for c in usable])
    return {t: float(follows[tasks == t].mean()) for t in sorted(set(tasks.tolist()))}


def _rule(c: Candidate) -> bool | None:
    from laser_app.world.specialists import bias_key

    kc, kw = bias_key(c.task, c.correct), bias_key(c.task, c.wrong)
    return None if kc is None or kw is None or kc == kw else kc > kw


# ----------------------------------------------------------------------------------------------- display
def format_info(info: Mapping[str, Any]) -> list[Any]:
    """Rich tables for ``World.info()``: the policy's accuracy, then each variant's RM quality matrix.

    >>> from rich.console import Console
    >>> info = {"seed": 0, "tasks": ["math"], "policy": {"greedy_test": {"math": 0.5},
    ...         "sampled_test": {"math": 0.4}, "parameters": 10},
    ...         "quality": {"bias": {"rm-a": {"math": 0.9}}}, "rm_for_task": {"math": "rm-a"}}
    >>> import io
    >>> console = Console(width=100, record=True, file=io.StringIO())
    >>> for table in format_info(info): console.print(table)
    >>> "rm-a" in console.export_text()
    True
    """
    from rich.table import Table

    tasks = list(info.get("tasks", []))
    tables: list[Any] = []
    policy = info.get("policy", {})
    summary = Table(title="Built-in world", show_header=False)
    summary.add_column("item")
    summary.add_column("value")
    per_task = (info.get("sizes") or {}).get("per_task", {})
    rows = [("path", info.get("path")), ("seed", info.get("seed")), ("version", info.get("version")),
            ("examples per task", ", ".join(f"{k} {v}" for k, v in per_task.items()
                                            if k in ("train", "dev", "test"))),
            ("parameters", f"policy {policy.get('parameters', '?')}, each RM {info.get('rm_parameters', '?')}"),
            ("policy checkpoint", f"SFT step {policy.get('checkpoint_step', '?')}")]
    timings = info.get("timings") or {}
    if timings:
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items() if k != "total")
        threads = info.get("torch_threads", "?")
        rows.append(("build time", f"{timings.get('total', 0):.0f} s ({stages}; "
                                   f"{threads} torch thread{'' if threads == 1 else 's'})"))
    for key, value in rows:
        if value not in (None, ""):
            summary.add_row(key, str(value))
    tables.append(summary)
    head = Table(title=f"Built-in policy (seed {info.get('seed')}, {policy.get('parameters', '?')} parameters)")
    head.add_column("accuracy")
    for t in tasks:
        head.add_column(t, justify="right")
    for key, label in (("greedy_test", "greedy, test"), ("sampled_test", "sampled T=0.8, test"),
                       ("greedy_dev", "greedy, dev")):
        if key in policy:
            head.add_row(label, *(f"{policy[key].get(t, float('nan')):.3f}" for t in tasks))
    tables.append(head)
    home = {rm: t for t, rm in info.get("rm_for_task", {}).items()}
    for variant, matrix in info.get("quality", {}).items():
        table = Table(title=f"RM quality, out-of-domain behaviour '{variant}' (pairwise accuracy on dev)")
        table.add_column("RM")
        for t in tasks:
            table.add_column(t, justify="right")
        agreement = info.get("bias_agreement", {}).get(variant, {})
        for rm, row in matrix.items():
            cells = []
            for t in tasks:
                cell = f"{row.get(t, float('nan')):.3f}"
                if home.get(rm) == t:
                    cell = f"[bold]{cell}[/bold]"
                elif rm in agreement and t in agreement[rm]:
                    cell += f" (bias {agreement[rm][t]:.2f})"
                cells.append(cell)
            table.add_row(rm, *cells)
        tables.append(table)
    return tables


def info_text(info: Mapping[str, Any], *, width: int = 110) -> str:
    """``format_info`` rendered to plain text (for logs and tests)."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(width=width, file=buffer, force_terminal=False, color_system=None)
    for table in format_info(info):
        console.print(table)
    return buffer.getvalue()
