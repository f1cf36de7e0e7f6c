"""Checkpoints: what a stopped ``laser run`` needs to continue exactly where it was (``laser run --resume``).

Layout of ``<run>/checkpoint/``::

    state.json             position (next iteration and batch, global step), evaluations so far, timings, a
                           digest of the batch plan, Python's ``random`` state, the DPO step's counters and
                           cached reference log-probs, the optimizer's plain values (its tensors named)
    policy.safetensors     the policy's trained weights (under LoRA: the adapter's)
    reference.safetensors  the DPO reference: the frozen copy's weights, or under LoRA the reference adapter
                           once the reference has moved (empty before: the adapter-disabled model is it)
    optimizer.safetensors  the optimizer's tensors (AdamW's moments and step counts)
    rng.safetensors        torch's CPU (and CUDA) generator states
    selector.json + .npz   ``selector.state_dict()``: the bandit, its normalizers and their generators
    pairs.jsonl            the preference pairs trained on so far
    manifest.json          written last: every file, its size and its CRC-32 (checked before restoring)

The per-batch sampling seeds derive from the run's seed and the position, and the batch plan from the seed
alone, so the position is all a resumed run needs of them. Plain data only: no pickle, no ``torch.load``.

Writes never leave a mix of two checkpoints: a new one is written into a temporary sibling folder (every
file synced to disk), then the current ``checkpoint/`` is renamed to ``checkpoint.old``, the new folder to
``checkpoint/``, and the old one removed. A reader takes ``checkpoint/`` if it holds a manifest, else
``checkpoint.old/`` (a crash between the two renames).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from laser_app.errors import RunDirError
from laser_app.evaluation import PerExample
from laser_app.run_dir import load_state, read_json, save_state

if TYPE_CHECKING:
    from laser_adapters.dpo import DPOStep
    from laser_adapters.selector import Selector
    from laser_app.data import ExampleLike

CHECKPOINT = "checkpoint"
PREVIOUS = "checkpoint.old"
MANIFEST = "manifest.json"
#: The files of a checkpoint besides its manifest.
FILES = ("state.json", "policy.safetensors", "reference.safetensors", "optimizer.safetensors", "rng.safetensors",
         "selector.json", "selector.npz", "pairs.jsonl")
FORMAT = 1
TEMP_PREFIX = ".checkpoint-"


@dataclass
class LoopState:
    """What the loop carries besides its models: the next batch (``iteration``, ``batch``) and the global
    ``step``, the evaluations so far (before training, then after each iteration), the pairs trained on,
    the timings, and the seconds the run had been going (over every process that ran it)."""

    iteration: int = 0
    batch: int = 0
    step: int = 0
    per_example: list[PerExample] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0


@dataclass
class Parts:
    """The run's objects whose state a checkpoint holds."""

    model: Any
    optimizer: torch.optim.Optimizer
    dpo: DPOStep
    selector: Selector


def plan_digest(plan: Sequence[Sequence[Sequence[ExampleLike]]]) -> str:
    """A digest of the batch plan (every batch's prompts and tasks), so a resumed run can tell that it
    trains on the same batches."""
    rows = [[[ex.prompt, getattr(ex, "task", None)] for ex in batch] for batches in plan for batch in batches]
    return hashlib.sha256(json.dumps(rows, default=str, sort_keys=True).encode()).hexdigest()


def find_checkpoint(run: Path) -> Path | None:
    """The complete checkpoint folder of run folder ``run``, or ``None`` when it has none."""
    for name in (CHECKPOINT, PREVIOUS):
        if (run / name / MANIFEST).is_file():
            return run / name
    return None


def require_training_checkpoint(run: Path) -> None:
    """Raise :class:`RunDirError` unless run folder ``run`` is a training run with a checkpoint to resume."""
    resolved = read_json(run / "resolved.json") if (run / "resolved.json").is_file() else {}
    if isinstance(resolved, dict) and resolved.get("mode") == "best-of-n":
        raise RunDirError(f"{run} is a laser bon run; continue it with laser bon --resume {run}")
    if find_checkpoint(run) is None:
        raise RunDirError(f"run folder {run} has no checkpoint (it stopped before writing one); rerun it "
                          "with --overwrite")


