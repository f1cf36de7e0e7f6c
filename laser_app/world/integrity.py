"""Whether a built world's files are what its build wrote, and the error that says they are not.

``world.json`` records every other file's size and SHA-256 (``files``, from :func:`file_sums`).
:class:`~laser_app.world.build.World` checks them each time it opens a world (:func:`check_sums`; about 5 MB:
a few milliseconds, tens when the files are not in the page cache), so a truncated or edited file is reported
as a :class:`WorldDamagedError`, naming the file, before any model loads. A damaged world is never rebuilt
behind the user's back: only ``laser world build --force`` (:func:`rebuild_command`) replaces it. Worlds built
before the checksums were recorded still open, unverified: their files are checked for what can be checked
without them (:func:`check_structure`: present, JSON that parses, safetensors files as long as their headers
say).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from laser_app.errors import LaserError

ENV_CACHE_DIR = "LASER_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$LASER_CACHE_DIR`` when set, else ``~/.cache/laser`` (here for :func:`rebuild_command`, which leaves
    this folder unnamed; :mod:`laser_app.world.build` re-exports it).

    >>> import os; os.environ[ENV_CACHE_DIR] = "/tmp/laser-cache"; str(default_cache_dir())
    '/tmp/laser-cache'
    >>> del os.environ[ENV_CACHE_DIR]
    """
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "laser"


class WorldDamagedError(LaserError):
    """A built world whose files are not what its build wrote (truncated, edited or missing): one line naming
    the file and the command that rebuilds the world.

    >>> print(WorldDamagedError("/c/world-v5-seed2", "world.json", "not valid JSON"))  # doctest: +ELLIPSIS
    the built-in world at /c/world-v5-seed2 is damaged (world.json: not valid JSON); rebuild it with laser world ...
    """

    def __init__(self, path: str | Path, file: str, reason: str) -> None:
        self.path, self.file, self.reason = Path(path), file, reason
        super().__init__(f"the built-in world at {self.path} is damaged ({file}: {reason}); rebuild it with "
                         f"{rebuild_command(self.path)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.file, self.reason)


_WORLD_NAME = re.compile(r"world-v\d+-seed(?P<seed>-?\d+)(?:-scale(?P<scale>.+))?")


def rebuild_command(path: str | Path) -> str:
    """The ``laser world build --force`` command line that rebuilds the world in folder ``path``.

    >>> rebuild_command(default_cache_dir() / "world-v5-seed0"), rebuild_command("/c/world-v5-seed2")
    ('laser world build --force', 'laser world build --force --cache-dir /c --seed 2')
    """
    path = Path(path).expanduser()
    words = ["laser", "world", "build", "--force"]
    if path.parent.resolve() != default_cache_dir().resolve():
        words += ["--cache-dir", shlex.quote(str(path.parent))]
    named = _WORLD_NAME.fullmatch(path.name)
    if named is not None and named["seed"] != "0":
        words += ["--seed", named["seed"]]
    if named is not None and named["scale"] is not None:
        words += ["--scale", named["scale"]]
    return " ".join(words)


def read_meta(path: Path) -> dict[str, Any]:
    """``world.json`` of the world at ``path``, parsed; a file that does not parse, or is not a complete
    world's, means a damaged world (the build writes it last, in one piece)."""
    try:
        meta = json.loads((path / "world.json").read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise WorldDamagedError(path, "world.json", "not UTF-8") from None
    except json.JSONDecodeError as err:
        raise WorldDamagedError(path, "world.json", f"not valid JSON at line {err.lineno} column {err.colno}: "
                                                    f"{err.msg}") from None
    if not isinstance(meta, dict):
        raise WorldDamagedError(path, "world.json", f"a JSON {type(meta).__name__}, not an object")
    if meta.get("complete") is not True:
        raise WorldDamagedError(path, "world.json", "not marked complete")
    return meta


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sums(root: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``root`` but ``world.json``, by path relative to ``root``."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p != root / "world.json")
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": _digest(p)} for p in files}


def check_sums(path: Path, files: Any) -> None:
    """Every file ``files`` (``world.json``'s record) names has its size and SHA-256 (sizes first: cheap)."""
    if not isinstance(files, dict) or not files or not all(
            isinstance(r, dict) and isinstance(r.get("size"), int) and isinstance(r.get("sha256"), str)
            for r in files.values()):
        raise WorldDamagedError(path, "world.json", "its record of the files (`files`) is malformed")
    for name, record in files.items():
        file = path / name
        if not file.is_file():
            raise WorldDamagedError(path, name, "missing")
        size = file.stat().st_size
        if size != record["size"]:
            raise WorldDamagedError(path, name, f"{size} bytes, the build wrote {record['size']}")
    for name, record in files.items():
        if _digest(path / name) != record["sha256"]:
            raise WorldDamagedError(path, name, "its SHA-256 differs from the one the build recorded")


def check_structure(path: Path, expected: list[str]) -> None:
    """The checks a world without recorded sums allows: the files every build writes are there, JSON parses
    and each safetensors file is as long as its header says (a truncated one is not)."""
    for name in expected:
        if not (path / name).is_file():
            raise WorldDamagedError(path, name, "missing")
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p != path / "world.json"):
        name = file.relative_to(path).as_posix()
        try:
            if file.suffix == ".safetensors":
                _check_safetensors(file)
            elif file.suffix in (".json", ".jsonl"):
                for line in (file.read_text(encoding="utf-8").splitlines() if file.suffix == ".jsonl"
                             else [file.read_text(encoding="utf-8")]):
                    if line.strip():
                        json.loads(line)
        except ValueError as err:  # JSON and UTF-8 errors are ValueErrors
            raise WorldDamagedError(path, name, " ".join(str(err).split())) from None


def _check_safetensors(file: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header and the tensors' bytes, whose end the
    header gives: anything else is a ``ValueError``."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise ValueError(f"{size} bytes, shorter than its header says")
        header = json.loads(f.read(length))
    try:
        end = 8 + length + max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
                               default=0)
    except (AttributeError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"a malformed safetensors header ({type(err).__name__}: {err})") from None
    if end != size:
        raise ValueError(f"{size} bytes, its header says {end}")


def expected_files(meta: Mapping[str, Any], splits: Iterable[str]) -> list[str]:
    """The files every build writes, relative to the world's folder, for the world whose ``world.json`` is
    ``meta`` (its ``quality`` names the out-of-domain behaviours, its ``rm_for_task`` the RMs).

    >>> expected_files({"quality": {"bias": {}}, "rm_for_task": {"math": "rm-a"}}, ["test"])[::2]
    ['data/test.jsonl', 'policy/model.safetensors', 'rms/bias/rm-a/config.json']
    """
    rms = [f"rms/{ood}/{name}/{file}" for ood in meta["quality"] for name in meta["rm_for_task"].values()
           for file in ("config.json", "model.safetensors")]
    return [*(f"data/{split}.jsonl" for split in splits), "policy/config.json", "policy/model.safetensors",
            *(f"rms-{ood}.toml" for ood in meta["quality"]), *rms]
