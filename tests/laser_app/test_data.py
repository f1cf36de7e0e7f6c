"""Loading ``--data`` / ``--eval-data`` JSONL: good rows, and errors naming the file and line of bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from laser_app.data import DEFAULT_TASK, by_task, load_examples, task_of
from laser_app.errors import DataError, LaserError


def write(tmp_path: Path, text: str, name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_with_and_without_optional_fields(tmp_path: Path) -> None:
    path = write(tmp_path, '{"prompt": "2+2=", "answer": "4", "task": "math"}\n\n'
                           '{"prompt": "Sky blue?", "id": 7}\n{"prompt": "3*3=", "answer": 9}\n')
    rows = load_examples(path)
    assert [(r.prompt, r.answer, r.task) for r in rows] == [
        ("2+2=", "4", "math"), ("Sky blue?", None, DEFAULT_TASK), ("3*3=", "9", DEFAULT_TASK)]
    assert [task_of(r) for r in rows] == ["math", "default", "default"]
    assert list(by_task(rows)) == ["math", "default"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file .*nope.jsonl does not exist"):
        load_examples(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_no_rows(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataError, match=r"d.jsonl has no rows; write one JSON object per line"):
        load_examples(write(tmp_path, text))


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "ok"', r"line 2: not valid JSON \(Expecting ',' delimiter at column 16\)"),
    ('["prompt"]', r"line 2: expected a JSON object like \{\"prompt\": ...\}, got list"),
    ('{"question": "no prompt", "answer": "x"}',
     r"line 2: missing field \"prompt\" \(fields present: answer, question\)"),
    ('{"prompt": "   "}', r"line 2: \"prompt\" must be a non-empty string"),
    ('{"prompt": 5}', r"line 2: \"prompt\" must be a non-empty string, got 5"),
    ('{"prompt": "q", "answer": [1]}', r"line 2: \"answer\" must be a string or a number, got \[1\]"),
    ('{"prompt": "q", "answer": true}', r"line 2: \"answer\" must be a string or a number, got True"),
    ('{"prompt": "q", "task": ""}', r"line 2: \"task\" must be a non-empty string"),
])
def test_bad_rows_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, '{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as info:
        load_examples(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, LaserError)


def test_evaluation_rows_need_answers(tmp_path: Path) -> None:
    path = write(tmp_path, '{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n', name="e.jsonl")
    with pytest.raises(DataError, match=r"eval data file .*e.jsonl line 2: missing field \"answer\""):
        load_examples(path, require_answers=True, what="eval data file")
