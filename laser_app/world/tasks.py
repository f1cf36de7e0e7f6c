"""The built-in world's tasks: three seeded domains with exact checkers, and the JSONL data format.

The three domains mirror the paper's datasets at a scale a character-level model can learn:

- ``math`` (like GSM8K): one-step word problems that add or subtract two-digit numbers; the answer is a number.
- ``yesno`` (like StrategyQA): yes/no questions about comparisons, parity and a sum against a number.
- ``mcq`` (like MMLU): four options ``A)``-``D)`` (the largest, the smallest, the even one, or a small sum);
  the answer is a letter.

Every prompt is one line that ends with the answer cue ``"Answer:"``; the expected continuation is
``" " + answer + "\\n"`` (the newline is the stop string). Splits are drawn from one seeded stream per domain
without repeating a prompt, so they are disjoint; answers are balanced (yes/no 50:50, letters uniform).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

TASKS: tuple[str, ...] = ("math", "yesno", "mcq")
STOP = "\n"
ANSWER_CUE = "A:"
LETTERS = ("A", "B", "C", "D")
DEFAULT_SPLIT_ORDER = ("test", "dev", "train")

_NAMES = ("Ann", "Bob", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lea", "Max", "Ned",
          "Oli", "Pam", "Ray", "Sue", "Tom", "Uma")
_OBJECTS = ("apples", "pens", "books", "coins", "cards", "eggs", "shells", "stamps", "rocks", "cups")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Example:
    """One prompt with its reference answer (``None`` when unknown) and its task label.

    >>> ex = Example("Q: Is 7 odd? Answer:", "yes", "yesno")
    >>> ex.target
    ' yes\\n'
    """

    prompt: str
    answer: str | None = None
    task: str = "default"
    solution: str | None = None
    #: The prompt as a conversation of ``{"role", "content"}`` dicts for a chat template (``None``: plain text);
    #: ``prompt`` then holds its plain-text rendering. Left out of ``hash`` (dicts are unhashable) and ``repr``.
    messages: tuple[dict[str, str], ...] | None = field(default=None, hash=False, repr=False)

    @property
    def response(self) -> str:
        """The response a perfect policy writes (before the stop string): a space, then the worked
        solution when there is one (math shows its calculation, as GSM8K solutions do), else the answer."""
        if self.answer is None:
            raise ValueError(f"example has no answer: {self.prompt!r}; targets need an 'answer' field")
        return f" {self.solution if self.solution is not None else self.answer}"

    @property
    def target(self) -> str:
        """The SFT target: the response and the stop string."""
        return self.response + STOP


# ----------------------------------------------------------------------------------------------- generators
Gen = Callable[[np.random.Generator], tuple[str, ...]]


def _q(text: str) -> str:
    return f"Q: {text} {ANSWER_CUE}"


def _two_names(rng: np.random.Generator) -> tuple[str, str]:
    i, j = rng.choice(len(_NAMES), size=2, replace=False)
    return _NAMES[int(i)], _NAMES[int(j)]


def _math_add(rng: np.random.Generator) -> tuple[str, ...]:
    n, m = _two_names(rng)
    o = _OBJECTS[int(rng.integers(len(_OBJECTS)))]
    a, b = (int(x) for x in rng.integers(1, 10, size=2))
    text = (f"{n} has {a} {o} and gets {b} more.",
            f"{n} has {a} {o}. {m} gives {n} {b}.",
            f"A box has {a} {o}. {n} adds {b}.")[int(rng.integers(3))]
    return _q(f"{text} How many now?"), str(a + b), f"{a}+{b}={a + b}"


def _math_sub(rng: np.random.Generator) -> tuple[str, ...]:
    n, _m = _two_names(rng)
    o = _OBJECTS[int(rng.integers(len(_OBJECTS)))]
    b, c = (int(x) for x in rng.integers(1, 10, size=2))
    a = b + c
    text = (f"{n} has {a} {o} and gives away {b}.",
            f"{n} has {a} {o} and loses {b}.",
            f"A box has {a} {o}. {n} takes {b}.")[int(rng.integers(3))]
    return _q(f"{text} How many now?"), str(c), f"{a}-{b}={c}"


def _yes(rng: np.random.Generator) -> tuple[bool, str]:
    yes = bool(rng.integers(2))
    return yes, "yes" if yes else "no"


def _yn_compare(rng: np.random.Generator) -> tuple[str, str]:
    yes, ans = _yes(rng)
    a, b = sorted(int(x) for x in rng.choice(np.arange(10, 100), size=2, replace=False))
    word = ("more", "less")[int(rng.integers(2))]
    x, y = (b, a) if yes == (word == "more") else (a, b)
    return _q(f"Is {x} {word} than {y}?"), ans


def _yn_parity(rng: np.random.Generator) -> tuple[str, str]:
    yes, ans = _yes(rng)
    word = ("even", "odd")[int(rng.integers(2))]
    x = int(rng.integers(5, 5000)) * 2 + (0 if (word == "even") == yes else 1)
    return _q(f"Is {x} {word}?"), ans


def _options(rng: np.random.Generator, question: str, right: int, others: list[int]) -> tuple[str, str]:
    pos = int(rng.integers(4))
    options = [*others[:pos], right, *others[pos:]]
    shown = " ".join(f"{letter}) {v}" for letter, v in zip(LETTERS, options, strict=True))
    return _q(f"{question} {shown}"), LETTERS[pos]


def _mcq_extreme(rng: np.random.Generator) -> tuple[str, str]:
    values = [int(x) for x in rng.choice(10, size=4, replace=False)]
    largest = bool(rng.integers(2))
    right = max(values) if largest else min(values)
    return _options(rng, "Which is largest?" if largest else "Which is smallest?", right,
                    [v for v in values if v != right])


def _mcq_even(rng: np.random.Generator) -> tuple[str, str]:
    right = int(rng.integers(5, 50)) * 2
    others = [int(x) * 2 + 1 for x in rng.choice(np.arange(5, 50), size=3, replace=False)]
    return _options(rng, "Which is even?", right, others)


SUBTYPES: dict[str, dict[str, Gen]] = {
    "math": {"add": _math_add, "sub": _math_sub},
    "yesno": {"compare": _yn_compare, "parity": _yn_parity},
    "mcq": {"extreme": _mcq_extreme, "even": _mcq_even},
}
"""The kinds of question each built-in task draws from (equally often), by name."""

_SECOND_SUBTYPE = {"math": re.compile(r"gives away|loses|takes"), "yesno": re.compile(r"\b(?:even|odd)\?"),
                   "mcq": re.compile(r"Which is even\?")}


def subtype(task: str, prompt: str) -> str:
    """The kind of built-in question ``prompt`` is (a key of ``SUBTYPES[task]``), read from its wording.

    >>> subtype("yesno", "Q: Is 12 even? A:"), subtype("math", "Q: Ann has 9 pens and loses 2. How many now? A:")
    ('parity', 'sub')
    """
    if task not in _SECOND_SUBTYPE:
        raise ValueError(f"no question kinds for task {task!r}; built-in tasks: {list(TASKS)}")
    first, second = SUBTYPES[task]
    return second if _SECOND_SUBTYPE[task].search(prompt) else first


def _mixture(gens: tuple[Gen, ...]) -> Gen:
    def draw(rng: np.random.Generator) -> tuple[str, ...]:
        return gens[int(rng.integers(len(gens)))](rng)
    return draw


GENERATORS: dict[str, Gen] = {task: _mixture(tuple(gens.values())) for task, gens in SUBTYPES.items()}


# ----------------------------------------------------------------------------------------------- splits
def make_splits(seed: int, sizes: Mapping[str, int | Mapping[str, int]], *,
                tasks: Sequence[str] = TASKS) -> dict[str, list[Example]]:
    """Draw disjoint splits, ``sizes[split]`` examples *per task* (or a per-task mapping), filled in the
    order of ``sizes``.

    Each task has its own generator seeded from ``(seed, task)``, so adding a task or a later split never
    changes the earlier ones. Each split is shuffled (seeded) across tasks.

    >>> s = make_splits(0, {"test": 2, "train": 3})
    >>> [len(s["test"]), len(s["train"])]
    [6, 9]
    """
    def size(name: str, task: str) -> int:
        value = sizes[name]
        n = int(value.get(task, 0)) if isinstance(value, Mapping) else int(value)
        if n < 0:
            raise ValueError(f"split size must be >= 0, got {name}={value}")
        return n

    unknown = [t for t in tasks if t not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks: {sorted(GENERATORS)}")
    out: dict[str, list[Example]] = {name: [] for name in sizes}
    for t_index, task in enumerate(tasks):
        rng = np.random.default_rng([seed, 7_919, t_index])
        seen: set[str] = set()
        for name in sizes:
            out[name].extend(_draw(task, rng, size(name, task), seen))
    for s_index, name in enumerate(sizes):
        order = np.random.default_rng([seed, 104_729, s_index]).permutation(len(out[name]))
        out[name] = [out[name][int(i)] for i in order]
    return out


def _draw(task: str, rng: np.random.Generator, n: int, seen: set[str]) -> list[Example]:
    gen, tries = GENERATORS[task], 0
    items: list[Example] = []
    while len(items) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"task {task!r} ran out of distinct prompts after {len(seen)}; ask for fewer examples")
        prompt, answer, *solution = gen(rng)
        if prompt not in seen:
            seen.add(prompt)
            items.append(Example(prompt, answer, task, solution[0] if solution else None))
    return items


def make_tasks(seed: int, n_train: int, n_dev: int, n_test: int) -> dict[str, list[Example]]:
    """The built-in tasks' ``train``/``dev``/``test`` splits, sizes per task (3 tasks), disjoint, seeded.

    >>> splits = make_tasks(0, n_train=4, n_dev=2, n_test=2)
    >>> len(splits["train"]), splits["train"][0].prompt.endswith(ANSWER_CUE)
    (12, True)
    """
    return make_splits(seed, {"test": n_test, "dev": n_dev, "train": n_train})


# ----------------------------------------------------------------------------------------------- checking
def parse_number(text: str) -> float | None:
    """The last number in ``text`` (GSM8K convention, commas ignored), or ``None``.

    >>> parse_number(" 1,204 apples"), parse_number("none")
    (1204.0, None)
    """
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def normalize(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding punctuation and brackets.

    >>> normalize("  (B). "), normalize(" Yes!")
    ('b', 'yes')
    """
    return " ".join(text.split()).strip(" .,!?;:()[]'\"").lower()


