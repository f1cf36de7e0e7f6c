"""How good each reward model is on each task: the RM quality matrix, how far RMs agree, and their display.

Quality is measured where it matters to DPO: on held-out prompts, between responses the SFT policy itself
samples (temperature 0.8), one correct and one wrong. An RM's pairwise accuracy on a task is the share of such
pairs it ranks correct-over-wrong (a tie counts one half). For the variants with a bias rule the share of pairs
an RM orders by its rule is reported too, and for every variant how often two RMs order a pair alike: errors
that two RMs share show as agreement above what their accuracies give when their errors are independent.
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


def preferences(score: ScoreFn, candidates: Sequence[Candidate]) -> np.ndarray:
    """Per candidate, 1.0 when ``score`` ranks the correct response above the wrong one, 0.0 when below,
    0.5 for a tie.

    >>> from laser_app.world.specialists import Candidate
    >>> cands = [Candidate("p", "math", " 4", " 5"), Candidate("q", "math", " 3", " 3.0")]
    >>> preferences(lambda ps, rs: np.array([float(r) for r in rs]), cands).tolist()
    [0.0, 0.5]
    """
    if not candidates:
        return np.zeros(0)
    good, bad = _scores(score, candidates)
    return np.asarray((good > bad) + 0.5 * (good == bad), dtype=np.float64)


def by_task(values: np.ndarray, candidates: Sequence[Candidate]) -> dict[str, float]:
    """The mean of ``values`` (one per candidate) per task."""
    tasks = np.array([c.task for c in candidates])
    return {t: float(values[tasks == t].mean()) for t in sorted(set(tasks.tolist()))}


def pairwise_accuracy(score: ScoreFn, candidates: Sequence[Candidate]) -> dict[str, float]:
    """Per task, the share of candidates scored correct > wrong (ties count 0.5).

    >>> from laser_app.world.specialists import Candidate
    >>> cands = [Candidate("p", "math", " 4", " 5"), Candidate("q", "math", " 1", " 2")]
    >>> pairwise_accuracy(lambda ps, rs: np.array([float(r) for r in rs]), cands)
    {'math': 0.0}
    """
    return by_task(preferences(score, candidates), candidates) if candidates else {}


def pairwise_agreement(prefs: Mapping[str, np.ndarray],
                       candidates: Sequence[Candidate]) -> dict[str, dict[str, float]]:
    """Per task, for each pair of RMs (keyed ``"rm-a/rm-b"``), the share of candidates both order the same way;
    ``prefs`` holds each RM's :func:`preferences`, and a tie against an order counts one half.

    >>> from laser_app.world.specialists import Candidate
    >>> cands = [Candidate("p", "yesno", " yes", " no"), Candidate("q", "yesno", " no", " yes")]
    >>> pairwise_agreement({"x": np.array([1.0, 0.0]), "y": np.array([1.0, 1.0]), "z": np.array([0.5, 0.0])}, cands)
    {'yesno': {'x/y': 0.5, 'x/z': 0.75, 'y/z': 0.25}}
    """
    names = list(prefs)
    pairs = {f"{a}/{b}": 1 - np.abs(prefs[a] - prefs[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    per_pair = {key: by_task(v, candidates) for key, v in pairs.items()} if candidates else {}
    tasks = sorted({c.task for c in candidates})
    return {t: {key: values[t] for key, values in per_pair.items()} for t in tasks}


def bias_agreement(score: ScoreFn, candidates: Sequence[Candidate], *,
                   signs: Mapping[str, int] | None = None) -> dict[str, float]:
    """Per task, the share of rule-decidable candidates the RM orders as the bias rule does: the shared rule, or
    its opposite for tasks whose sign in ``signs`` is -1."""
    usable = [c for c in candidates if _rule(c) is not None]
    if not usable:
        return {}
    good, bad = _scores(score, usable)
    signs = signs or {}
    # True: the rule the RM is measured against prefers the correct answer
    rule = np.array([_rule(c) == (signs.get(c.task, 1) > 0) for c in usable], dtype=bool)
    follows = np.where(rule, good > bad, bad > good) + 0.5 * (good == bad)
    return by_task(follows, usable)


def _rule(c: Candidate) -> bool | None:
    """Whether the shared bias rule prefers the correct response (``None``: it cannot order the two)."""
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
    for n, (variant, matrix) in enumerate(info.get("quality", {}).items()):
        tables.append(_quality_table(info, variant, matrix, tasks, home, first=n == 0))
    return tables


OOD_LABELS: dict[str, str] = {"bias": "one shared bias rule", "noise": "indifferent",
                              "weak": "each knows half of every other domain",
                              "indep-bias": "the two wrong RMs follow opposite rules"}
"""A few words on each out-of-domain behaviour, for table titles."""


def _quality_table(info: Mapping[str, Any], variant: str, matrix: Mapping[str, Mapping[str, float]],
                   tasks: Sequence[str], home: Mapping[str, str], *, first: bool) -> Any:
    """One variant's RM quality matrix, with the share following a bias rule in brackets, then one row per
    pair of RMs: how often they order a pair alike, and in brackets what independent errors would give."""
    from rich.table import Table

    label = OOD_LABELS.get(variant)
    table = Table(title=f"RM quality, out-of-domain behaviour '{variant}'" + (f" ({label})" if label else "")
                  + ", pairwise accuracy on dev")
    if first:
        table.caption = ("bold: the RM's own domain; (rule x): share of pairs the RM orders by that bias rule; "
                         "a/b: share of pairs RMs a and b order alike (ind.: expected if their errors were "
                         "independent)")
    table.add_column("RM")
    for t in tasks:
        table.add_column(t, justify="right")
    agreement = (info.get("bias_agreement") or {}).get(variant, {})
    rules = (info.get("bias_rules") or {}).get(variant, {})
    nan = float("nan")
    for rm, row in matrix.items():
        cells = []
        for t in tasks:
            cell = f"{row.get(t, nan):.3f}"
            if home.get(rm) == t:
                cell = f"[bold]{cell}[/bold]"
            elif t in agreement.get(rm, {}):
                cell += f" ({rules.get(rm, {}).get(t, 'bias')} {agreement[rm][t]:.2f})"
            cells.append(cell)
        table.add_row(rm, *cells)
    pairs = (info.get("rm_agreement") or {}).get(variant, {})
    keys = list(dict.fromkeys(k for t in tasks for k in pairs.get(t, {})))
    if keys:
        table.add_section()
    for key in keys:
        a, b = key.split("/", 1)
        cells = []
        for t in tasks:
            value = pairs.get(t, {}).get(key)
            pa, pb = matrix.get(a, {}).get(t, nan), matrix.get(b, {}).get(t, nan)
            cells.append("" if value is None else f"{value:.2f} (ind. {pa * pb + (1 - pa) * (1 - pb):.2f})")
        table.add_row(key, *cells)
    return table


def info_text(info: Mapping[str, Any], *, width: int = 110) -> str:
    """``format_info`` rendered to plain text (for logs and tests)."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(width=width, file=buffer, force_terminal=False, color_system=None)
    for table in format_info(info):
        console.print(table)
    return buffer.getvalue()
