"""Where ``laser run --data`` rows come from: JSONL, JSON, CSV, Parquet, a saved ``datasets`` folder, or a hub id.

:func:`open_table` turns the flag's value into a :class:`Table` of numbered rows (plain dicts); turning rows into
examples is :mod:`laser_app.data`'s job. Sources, tried in this order:

- an existing file, by suffix: ``.json`` (an array of objects, or JSON lines), ``.csv``, ``.parquet``; any other
  suffix (``.jsonl`` included) is read as JSON lines, one numbered line at a time;
- an existing folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``, or ``FOLDER:SPLIT``;
- a hub id ``NAME[:CONFIG][:SPLIT]`` (``gsm8k:main:train``); ``NAME:X`` reads ``X`` as a split when it looks
  like one (``train``, ``test``, ``validation``, ``dev``, or a slice such as ``train[:100]``), else as a config.

CSV cells are kept as text (``007`` stays ``007``), which is why CSV is read with :mod:`csv`, not pandas.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
>>> _ = path.write_text("prompt,answer\\n2+2=,4\\n")
>>> table = open_table(path)
>>> table.columns, list(table.rows)
(('prompt', 'answer'), [(1, {'prompt': '2+2=', 'answer': '4'})])
>>> parse_hub_spec("openai/gsm8k:main:test"), parse_hub_spec("imdb:test"), parse_hub_spec("d.jsonl")
(('openai/gsm8k', 'main', 'test'), ('imdb', None, 'test'), None)
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from laser_app.errors import DataError

#: A row number (a line number for JSON lines) and the row.
Row = tuple[int, dict[str, Any]]

INSTALL_HINT = "pip install 'laser-bandits[llm]'"
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".pq", ".arrow", ".txt")
_SPLIT_NAMES = ("train", "test", "validation", "valid", "dev", "eval")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_HUB_PART = re.compile(r"[\w.+%-]*(\[[\w.:%+-]*\])?")
_SPEC_COLON = re.compile(r":(?![^\[]*\])")  # a colon outside a slice like train[:100]


@dataclass(frozen=True)
class Table:
    """Rows of one source, read lazily so the first bad row is reported first.

    ``columns`` is ``None`` when rows may have different keys (JSON); ``unit`` names a row in messages
    (``"line"`` for JSON lines, where the number is the line number).
    """

    name: str
    rows: Iterator[Row]
    columns: tuple[str, ...] | None = None
    unit: str = "row"
    empty_hint: str = "pass a file or split with at least one row"
    blank_is_missing: bool = False  # CSV: an empty cell is a missing value


def open_table(source: str | Path, *, what: str = "data file") -> Table:
    """The rows of ``source`` (see the module docstring); raises :class:`DataError` naming it when it cannot."""
    path = Path(source)
    if path.is_file():
        return _read_file(path, what)
    if path.is_dir():
        return _read_saved(path, None, what)
    text = str(source)
    folder, colon, split = text.rpartition(":")
    if colon and folder and split and Path(folder).is_dir():
        return _read_saved(Path(folder), split, what)
    spec = parse_hub_spec(text)
    if spec is not None:
        return _read_hub(text, *spec, what=what)
    raise DataError(f"{what} {path} does not exist; pass a JSONL file with one "
                    "{\"prompt\": ...} object per line")


def parse_hub_spec(text: str) -> tuple[str, str | None, str | None] | None:
    """``(name, config, split)`` of a hub id ``NAME[:CONFIG][:SPLIT]``, or ``None`` when ``text`` is no hub id."""
    parts = _SPEC_COLON.split(text)
    name, rest = parts[0], parts[1:]
    if (len(rest) > 2 or not _HUB_NAME.fullmatch(name) or name.lower().endswith(_FILE_SUFFIXES)
            or not all(_HUB_PART.fullmatch(p) for p in rest)):
        return None
    if not rest:
        return name, None, None
    if len(rest) == 1:
        looks_like_split = rest[0].split("[")[0] in _SPLIT_NAMES or "[" in rest[0]
        return (name, None, rest[0] or None) if looks_like_split else (name, rest[0] or None, None)
    return name, rest[0] or None, rest[1] or None


def check_utf8(path: Path, *, what: str = "data file") -> None:
    """Raise a :class:`DataError` naming the line when ``path`` is not UTF-8 text.

    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "d.jsonl"
    >>> _ = bad.write_bytes(b'{"prompt": "ok"}\\n{"prompt": "caf\\xe9"}\\n')
    >>> check_utf8(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.errors.DataError: data file ... line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8
    """
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"{what} {path} line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the file "
                        "as UTF-8") from None


def read_json_lines(path: Path, *, what: str = "data file") -> Table:
    """One JSON object per non-blank line, numbered by line; bad JSON names the line and column."""
    check_utf8(path, what=what)

    def rows() -> Iterator[Row]:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{what} {path} line {lineno}"
                try:
                    obj = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as err:
                    detail = err.msg.removesuffix(" at")  # "Unterminated string starting at"
                    raise DataError(f"{where}: not valid JSON ({detail} at column {err.colno})") from None
                yield lineno, _as_object(obj, where)

    return Table(str(path), rows(), unit="line",
                 empty_hint="write one JSON object per line with at least a \"prompt\"")


def _as_object(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object like {{\"prompt\": ...}}, got {type(obj).__name__}")
    return obj


def _read_file(path: Path, what: str) -> Table:
    suffix = path.suffix.lower()
    if suffix in (".json", ".csv"):
        check_utf8(path, what=what)
    if suffix == ".json":
        return _read_json(path, what)
    if suffix == ".csv":
        return _read_csv(path, what)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, what)
    return read_json_lines(path, what=what)


def _read_json(path: Path, what: str) -> Table:
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        return read_json_lines(path, what=what)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        detail = err.msg.removesuffix(" at")
        raise DataError(f"{what} {path}: not valid JSON ({detail} at line {err.lineno} column {err.colno}); "
                        "write one array of {\"prompt\": ...} objects") from None
    rows = ((i, _as_object(obj, f"{what} {path} row {i}")) for i, obj in enumerate(items, start=1))
    return Table(str(path), rows, empty_hint="write a JSON array with at least one {\"prompt\": ...} object")


def _read_csv(path: Path, what: str) -> Table:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        columns = tuple(next(csv.reader(fh), []))

    def rows() -> Iterator[Row]:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=1):
                yield i, {k: v for k, v in row.items() if k is not None}  # None keys: cells past the header

    return Table(str(path), rows(), columns, empty_hint="write a header line and at least one row",
                 blank_is_missing=True)


def _read_parquet(path: Path, what: str) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {what} {path} needs pyarrow; {INSTALL_HINT}") from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{what} {path} is not a readable Parquet file ({_short(err)}); "
                        "write it with pandas.DataFrame.to_parquet or Dataset.to_parquet") from None
    return Table(str(path), enumerate(table.to_pylist(), start=1), tuple(table.column_names))


def _datasets(what: str, name: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading {what} {name} needs the datasets package; {INSTALL_HINT}") from None
    return datasets


def _read_saved(folder: Path, split: str | None, what: str) -> Table:
    datasets = _datasets(what, str(folder))
    try:
        loaded = datasets.load_from_disk(str(folder))
    except FileNotFoundError as err:
        raise DataError(f"{what} {folder} is a folder but not a saved dataset ({_short(err)}); pass a data file "
                        "or a folder written by Dataset.save_to_disk") from None
    return _from_dataset(loaded, split, str(folder), f"{folder}:SPLIT", what)


def _read_hub(text: str, name: str, config: str | None, split: str | None, *, what: str) -> Table:
    datasets = _datasets(what, repr(text))
    try:
        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # an unknown id, no network or a bad config/split all raise different types
        raise DataError(f"{what} {text!r} is neither a local file/folder nor a loadable hub dataset "
                        f"({_short(err)}); check the id or pass a local file") from None
    return _from_dataset(loaded, None, text, f"{name}:{config or ''}:SPLIT", what)


def _from_dataset(loaded: Any, split: str | None, label: str, split_hint: str, what: str) -> Table:
    """The rows of a ``Dataset``, or of one split of a ``DatasetDict`` (``train`` by default)."""
    if hasattr(loaded, "keys"):  # a DatasetDict
        splits = sorted(loaded.keys())
        if split is None and "train" not in splits:
            raise DataError(f"{what} {label} has splits {', '.join(splits)} and no 'train'; "
                            f"pick one with {split_hint}")
        split = split or "train"
        if split not in splits:
            raise DataError(f"{what} {label} has no split {split!r} (splits: {', '.join(splits)}); "
                            f"pass {split_hint} with one of them")
        loaded, label = loaded[split], f"{label}:{split}"
    elif split is not None:
        raise DataError(f"{what} {label} is one dataset without splits; drop ':{split}'")
    return Table(label, enumerate(loaded, start=1), tuple(loaded.column_names))


def _short(err: BaseException) -> str:
    """``Type: first line of the message``, cut to fit in a one-line error."""
    first = (str(err).strip().splitlines() or [""])[0]
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
