"""The run folder: what a ``laser run`` leaves behind, written so that a partial run never looks complete.

Layout::

    <out>/status.json     {"state": "running" | "complete" | "failed", ...}; "complete" is written last
    <out>/config.json     the configuration, defaults filled in (a valid --config file to repeat the run)
    <out>/resolved.json   what the defaults resolved to (model path, RMs, data sizes, threads, ...)
    <out>/events.jsonl    one JSON line per training step, appended and flushed as the run goes
    <out>/metrics.json    the run summary (accuracy, RM choice shares, in-domain share, lock-in, timings)
    <out>/bandit.json     the selector's state; its arrays in bandit.npz (never pickle)
    <out>/pairs.jsonl     every preference pair trained on, in TRL's format (prompt, chosen, rejected)
    <out>/policy/         the final policy (save_pretrained), or adapter/ for a LoRA run
    <out>/*.png           plots (see laser_app.plots)
    <out>/checkpoint/     what laser run --resume (or laser bon --resume) continues from, while the run is
                          unfinished (see laser_app.checkpoint); removed once the run is complete

>>> import tempfile, pathlib
>>> run = RunDir.create(pathlib.Path(tempfile.mkdtemp()) / "run")
>>> run.status()["state"]
'running'
>>> run.append_event({"step": 0, "loss": 0.7})
>>> run.mark_complete()
>>> run.status()["state"], run.events()
('complete', [{'step': 0, 'loss': 0.7}])
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from laser_app.errors import RunDirError

STATUS = "status.json"
CONFIG = "config.json"
RESOLVED = "resolved.json"
EVENTS = "events.jsonl"
METRICS = "metrics.json"
PAIRS = "pairs.jsonl"
BANDIT = "bandit"
STATES = ("running", "complete", "failed", "interrupted")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON through a temporary file, so readers never see half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON: {value!r}")


def read_json(path: Path) -> Any:
    """Read a JSON file, turning a missing, unreadable or corrupt file into a :class:`RunDirError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except OSError as err:
        raise RunDirError(f"{path} cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise RunDirError(f"{path} is not UTF-8 text (byte {err.start}); the file is damaged") from None
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err.msg.removesuffix(' at')} at line {err.lineno})") from None
    except RecursionError:
        raise RunDirError(f"{path} is nested too deeply to be a saved state; the file is damaged") from None


# ------------------------------------------------------------------------------- array-aware state files
def split_arrays(state: Any, arrays: dict[str, np.ndarray], prefix: str = "") -> Any:
    """Replace every ndarray in a nested state by ``{"__ndarray__": key}``, collecting arrays by key.

    >>> arrays = {}
    >>> split_arrays({"A": np.eye(2), "n": np.int64(3), "t": (1, 2)}, arrays)
    {'A': {'__ndarray__': 'A'}, 'n': 3, 't': [1, 2]}
    >>> list(arrays)
    ['A']
    """
    if isinstance(state, np.ndarray):
        key = prefix or "array"
        arrays[key] = state
        return {"__ndarray__": key}
    if isinstance(state, Mapping):
        out = {}
        for k, v in state.items():
            if not isinstance(k, str | int):
                raise TypeError(f"state keys must be strings, got {k!r} at {prefix or 'top level'}")
            out[str(k)] = split_arrays(v, arrays, f"{prefix}/{k}" if prefix else str(k))
        return out
    if isinstance(state, list | tuple):
        return [split_arrays(v, arrays, f"{prefix}/{i}") for i, v in enumerate(state)]
    if isinstance(state, np.generic):
        return state.item()
    if state is None or isinstance(state, str | int | float | bool):
        return state
    raise TypeError(f"cannot save {type(state).__name__} at {prefix or 'top level'} as JSON + npz")


def join_arrays(state: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Inverse of :func:`split_arrays`."""
    if isinstance(state, dict):
        if set(state) == {"__ndarray__"}:
            return np.asarray(arrays[state["__ndarray__"]])
        return {k: join_arrays(v, arrays) for k, v in state.items()}
    if isinstance(state, list):
        return [join_arrays(v, arrays) for v in state]
    return state


def save_state(state: Mapping[str, Any], stem: Path) -> None:
    """Save a nested state dict as ``<stem>.json`` plus its arrays in ``<stem>.npz`` (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    doc = split_arrays(state, arrays)
    with open(stem.with_suffix(".npz"), "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    write_json_atomic(stem.with_suffix(".json"), doc)


#: What reading a damaged ``.npz`` raises (zip, zlib and numpy's own parsing each have their own).
_DAMAGED_NPZ = (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, zlib.error,
                struct.error)


def load_state(stem: Path) -> Any:
    """Load what :func:`save_state` wrote; a missing or damaged file is a :class:`RunDirError`."""
    doc = read_json(stem.with_suffix(".json"))
    npz_path = stem.with_suffix(".npz")
    if not npz_path.is_file():
        raise RunDirError(f"{npz_path} does not exist")
    try:
        loaded = np.load(npz_path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except _DAMAGED_NPZ as err:
        raise RunDirError(f"{npz_path} cannot be read ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
                          "the file is damaged") from None
    try:
        return join_arrays(doc, arrays)
    except (KeyError, TypeError) as err:
        raise RunDirError(f"{stem.with_suffix('.json')} names an array that {npz_path.name} does not hold ({err}); "
                          "the files are damaged") from None


# ------------------------------------------------------------------------------- the folder
class RunDir:
    """A run folder (see the module docstring for its layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._started = time.monotonic()

    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False) -> RunDir:
        """Create ``path`` as a new run folder marked ``running``.

        An existing run folder is replaced only with ``overwrite``; a non-empty folder that is not a run
        folder is never touched.
        """
        path = Path(path)
        cls.check_creatable(path, overwrite=overwrite)
        if path.is_dir() and any(path.iterdir()):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run._write_status("running", started=_now(), pid=os.getpid())
        return run

    @staticmethod
    def check_creatable(path: str | Path, *, overwrite: bool = False) -> None:
        """Raise :class:`RunDirError` unless a run folder can be made at ``path``: not a file, not a foreign
        or (without ``overwrite``) existing run folder, and its first existing ancestor a folder this process
        can write in. Cheap, so commands call it before loading any model."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path} exists and is not a folder; choose another --out")
        if path.is_dir() and any(path.iterdir()):
            if not (path / STATUS).is_file():
                raise RunDirError(f"--out {path} is a non-empty folder that is not a run folder; "
                                  "choose another --out")
            state = _state_of(path)
            if not overwrite:
                raise RunDirError(f"run folder {path} already exists (state: {state}); pass --overwrite to "
                                  "replace it or choose another --out")
            pid = RunDir(path).status().get("pid") if state == "running" else None
            if state == "running" and pid != os.getpid():
                raise RunDirError(f"run folder {path} belongs to a run that is still running (pid {pid}); stop "
                                  "it first or choose another --out")
        ancestor = path.absolute()
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise RunDirError(f"--out {path}: {ancestor} is a file, not a folder; choose another --out")
        try:  # the one reliable test of writability (permissions, read-only mounts, /proc)
            tempfile.TemporaryDirectory(dir=ancestor).cleanup()
        except OSError as err:
            raise RunDirError(f"--out {path}: cannot create folders in {ancestor} ({err.strerror or err}); "
                              "choose another --out") from None

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open an existing run folder for reading."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"run folder {run.path} does not exist")
        if not (run.path / STATUS).is_file():
            raise RunDirError(f"{run.path} is not a run folder (no {STATUS}); pass the --out of a laser run")
        return run

    @classmethod
    def open_to_resume(cls, path: str | Path) -> RunDir:
        """Open a run folder to continue it: refuse one that is complete or still running."""
        run = cls.open(path)
        state = run.state()
        if state == "complete":
            raise RunDirError(f"run folder {run.path} holds a complete run; nothing to resume")
        pid = run.status().get("pid")
        if state == "running" and pid != os.getpid():
            raise RunDirError(f"run folder {run.path} belongs to a run that is still running (pid {pid}); stop "
                              "it first, or resume it once it has stopped")
        return run

    # -- status
    def status(self) -> dict[str, Any]:
        """The contents of ``status.json``."""
        status = read_json(self.path / STATUS)
        if not isinstance(status, dict) or status.get("state") not in STATES:
            raise RunDirError(f"{self.path / STATUS} is not a valid status file: {status!r}")
        return status

    def state(self) -> str:
        """The run's state: ``status.json``'s, except that a ``running`` run whose process is gone (killed,
        out of memory, machine restarted) reads as ``crashed``."""
        status = self.status()
        state = str(status["state"])
        if state == "running" and not _alive(status.get("pid")):
            return "crashed"
        return state

    def _write_status(self, state: str, **info: Any) -> None:
        write_json_atomic(self.path / STATUS, {"state": state, **info})

    def mark_complete(self, **info: Any) -> None:
        """Mark the run complete: call only once everything else has been written."""
        started = self.status().get("started")
        self._write_status("complete", started=started, finished=_now(),
                           seconds=round(time.monotonic() - self._started, 3), **info)

    def mark_resumed(self) -> None:
        """Mark the run ``running`` again, in this process (``laser run --resume``)."""
        started = self.status().get("started")
        self._write_status("running", started=started, resumed=_now(), pid=os.getpid())

    def mark_stopped(self, error: BaseException) -> None:
        """Mark the run ``interrupted`` (Ctrl-C or a termination signal) or ``failed`` (any other error)."""
        if isinstance(error, KeyboardInterrupt):
            try:
                started = self.status().get("started")
            except RunDirError:
                started = None
            self._write_status("interrupted", started=started, finished=_now(),
                               error=str(error) or type(error).__name__)
        else:
            self.mark_failed(error)

    def mark_failed(self, error: BaseException | str) -> None:
        """Mark the run failed with the error that stopped it."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        try:
            started = self.status().get("started")
        except RunDirError:
            started = None
        self._write_status("failed", started=started, finished=_now(), error=message)

    # -- files
    def file(self, name: str) -> Path:
        """Path of a file inside the run folder."""
        return self.path / name

    def write_config(self, config: Mapping[str, Any], resolved: Mapping[str, Any]) -> None:
        """Write the configuration (usable as ``--config``) and what its defaults resolved to."""
        write_json_atomic(self.path / CONFIG, dict(config))
        write_json_atomic(self.path / RESOLVED, dict(resolved))

    def config(self) -> dict[str, Any]:
        """The configuration written by :meth:`write_config` (empty if the run did not get that far)."""
        return self._object(CONFIG)

    def resolved(self) -> dict[str, Any]:
        """What the configuration's defaults resolved to (empty if the run did not get that far)."""
        return self._object(RESOLVED)

    def _object(self, name: str) -> dict[str, Any]:
        if not (self.path / name).is_file():
            return {}
        obj = read_json(self.path / name)
        if not isinstance(obj, dict):
            raise RunDirError(f"{self.path / name} does not hold a JSON object")
        return obj

    def append_event(self, event: Mapping[str, Any]) -> None:
        """Append one step's record to ``events.jsonl`` (flushed, so a crash keeps what came before)."""
        line = json.dumps(event, default=_json_default, ensure_ascii=False)
        with open(self.path / EVENTS, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def events(self) -> list[dict[str, Any]]:
        """All step records so far. A torn last line (a run killed mid-write) is dropped with a warning; a
        damaged line before the last is a :class:`RunDirError` naming it."""
        path = self.path / EVENTS
        if not path.is_file():
            return []
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(),
                                                    start=1) if line.strip()]
        out = []
        for i, (n, line) in enumerate(lines):
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                if i + 1 < len(lines):
                    raise RunDirError(f"{path} line {n} is not valid JSON, and more steps follow it: the run "
                                      "folder is damaged; rerun it (--overwrite)") from None
                warnings.warn(f"{path}: dropped its torn last line {n} (a run stopped mid-write)", RuntimeWarning,
                              stacklevel=2)
                continue
            if not isinstance(event, dict):  # a torn write never yields valid JSON, so this is damage
                raise RunDirError(f"{path} line {n} is not a JSON object: the run folder is damaged; rerun it "
                                  "(--overwrite)")
            out.append(event)
        return out

    def truncate_events(self, steps: int, *, key: str = "step", unit: str = "steps") -> None:
        """Keep the records of the first ``steps`` steps (those a checkpoint holds) and drop what came after,
        a torn last line included; rewritten through a temporary file, the kept lines byte for byte. Records
        are numbered by their ``key`` field (``laser bon``'s by ``batch``), counted in ``unit`` in errors."""
        path = self.path / EVENTS
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.is_file() else []
        except UnicodeDecodeError as err:
            raise RunDirError(f"{path} is not UTF-8 text (byte {err.start}): the run folder is damaged; rerun it "
                              "(--overwrite)") from None
        kept = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                if n < len(lines):
                    raise RunDirError(f"{path} line {n} is not valid JSON, and more steps follow it: the run "
                                      "folder is damaged; rerun it (--overwrite)") from None
                break
            step = event.get(key) if isinstance(event, dict) else None
            if isinstance(step, int) and step < steps:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) != steps:
            raise RunDirError(f"{path} holds {len(kept)} of the {steps} {unit} its checkpoint has seen: the run "
                              "folder is damaged; rerun it (--overwrite)")
        write_text_atomic(path, "".join(kept))

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Write the run summary."""
        write_json_atomic(self.path / METRICS, metrics)

    def metrics(self) -> dict[str, Any] | None:
        """The run summary, or ``None`` when the run did not get that far."""
        return self._object(METRICS) if (self.path / METRICS).is_file() else None

    def save_bandit(self, state: Mapping[str, Any]) -> None:
        """Save the selector's state as ``bandit.json`` + ``bandit.npz``."""
        save_state(state, self.path / BANDIT)

    def load_bandit(self) -> Any:
        """Load the selector's state saved by :meth:`save_bandit`."""
        return load_state(self.path / BANDIT)


def mark_resumable(error: BaseException, path: Path) -> None:
    """Attach the run folder an interrupt stopped (one with a checkpoint), so the command can say how to
    resume it."""
    error.resume_folder = path  # type: ignore[attr-defined]


def resumable_folder(error: BaseException) -> Path | None:
    """The run folder :func:`mark_resumable` attached to ``error``, if any."""
    folder = getattr(error, "resume_folder", None)
    return folder if isinstance(folder, Path) else None


def _state_of(path: Path) -> str:
    try:
        return RunDir(path).state()
    except RunDirError:
        return "unknown"


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` still runs (``True`` when unknown: never call a live run crashed)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def default_out(policy: str, root: str | Path = "runs") -> Path:
    """A fresh run folder name under ``root``: ``runs/20250101-120000-linucb``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = policy.replace(":", "-").replace("/", "-")
    path = Path(root) / f"{stamp}-{safe}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{stamp}-{safe}-{n}"
    return path
