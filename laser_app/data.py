"""Prompts for ``laser run``: a user's rows with a prompt, an optional answer and task, plain or conversational.

Rows come from JSONL, JSON, CSV, Parquet, a saved ``datasets`` folder or a hub id (see
:mod:`laser_app.data_sources`). Columns can be renamed (``prompt_column=`` ...), answers cleaned
(``answer_format="gsm8k"`` or ``"boxed"``), and a prompt may be a conversation in TRL's conventions: a list of
``{"role", "content"}`` messages in the prompt column, or a ``messages`` column whose last user turn ends the
prompt. Every problem names the source and the line or row so it can be fixed.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
>>> _ = path.write_text('{"prompt": "2+2=", "answer": "4", "task": "math"}\\n{"prompt": "Sky blue?"}\\n')
>>> [(e.prompt, e.answer, e.task) for e in load_examples(path)]
[('2+2=', '4', 'math'), ('Sky blue?', None, 'default')]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from laser_app.answers import ANSWER_FORMATS, clean_answer
from laser_app.data_sources import Table, open_table
from laser_app.errors import DataError
from laser_app.world.tasks import Example

#: The task label of rows that do not name one.
DEFAULT_TASK = "default"
#: Values of ``answer_format``: keep answers as they are, or take a GSM8K ``#### n`` or the last ``\\boxed{}``.
#: The roles a conversational row may use.
ROLES = ("system", "user", "assistant")

Messages = tuple[dict[str, str], ...]


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


def messages_of(example: ExampleLike) -> Messages | None:
    """The example's prompt conversation for a chat template, ``None`` for a plain-text prompt.

    >>> messages_of(Example("Hi")) is None
    True
    """
    return getattr(example, "messages", None)


def render_plain(messages: Sequence[Mapping[str, str]]) -> str:
    """A conversation as plain text, for reward models and policies without a chat template.

    One user message is its content; otherwise each message is ``"{Role}: {content}"``, joined by blank lines
    (a prompt conversation ends with its last user turn, so that comes last).

    >>> render_plain([{"role": "user", "content": "2+2="}])
    '2+2='
    >>> print(render_plain([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2="}]))
    System: Be brief.
    <BLANKLINE>
    User: 2+2=
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


class _Columns(NamedTuple):
    prompt: str
    answer: str
    task: str
    messages: str


_DEFAULTS = _Columns("prompt", "answer", "task", "messages")
_FLAGS = _Columns("--prompt-column", "--answer-column", "--task-column", "--messages-column")


def load_examples(path: str | Path, *, require_answers: bool = False, what: str = "data file",
                  prompt_column: str = "prompt", answer_column: str = "answer", task_column: str = "task",
                  messages_column: str = "messages", answer_format: str = "none") -> list[Example]:
    """Read examples from ``path``: a file, a saved dataset folder (``FOLDER[:SPLIT]``) or a hub id
    (``NAME[:CONFIG][:SPLIT]``); see :mod:`laser_app.data_sources`.

    Each row needs a prompt (the ``prompt_column``, or a ``messages_column`` conversation); answers
    (numbers become strings) and tasks are optional, and ``answer_format`` cleans answers. Raises
    :class:`~laser_app.errors.DataError` naming the source and line or row for a missing source, bad JSON, a
    missing column or field, a bad conversation, a missing ``answer`` when ``require_answers``, or no rows.
    """
    if answer_format not in ANSWER_FORMATS:
        raise DataError(f"answer format {answer_format!r} is unknown; pass --answer-format with one of "
                        f"{', '.join(ANSWER_FORMATS)}")
    cols = _Columns(prompt_column, answer_column, task_column, messages_column)
    table = open_table(path, what=what)
    if table.columns is not None:
        _check_columns(table, set(table.columns), cols, require_answers=require_answers, what=what)
    rows: list[Example] = []
    seen: set[str] = set()
    for number, row in table.rows:
        seen.update(row)
        if table.blank_is_missing:
            row = {k: None if v == "" and k != cols.prompt else v for k, v in row.items()}
        rows.append(_to_example(row, f"{what} {table.name} {table.unit} {number}", cols,
                                fixed=table.columns is not None, require_answers=require_answers,
                                answer_format=answer_format))
    if not rows:
        raise DataError(f"{what} {table.name} has no rows; {table.empty_hint}")
    if table.columns is None:  # JSON rows: an explicit column must appear in some row
        _check_columns(table, seen, cols, require_answers=False, what=what)
    return rows


def _check_columns(table: Table, have: set[str], cols: _Columns, *, require_answers: bool, what: str) -> None:
    listed = ", ".join(sorted(have)) if table.columns is None else ", ".join(table.columns)
    conversational = cols.prompt == _DEFAULTS.prompt and cols.messages in have
    needed = [
        (cols.prompt, _FLAGS.prompt, cols.prompt not in have and not conversational and bool(have)),
        (cols.messages, _FLAGS.messages, cols.messages != _DEFAULTS.messages and cols.messages not in have),
        (cols.answer, _FLAGS.answer, cols.answer not in have and (
            cols.answer != _DEFAULTS.answer or (require_answers and cols.messages not in have))),
        (cols.task, _FLAGS.task, cols.task != _DEFAULTS.task and cols.task not in have),
    ]
    for column, flag, missing in needed:
        if missing:
            raise DataError(f"{what} {table.name} has no column {column!r} (columns: {listed or 'none'}); "
                            f"pass {flag} with one of them")


def _to_example(row: dict[str, Any], where: str, cols: _Columns, *, fixed: bool, require_answers: bool,
                answer_format: str) -> Example:
    prompt: Any = row.get(cols.prompt)
    messages: Messages | None = None
    reply: str | None = None  # a trailing assistant message, the answer when the row has none
    if prompt is None and row.get(cols.messages) is not None:
        messages, reply = _conversation(row[cols.messages], where, cols.messages)
    elif prompt is None and fixed and cols.prompt in row:
        raise DataError(f"{where}: \"{cols.prompt}\" is empty; every row needs a prompt")
    elif prompt is None:
        keys = ", ".join(sorted(row)) or "none"
        longbench = "; a LongBench file (input, context) goes to laser bon --longbench" if {
            "input", "context"} <= set(row) else ""
        raise DataError(f"{where}: missing field \"{cols.prompt}\" (fields present: {keys}){longbench}")
    elif isinstance(prompt, list | tuple):
        messages, reply = _conversation(prompt, where, cols.prompt)
        if reply is not None or messages[-1]["role"] != "user":
            raise DataError(f"{where}: a \"{cols.prompt}\" conversation must end with the user's turn; move "
                            f"later turns to \"{cols.answer}\" or use a \"{cols.messages}\" column")
    elif not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: \"{cols.prompt}\" must be a non-empty string, got {prompt!r}")
    answer = row.get(cols.answer)
    if answer is None:
        answer = reply
    if isinstance(answer, bool) or (answer is not None and not isinstance(answer, str | int | float)):
        raise DataError(f"{where}: \"{cols.answer}\" must be a string or a number, got {answer!r}")
    if answer is None and require_answers:
        also = " and no assistant message after the last user turn" if messages is not None else ""
        raise DataError(f"{where}: missing field \"{cols.answer}\"{also} (evaluation data needs a reference "
                        "answer per row)")
    if answer is not None:
        try:
            answer = clean_answer(str(answer), answer_format)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
    task = row.get(cols.task)
    if task is not None and (not isinstance(task, str) or not task.strip()):
        raise DataError(f"{where}: \"{cols.task}\" must be a non-empty string, got {task!r}")
    text = render_plain(messages) if messages is not None else prompt
    return Example(prompt=text, answer=answer, task=task or DEFAULT_TASK, messages=messages)


def _conversation(value: Any, where: str, column: str) -> tuple[Messages, str | None]:
    """The turns up to and including the last user turn, and the content of a trailing assistant turn."""
    if isinstance(value, Mapping) and isinstance(value.get("role"), list):  # datasets' columnar form
        value = [{"role": r, "content": c} for r, c in zip(value["role"], value.get("content") or [], strict=False)]
    if not isinstance(value, list | tuple) or not value:
        raise DataError(f"{where}: \"{column}\" must be a non-empty list of {{\"role\": ..., \"content\": ...}} "
                        f"messages, got {value!r}")
    turns: list[dict[str, str]] = []
    for i, msg in enumerate(value, start=1):
        role = msg.get("role") if isinstance(msg, Mapping) else None
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if not isinstance(role, str) or not isinstance(content, str):
            raise DataError(f"{where}: message {i} of \"{column}\" needs a string \"role\" and \"content\", got "
                            f"{msg!r}; write each turn as {{\"role\": \"user\", \"content\": \"...\"}}")
        if role not in ROLES:
            raise DataError(f"{where}: message {i} of \"{column}\" has unknown role {role!r}; use one of "
                            f"{', '.join(ROLES)}")
        turns.append({"role": role, "content": content})
    last_user = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=None)
    if last_user is None:
        raise DataError(f"{where}: \"{column}\" has no user turn; add a {{\"role\": \"user\", \"content\": ...}} "
                        "message with the prompt")
    if not turns[last_user]["content"].strip():
        raise DataError(f"{where}: the last user message of \"{column}\" is empty; write the prompt there")
    head, tail = tuple(turns[:last_user + 1]), turns[last_user + 1:]
    return head, tail[-1]["content"] if tail and tail[-1]["role"] == "assistant" else None


# ------------------------------------------------------------------------------- the policy's window
class Window(NamedTuple):
    """The policy's context window in tokens and the part of it kept for the answer (``max_new_tokens``)."""

    tokens: int
    answer: int

    @property
    def room(self) -> int:
        """The tokens a prompt may take."""
        return self.tokens - self.answer


#: Prompts tokenized per call when measuring them (bounds the memory a large data file takes).
_CHUNK = 512


def fit_prompts(rows: Sequence[ExampleLike], *, tokenizer: Any, ask: Callable[[ExampleLike], str],
                window: Window, where: str, mode: str = "error") -> tuple[list[ExampleLike], int]:
    """``rows`` whose prompts, as the policy is asked (``ask``), fit ``window``; and how many were cut.

    A longer prompt is a :class:`~laser_app.errors.DataError` naming ``where`` and its row (1-based) when
    ``mode`` is ``"error"``; with ``"truncate"`` it keeps its last tokens (the question at the end survives;
    a conversation loses its earliest turns' text first).

    >>> from laser_adapters.tokenization import char_tokenizer
    >>> rows = [Example("2+2="), Example("Long story. What is 3+3?")]
    >>> kw = dict(tokenizer=char_tokenizer(), ask=lambda ex: ex.prompt, window=Window(16, 4), where="data file d")
    >>> fit_prompts(rows, **kw)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.errors.DataError: data file d row 2: the prompt is 25 tokens, but the policy's window leaves 12 ...
    >>> fitted, cut = fit_prompts(rows, mode="truncate", **kw)
    >>> [ex.prompt for ex in fitted], cut
    (['2+2=', 'hat is 3+3?'], 1)
    """
    out, cut = list(rows), 0
    for start in range(0, len(out), _CHUNK):
        chunk = out[start:start + _CHUNK]
        lengths = [len(ids) for ids in tokenizer([ask(ex) for ex in chunk], add_special_tokens=True)["input_ids"]]
        for i, (ex, length) in enumerate(zip(chunk, lengths, strict=True), start=start):
            if length <= window.room:
                continue
            if mode != "truncate":
                raise DataError(
                    f"{where} row {i + 1}: the prompt is {length} tokens, but the policy's window leaves "
                    f"{window.room} ({window.tokens} tokens minus {window.answer} for the answer, "
                    "--max-new-tokens); pass --long-prompts truncate to keep the end of each long prompt, or "
                    "shorten the prompt")
            out[i] = _truncated(ex, length, tokenizer=tokenizer, ask=ask, window=window, where=f"{where} row {i + 1}")
            cut += 1
    return out, cut


def _truncated(example: ExampleLike, length: int, *, tokenizer: Any, ask: Callable[[ExampleLike], str],
               window: Window, where: str) -> ExampleLike:
    """``example`` with the start of its prompt cut until it fits (re-measured: a cut may change tokenization)."""
    for attempt in range(8):
        drop = length - window.room + attempt  # a little more on each retry, so it always ends
        messages = messages_of(example)
        if messages is None:
            example = replace(example, prompt=_cut_start(tokenizer, example.prompt, drop))  # type: ignore[type-var]
            empty = not example.prompt.strip()
        else:
            kept = _cut_conversation(tokenizer, messages, drop)
            example = replace(example, messages=kept, prompt=render_plain(kept))  # type: ignore[type-var]
            empty = not kept[-1]["content"].strip()
        if empty:
            break
        length = len(tokenizer(ask(example), add_special_tokens=True)["input_ids"])
        if length <= window.room:
            return example
    raise DataError(f"{where}: the prompt cannot be cut to fit the policy's window ({window.tokens} tokens minus "
                    f"{window.answer} for the answer): what surrounds it takes the room; lower --max-new-tokens")


def _cut_start(tokenizer: Any, text: str, drop: int) -> str:
    """``text`` without its first ``drop`` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return str(tokenizer.decode(ids[drop:])) if drop < len(ids) else ""


def _cut_conversation(tokenizer: Any, messages: Messages, drop: int) -> Messages:
    """``messages`` without the first ``drop`` tokens of their text, earliest turns first; a turn cut to nothing
    goes, and so does an assistant turn left at the start. The last turn (the user's) always stays."""
    kept: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        last = i == len(messages) - 1
        if drop > 0:
            n = len(tokenizer(message["content"], add_special_tokens=False)["input_ids"])
            content = _cut_start(tokenizer, message["content"], drop)
            drop -= n
            if not content and not last:
                continue
            message = {**message, "content": content}
        if not kept and message["role"] == "assistant" and not last:
            continue
        kept.append(message)
    return tuple(kept)


def by_task(examples: Sequence[ExampleLike]) -> dict[str, list[ExampleLike]]:
    """Group examples by task label, tasks in first-seen order.

    >>> sorted(by_task([Example("a", task="x"), Example("b", task="y"), Example("c", task="x")]))
    ['x', 'y']
    """
    groups: dict[str, list[ExampleLike]] = {}
    for ex in examples:
        groups.setdefault(task_of(ex), []).append(ex)
    return groups
