"""How the training prompts become batches, and the per-batch seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from laser_app.data import ExampleLike, by_task


def make_batches(examples: Sequence[ExampleLike], batch_size: int, *, homogeneous: bool,
                 rng: np.random.Generator, limit: int | None = None) -> list[list[ExampleLike]]:
    """Shuffle ``examples`` into batches; ``homogeneous`` keeps one task per batch and shuffles batch order.

    >>> from laser_app.world.tasks import Example
    >>> rows = [Example(str(i), task="ab"[i % 2]) for i in range(10)]
    >>> batches = make_batches(rows, 2, homogeneous=True, rng=np.random.default_rng(0))
    >>> [len({ex.task for ex in b}) for b in batches]
    [1, 1, 1, 1, 1, 1]
    """
    if homogeneous:
        batches = []
        for rows in by_task(examples).values():
            order = rng.permutation(len(rows))
            batches += [[rows[i] for i in order[s:s + batch_size]] for s in range(0, len(rows), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    else:
        order = rng.permutation(len(examples))
        batches = [[examples[i] for i in order[s:s + batch_size]]
                   for s in range(0, len(examples), batch_size)]
    return batches[:limit] if limit is not None else batches


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from a tuple of ints (run seed, iteration, batch): independent streams per batch."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)
