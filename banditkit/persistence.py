"""Save and load policies as JSON + ``.npz``, never pickle.

``save(policy, path)`` writes ``path`` as a directory holding

- ``state.json``: the policy's ``state_dict()`` (class name, hyperparameters, generator state, learned
  scalars) with every numpy array replaced by ``{"__ndarray__": "<key>"}``, plus the name of the
  array file;
- ``arrays-<token>.npz``: the arrays, stored uncompressed and loaded with ``allow_pickle=False``.

Arrays may sit at any depth of nested dicts and lists. Writing is atomic: a new directory is built
under a temporary name and renamed into place; an existing save gets a new array file first and then
its ``state.json`` is replaced by a rename, which is the commit point, so a crash at any moment leaves
either the old save or the new one, never a mix. Generator states hold 128-bit integers, which JSON
keeps exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from banditkit.base import BasePolicy, policy_class

FORMAT = "banditkit.policy"
FORMAT_VERSION = 1
STATE_FILE = "state.json"
_ARRAY_KEY = "__ndarray__"


def save(policy: BasePolicy, path: str | os.PathLike[str]) -> Path:
    """Write ``policy.state_dict()`` to the directory ``path`` (created or atomically replaced).

    >>> import tempfile, numpy as np
    >>> from banditkit.persistence import load, save
    >>> from banditkit.policies.linucb import LinUCB
    >>> policy = LinUCB(n_arms=2, dim=3, alpha=0.1, seed=0)
    >>> policy.update(1, 1.0, np.ones(3))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     restored = load(save(policy, f"{tmp}/policy"))
    >>> restored.select(np.ones(3)), restored.n_arms
    (1, 2)
    """
    target = Path(path)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "arrays": "",
                "state": _encode(policy.state_dict(), arrays, "state")}
    array_name = f"arrays-{secrets.token_hex(8)}.npz"
    document["arrays"] = array_name
    if target.exists():
        if not (target / STATE_FILE).is_file():
            raise ValueError(f"{target} exists and is not a directory written by banditkit.save; "
                             "choose a new path or remove it")
        _write_into(target, document, arrays, array_name)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            _write_files(work, document, arrays, array_name)
            os.chmod(work, 0o777 & ~_umask())
            os.rename(work, target)
        except BaseException:
            for child in work.glob("*"):
                child.unlink()
            with contextlib.suppress(OSError):
                work.rmdir()
            raise
        _fsync_dir(target.parent)
    return target


def load(path: str | os.PathLike[str]) -> BasePolicy:
    """Rebuild the policy saved at ``path`` by ``save`` (the generator state included)."""
    state = read_state(path)
    if not isinstance(state.get("policy"), str):
        raise ValueError(f"corrupt saved policy: the state at {path} names no policy class")
    # Through the named class, which may override from_state_dict (wrappers do).
    klass = policy_class(state["policy"])
    try:
        return klass.from_state_dict(state)
    except (TypeError, KeyError, AttributeError, IndexError) as err:  # fields that do not fit the class
        raise ValueError(f"corrupt saved policy: the state at {path} does not fit {klass.__name__} "
                         f"({type(err).__name__}: {err})") from None


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the state dict saved at ``path``, arrays restored."""
    source = Path(path)
    state_file = source / STATE_FILE
    if not state_file.is_file():
        what = "is not a directory" if source.exists() and not source.is_dir() else "has no " + STATE_FILE
        raise FileNotFoundError(f"no saved policy at {source}: it {what} (write one with banditkit.save)")
    try:
        document = json.loads(state_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt saved policy: {state_file} is not valid JSON ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"corrupt saved policy: {state_file} is not a banditkit policy file")
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{state_file} has format version {document.get('format_version')!r}; "
                         f"this banditkit reads version {FORMAT_VERSION}")
    array_name = document.get("arrays")
    if not isinstance(array_name, str) or "/" in array_name or not array_name.endswith(".npz"):
        raise ValueError(f"corrupt saved policy: {state_file} names no valid array file")
    array_file = source / array_name
    if not array_file.is_file():
        raise ValueError(f"corrupt saved policy: {array_file} is missing")
    try:
        with np.load(array_file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:  # a damaged zip raises many kinds (BadZipFile, zlib errors, NotImplementedError, ...)
        raise ValueError(f"corrupt saved policy: cannot read {array_file} ({type(err).__name__}: {err})") from None
    state = _decode(document.get("state"), arrays, "state")
    if not isinstance(state, dict):
        raise ValueError(f"corrupt saved policy: {state_file} holds no state dict")
    return state


# --------------------------------------------------------------------- encoding
def _encode(value: Any, arrays: dict[str, np.ndarray[Any, Any]], where: str) -> Any:
    """JSON-ready copy of ``value`` with arrays moved into ``arrays``."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"{where} is an object array, which cannot be saved without pickle")
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {_ARRAY_KEY: key}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}: state dicts must use string keys")
            if key == _ARRAY_KEY:
                raise ValueError(f"{where} uses the reserved key {_ARRAY_KEY!r}")
            out[key] = _encode(item, arrays, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_encode(item, arrays, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.generic):
        return _encode(value.item(), arrays, where)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{where} holds a {type(value).__name__}, which banditkit.save cannot store "
                    "(state dicts hold numbers, strings, lists, dicts and numpy arrays)")


def _decode(value: Any, arrays: dict[str, np.ndarray[Any, Any]], where: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY_KEY}:
            key = value[_ARRAY_KEY]
            if key not in arrays:
                raise ValueError(f"corrupt saved policy: array {key!r} ({where}) is missing from the .npz")
            return arrays[key]
        return {k: _decode(v, arrays, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(item, arrays, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


# --------------------------------------------------------------------- files
def _write_files(directory: Path, document: dict[str, Any], arrays: dict[str, np.ndarray[Any, Any]],
                 array_name: str) -> None:
    with open(directory / array_name, "wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    temp = directory / f".{STATE_FILE}.{secrets.token_hex(4)}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, directory / STATE_FILE)
    _fsync_dir(directory)


def _write_into(target: Path, document: dict[str, Any], arrays: dict[str, np.ndarray[Any, Any]],
                array_name: str) -> None:
    """Replace an existing save: new array file, then ``state.json`` by rename, then drop the old."""
    try:
        _write_files(target, document, arrays, array_name)
    except BaseException:
        with contextlib.suppress(OSError):
            (target / array_name).unlink()
        raise
    for stale in target.glob("arrays-*.npz"):
        if stale.name != array_name:
            with contextlib.suppress(OSError):
                stale.unlink()
    for stale in target.glob(f".{STATE_FILE}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
