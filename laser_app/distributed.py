"""The loop on several processes (``accelerate launch``): who is rank 0, each rank's share of a batch, and the
few collective operations the loop needs, all through accelerate's own APIs.

Launchers (accelerate's, torchrun, DeepSpeed's) tell each process the world size in its environment. With
more than one process, the first call that needs it builds accelerate's ``Accelerator``, which joins the
process group (NCCL on GPUs, gloo on CPUs, DeepSpeed or FSDP as the launch configured them) and sets this
process's GPU. In a single process every function here is an identity or a no-op and accelerate is never
imported, so a plain ``laser run`` is unchanged.

Data contract: a batch is split into contiguous shares in rank order, so ``gather(shard(items)) == items``
on every rank; choices are broadcast from rank 0 as plain lists of names. The loop's pieces: :func:`shard`
(a batch's prompts, refusing more processes than prompts), :func:`shard_padded` (pairs, which may be fewer
than processes), :func:`map_sharded` (scoring, evaluation), :class:`GatheredCapture` (contexts),
:func:`broadcast_choices`, :func:`gather_result` and :func:`all_reduce_mean` (the bandit's feedback),
:func:`is_main` (the run folder), :func:`wait` and :func:`close`.

>>> shard(["a", "b", "c"]), is_main(), all_reduce_mean([1.0, 3.0]), gather(["x"])
(['a', 'b', 'c'], True, [1.0, 3.0], ['x'])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from laser_app.errors import LaserError

T = TypeVar("T")
R = TypeVar("R")

#: Where launchers put the number of processes (the variables accelerate itself reads).
SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

_accelerator: Any = None


def world_size() -> int:
    """The number of processes this run was launched with (1 outside a launcher); reads the environment only.

    >>> world_size()
    1
    """
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return int(value)
    return 1


def enabled() -> bool:
    """Whether this process is one of several (the loop then shards, broadcasts and reduces)."""
    return world_size() > 1


def accelerator() -> Any:
    """accelerate's ``Accelerator`` for this process, created on first use; None in a single process.

    The loop needs it for ``prepare`` (model and optimizer) and ``backward``; the functions below use it to
    join the process group before their first collective call.
    """
    global _accelerator
    if not enabled():
        return None
    if _accelerator is None:
        from accelerate import Accelerator

        _accelerator = Accelerator(cpu=_no_accelerator())
    return _accelerator


def _no_accelerator() -> bool:
    # accelerate picks gloo and CPU tensors only when told so; ACCELERATE_USE_CPU=true also forces it
    import torch

    probe = getattr(torch, "accelerator", None)  # torch >= 2.6 knows every accelerator kind
    return not (probe.is_available() if probe is not None else torch.cuda.is_available())


def rank() -> int:
    """This process's index among all processes (0 in a single process)."""
    return int(accelerator().process_index) if enabled() else 0


def is_main() -> bool:
    """Whether this is rank 0: the process that writes the run folder, shows progress and decides."""
    return rank() == 0


def local_device(device: str) -> str:
    """Where this process puts the policy: ``device`` as given in a single process; under a launch, a CUDA
    device becomes the GPU of this process's local rank (every process would otherwise share GPU 0).

    >>> local_device("cuda"), local_device("cpu")
    ('cuda', 'cpu')
    """
    if not enabled() or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise LaserError(f"--device {device} under accelerate launch would put every process on one GPU; use "
                         "--device cuda (or auto): each process takes the GPU of its local rank")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def check_shardable(n_items: int) -> None:
    """Raise :class:`LaserError` when a batch of ``n_items`` prompts leaves some process without any (every
    process must take part in each DPO step's gradient exchange).

    >>> check_shardable(1)
    """
    size = world_size()
    if n_items < size:
        one = n_items == 1
        raise LaserError(f"{size} processes share a batch of {n_items} prompt{'' if one else 's'}, so some would "
                         f"get none: launch with at most {n_items} process{'' if one else 'es'} or raise "
                         "--batch-size")


def shard(items: Sequence[T]) -> list[T]:
    """This process's contiguous share of a global batch, in rank order (the first ``len % world`` ranks take
    one item more); all of it in a single process."""
    items = list(items)
    if not enabled():
        return items
    check_shardable(len(items))
    with accelerator().split_between_processes(items) as share:
        return list(share)


def shard_padded(items: Sequence[T]) -> tuple[list[T], int]:
    """This process's contiguous share of ``items`` padded to the same length on every rank (the last item
    repeated), so a list shorter than the world still gives every rank work; and how many of the share's
    items are real (they come first). In a single process: ``(items, len(items))``."""
    items = list(items)
    if not enabled() or not items:
        return items, len(items)
    acc = accelerator()
    with acc.split_between_processes(items) as real:
        n_real = len(real)
    with acc.split_between_processes(items, apply_padding=True) as padded:
        return list(padded), n_real