def check_answer(task: str, response: str, answer: str) -> bool:
    """Whether ``response`` answers correctly: number match for ``math``, normalized exact match for
    ``yesno`` and ``mcq``, and for any other task exact match or number match (so user data works).

    >>> check_answer("math", " 68", "68"), check_answer("math", " 67", "68")
    (True, False)
    >>> check_answer("yesno", " Yes.", "yes"), check_answer("mcq", " (B)", "B"), check_answer("mcq", " BC", "B")
    (True, True, False)
    >>> check_answer("anything", " Paris", "paris"), check_answer("anything", "= 3.0", "3")
    (True, True)
    """
    if task in TASKS:  # the built-in tasks answer on one line
        response = response.split(STOP, 1)[0]
    if task == "math":
        got, want = parse_number(response), parse_number(answer)
        return got is not None and want is not None and got == want
    if task in ("yesno", "mcq"):
        return normalize(response) == normalize(answer)
    if normalize(response) == normalize(answer):
        return True
    got, want = parse_number(response), parse_number(answer)
    return got is not None and want is not None and got == want


# ----------------------------------------------------------------------------------------------- JSONL
def write_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples as JSONL with the fields ``prompt``, ``answer``, ``task`` (the ``--data`` format), plus
    ``solution`` where an example has one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            row = {k: v for k, v in asdict(ex).items() if k not in ("solution", "messages") or v is not None}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path, *, default_task: str = "default") -> list[Example]:
    """Read JSONL rows with a required ``prompt`` and optional ``answer``, ``task`` and ``solution``.

    Raises ``ValueError`` naming the file and line for a missing or non-string field, and for a file with no rows.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "d.jsonl")
    >>> _ = write_jsonl([Example("Q: 1+1? Answer:", "2", "math")], p)
    >>> read_jsonl(p)
    [Example(prompt='Q: 1+1? Answer:', answer='2', task='math', solution=None)]
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist; pass a JSONL file with a 'prompt' field per line")
    rows: list[Example] = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise ValueError(f"{path}:{i}: missing or empty 'prompt' (got {prompt!r}); every row needs one")
            answer, task = obj.get("answer"), obj.get("task", default_task)
            if answer is not None and not isinstance(answer, str | int | float):
                raise ValueError(f"{path}:{i}: 'answer' must be a string or number, got {answer!r}")
            if not isinstance(task, str) or not task:
                raise ValueError(f"{path}:{i}: 'task' must be a non-empty string, got {task!r}")
            solution = obj.get("solution")
            if solution is not None and not isinstance(solution, str):
                raise ValueError(f"{path}:{i}: 'solution' must be a string, got {solution!r}")
            rows.append(Example(prompt, None if answer is None else str(answer), task, solution))
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows; add JSONL lines with a 'prompt' field")
    return rows
