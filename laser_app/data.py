"""Prompts for ``laser run`` from a user's JSONL file: ``prompt``, optional ``answer`` and ``task`` per line.

Every problem names the file and the line so it can be fixed in an editor.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
>>> _ = path.write_text('{"prompt": "2+2=", "answer": "4", "task": "math"}\\n{"prompt": "Sky blue?"}\\n')
>>> [(e.prompt, e.answer, e.task) for e in load_examples(path)]
[('2+2=', '4', 'math'), ('Sky blue?', None, 'default')]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from laser_app.errors import DataError
from laser_app.world.tasks import Example

#: The task label of rows that do not name one.
DEFAULT_TASK = "default"


class ExampleLike(Protocol):
    """What the loop reads from a training or evaluation example (the built-in world's examples fit)."""

    @property
    def prompt(self) -> str: ...

    @property
    def answer(self) -> str | None: ...

    @property
    def task(self) -> str | None: ...


def task_of(example: ExampleLike) -> str:
    """The example's task label, :data:`DEFAULT_TASK` when it has none."""
    return example.task or DEFAULT_TASK


def load_examples(path: str | Path, *, require_answers: bool = False,
                  what: str = "data file") -> list[Example]:
    """Read a JSONL file of ``{"prompt": str, "answer"?: str, "task"?: str}`` objects (blank lines skipped).

    Raises :class:`~laser_app.errors.DataError` naming the file and line for a missing file, bad JSON,
    a missing or empty ``prompt``, a missing ``answer`` when ``require_answers``, or a file with no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; pass a JSONL file with one "
                        "{\"prompt\": ...} object per line")
    rows: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                rows.append(_parse_row(line, path, lineno, require_answers=require_answers, what=what))
    if not rows:
        raise DataError(f"{what} {path} has no rows; write one JSON object per line with at least "
                        "a \"prompt\"")
    return rows


def _parse_row(line: str, path: Path, lineno: int, *, require_answers: bool, what: str) -> Example:
    where = f"{what} {path} line {lineno}"
    try:
        obj = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object like {{\"prompt\": ...}}, got {type(obj).__name__}")
    prompt = obj.get("prompt")
    if prompt is None:
        keys = ", ".join(sorted(obj)) or "none"
        raise DataError(f"{where}: missing field \"prompt\" (fields present: {keys})")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: \"prompt\" must be a non-empty string, got {prompt!r}")
    answer = obj.get("answer")
    if isinstance(answer, bool) or (answer is not None and not isinstance(answer, str | int | float)):
        raise DataError(f"{where}: \"answer\" must be a string or a number, got {answer!r}")
    if answer is None and require_answers:
        raise DataError(f"{where}: missing field \"answer\" (evaluation data needs a reference answer "
                        "per row)")
    task = obj.get("task")
    if task is not None and (not isinstance(task, str) or not task.strip()):
        raise DataError(f"{where}: \"task\" must be a non-empty string, got {task!r}")
    return Example(prompt=prompt, answer=None if answer is None else str(answer), task=task or DEFAULT_TASK)


def by_task(examples: Sequence[ExampleLike]) -> dict[str, list[ExampleLike]]:
    """Group examples by task label, tasks in first-seen order.

    >>> sorted(by_task([Example("a", task="x"), Example("b", task="y"), Example("c", task="x")]))
    ['x', 'y']
    """
    groups: dict[str, list[ExampleLike]] = {}
    for ex in examples:
        groups.setdefault(task_of(ex), []).append(ex)
    return groups