def remove_checkpoint(run: Path) -> None:
    """Remove the checkpoint and any leftovers of an unfinished write (once the run is complete)."""
    for path in (run / CHECKPOINT, run / PREVIOUS, *run.glob(f"{TEMP_PREFIX}*")):
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------- writing
def save_checkpoint(run: Path, parts: Parts, state: LoopState, *, plan: str) -> None:
    """Write a checkpoint of ``parts`` and ``state`` into run folder ``run``, replacing the last one only
    once the new one is complete on disk."""
    for leftover in run.glob(f"{TEMP_PREFIX}*"):  # a write that a crash cut short
        shutil.rmtree(leftover, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=run))
    try:
        _write(folder, parts, state, plan)
        fsync_path(folder)
        install_checkpoint(folder, run / CHECKPOINT)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _write(folder: Path, parts: Parts, state: LoopState, plan: str) -> None:
    dpo = parts.dpo.state_dict()
    reference = dpo.pop("reference_weights")
    optimizer: dict[str, torch.Tensor] = {}
    optimizer_doc = _split_tensors(parts.optimizer.state_dict(), optimizer)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"cuda:{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    doc = {"format": FORMAT, "iteration": state.iteration, "batch": state.batch, "step": state.step,
           "elapsed": state.elapsed, "timings": state.timings, "per_example": state.per_example, "plan": plan,
           "python_random": random.getstate(), "dpo": dpo, "optimizer": optimizer_doc}
    _piece(folder, ["policy.safetensors"], lambda: save_file(_plain(_trained(parts.model)),
                                                               folder / "policy.safetensors"))
    _piece(folder, ["reference.safetensors"], lambda: save_file(_plain(reference), folder / "reference.safetensors"))
    _piece(folder, ["optimizer.safetensors"], lambda: save_file(optimizer, folder / "optimizer.safetensors"))
    _piece(folder, ["rng.safetensors"], lambda: save_file(_plain(rng), folder / "rng.safetensors"))
    _piece(folder, ["selector.json", "selector.npz"], lambda: save_state(parts.selector.state_dict(),
                                                                          folder / "selector"))
    pairs = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in state.pairs)
    _piece(folder, ["pairs.jsonl"], lambda: (folder / "pairs.jsonl").write_text(pairs, encoding="utf-8"))
    _piece(folder, ["state.json"], lambda: (folder / "state.json").write_text(json.dumps(doc), encoding="utf-8"))
    files = sorted(folder.iterdir())
    manifest = {"format": FORMAT, "files": {p.name: p.stat().st_size for p in files},
                "crc32": {p.name: crc32_of(p) for p in files}}
    _piece(folder, [MANIFEST], lambda: (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8"))


def crc32_of(path: Path) -> int:
    """The CRC-32 of a file's bytes: damage on disk shows before anything is restored (a size can stay)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 23):
            crc = zlib.crc32(chunk, crc)
    return crc


def _piece(folder: Path, names: Sequence[str], write: Callable[[], object]) -> None:
    """Write one piece of a checkpoint (one or more files), then sync its files to disk."""
    write()
    for name in names:
        fsync_path(folder / name)


def install_checkpoint(folder: Path, dest: Path) -> None:
    """Swap ``folder`` in as ``dest``; at every moment ``dest`` or the previous one is a complete checkpoint."""
    previous = dest.with_name(PREVIOUS)
    if dest.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(dest, previous)
    os.replace(folder, dest)
    fsync_path(dest.parent)
    shutil.rmtree(previous, ignore_errors=True)


def fsync_path(path: Path) -> None:
    """Flush a file or folder (its entries) to disk; folders cannot be opened for syncing everywhere."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _trained(model: Any) -> dict[str, torch.Tensor]:
    """The parameters a run trains: all of them, or under LoRA the active adapter's."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _plain(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu().contiguous() for name, t in tensors.items()}


def _split_tensors(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace every tensor in a nested state by ``{"__tensor__": name}``, collecting the tensors by name."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {str(k): _split_tensors(v, tensors, f"{prefix}.{k}" if prefix else str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


# ------------------------------------------------------------------------------- reading
def load_checkpoint(run: Path, parts: Parts, *, plan: str) -> LoopState:
    """Restore ``parts`` from the last complete checkpoint of run folder ``run``; its loop state.

    Raises :class:`RunDirError` when there is none, or when it does not fit the run (another batch plan,
    other model shapes, damaged files).
    """
    folder = find_checkpoint(run)
    if folder is None:
        raise RunDirError(f"run folder {run} has no checkpoint (it stopped before writing one); rerun it with "
                          "--overwrite")
    try:
        return _restore(folder, parts, plan)
    except _UNFIT as err:
        detail = " ".join(str(err).split())[:300]
        raise RunDirError(f"checkpoint {folder} cannot be restored ({detail}); rerun the run with "
                          "--overwrite") from err


#: What restoring a checkpoint that does not fit the run raises (other shapes, names or kinds of values).
_UNFIT = (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError, OSError, ArithmeticError,
          SafetensorError)


def _check_files(folder: Path) -> None:
    """Raise ``ValueError`` unless every file the checkpoint's manifest lists is there, with its size and (in
    checkpoints that record them) its CRC-32, so that a damaged checkpoint is never restored."""
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict):
        raise ValueError(f"{MANIFEST} is damaged")
    files, crcs = manifest.get("files"), manifest.get("crc32", {})
    if manifest.get("format") != FORMAT or not isinstance(files, dict) or not isinstance(crcs, dict) or (
            crcs and set(crcs) != set(files)) or not set(FILES) <= set(files):
        raise ValueError(f"{MANIFEST} is damaged")
    for name, size in files.items():
        path = folder / name
        if path.parent != folder or not path.is_file() or path.stat().st_size != size:
            raise ValueError(f"{name} is missing or has another size than when it was written")
        if crcs and crc32_of(path) != crcs[name]:
            raise ValueError(f"{name} has other contents than when it was written (damaged on disk)")


def _restore(folder: Path, parts: Parts, plan: str) -> LoopState:
    _check_files(folder)
    doc = read_json(folder / "state.json")
    if doc.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {doc.get('format')!r}, expected {FORMAT}")
    if doc["plan"] != plan:
        raise RunDirError(f"the training batches differ from when the run in {folder.parent} started (its data "
                          "files changed?); restore them or rerun it with --overwrite")
    _load_trained(parts.model, load_file(folder / "policy.safetensors"))
    parts.dpo.load_state_dict({**doc["dpo"], "reference_weights": load_file(folder / "reference.safetensors")})
    _load_optimizer(parts.optimizer, _join_tensors(doc["optimizer"], load_file(folder / "optimizer.safetensors")))
    parts.selector.load_state_dict(load_state(folder / "selector"))
    lines = (folder / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    rng = load_file(folder / "rng.safetensors")  # restored last: restoring the rest may draw from it
    version, internal, gauss = doc["python_random"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(rng["torch"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda:")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return LoopState(iteration=int(doc["iteration"]), batch=int(doc["batch"]), step=int(doc["step"]),
                     per_example=list(doc["per_example"]), pairs=[json.loads(line) for line in lines if line],
                     timings={k: float(v) for k, v in doc["timings"].items()}, elapsed=float(doc["elapsed"]))


def _load_trained(model: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    params = _trained(model)
    if set(tensors) != set(params):
        raise ValueError(f"the saved policy has {len(tensors)} tensors, the model trains {len(params)} others")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` after JSON: parameter indices back to ints, tuples (betas) back."""
    state["state"] = {int(k): v for k, v in state["state"].items()}
    for saved, live in zip(state["param_groups"], optimizer.param_groups, strict=True):
        for key, value in saved.items():
            if isinstance(live.get(key), tuple) and isinstance(value, list):
                saved[key] = tuple(value)
    optimizer.load_state_dict(state)