def map_sharded(fn: Callable[..., Sequence[T]], *columns: Sequence[Any]) -> list[T]:
    """``fn(*columns)``, which returns one entry per row, computed on this process's share of the rows and
    gathered in row order on every process (padding dropped); ``fn(*columns)`` in a single process. For
    evaluation's greedy answers and scoring: ``map_sharded(partial(greedy_answers, model, tok, **kw), prompts)``.

    >>> map_sharded(lambda xs, ys: [x + y for x, y in zip(xs, ys)], [1, 2], [10, 20])
    [11, 22]
    """
    if not enabled():
        return list(fn(*columns))
    shares = [shard_padded(column) for column in columns]
    n_real = shares[0][1] if shares else 0
    return gather(list(fn(*(share for share, _ in shares)))[:n_real])


def gather_result(result: R, n_real: int | None = None) -> R:
    """A dataclass of per-item arrays and scalar means (a DPO ``StepResult``) over every process: the arrays
    concatenated in rank order (each rank's first ``n_real`` rows: its real items), the floats averaged. Every
    rank gets the same result, so the bandit's feedback, and its state, is the same everywhere. ``result``
    itself in a single process."""
    if not enabled():
        return result
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}  # type: ignore[arg-type]
    keep = slice(None, n_real)
    arrays = {k: v[keep] for k, v in values.items() if isinstance(v, np.ndarray)}
    floats = {k: float(v) for k, v in values.items() if isinstance(v, float)}
    parts = gather([arrays])
    merged = {k: np.concatenate([part[k] for part in parts]) for k in arrays}
    means = dict(zip(floats, all_reduce_mean(list(floats.values())), strict=True))
    return dataclasses.replace(result, **merged, **means)  # type: ignore[type-var]


class GatheredCapture:
    """A prefill capture of this rank's ``n_local`` prompts read as a capture of the whole batch: ``features``
    gathers every rank's rows in rank order, which is batch order (``choose_rms`` reads it as it reads a
    ``PrefillCapture``). Every rank must call ``features``."""

    def __init__(self, capture: Any, n_local: int) -> None:
        self.capture = capture
        self.n_local = n_local

    def features(self, n_prompts: int) -> npt.NDArray[np.float64]:
        rows = gather(list(self.capture.features(self.n_local)))
        if len(rows) != n_prompts:
            raise ValueError(f"gathered contexts for {len(rows)} prompts, the batch has {n_prompts}")
        return np.asarray(rows, dtype=np.float64)


def broadcast(value: T) -> T:
    """Rank 0's ``value`` (picklable plain data) on every process; ``value`` itself in a single process."""
    if not enabled():
        return value
    from accelerate.utils import broadcast_object_list

    accelerator()
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def broadcast_choices(choices: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """Rank 0's RM choices (one tuple of RM names per prompt) on every process, sent as plain lists of names.

    >>> broadcast_choices([("rm-a",), ["rm-a", "rm-b"]])
    [('rm-a',), ('rm-a', 'rm-b')]
    """
    plain = broadcast([[str(name) for name in names] for names in choices])
    return [tuple(names) for names in plain]


def all_reduce_mean(values: float | Sequence[float]) -> Any:
    """The mean over processes of a number or of a list of numbers (same length on every process), as plain
    float(s); the values themselves in a single process.

    >>> all_reduce_mean(2.5)
    2.5
    """
    if not enabled():
        return float(values) if isinstance(values, int | float) else [float(v) for v in values]
    import torch
    from accelerate.utils import reduce

    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator().device)
    return reduce(tensor, reduction="mean").tolist()


def gather(items: Sequence[T]) -> list[T]:
    """Every process's ``items`` (picklable), concatenated in rank order, on every process; ``items`` as a
    list in a single process. ``gather(shard(batch)) == batch``."""
    if not enabled():
        return list(items)
    from accelerate.utils import gather_object

    accelerator()
    return list(gather_object(list(items)))


def wait() -> None:
    """Block until every process gets here (a no-op in a single process)."""
    if enabled():
        accelerator().wait_for_everyone()


def close() -> None:
    """Leave the process group (a no-op in a single process or before any collective call); it waits for no
    one, so a failed rank can call it too. Call it once at the end of a launched run: a process that exits
    still holding the group can abort in the group's threads, exiting non-zero after a run that succeeded."""
    if _accelerator is not None:
        _accelerator.end_training()
