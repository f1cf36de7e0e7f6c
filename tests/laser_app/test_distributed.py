"""laser_app.distributed: a no-op in one process, and real collectives between two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from laser_app import distributed
from laser_app.errors import LaserError

ROOT = Path(__file__).resolve().parents[2]

# Each rank checks what it can see alone and writes what it received, for the test to compare across ranks.
WORKER = textwrap.dedent("""
    import dataclasses, json, sys
    import numpy as np
    from laser_app import distributed
    from laser_app.errors import LaserError

    @dataclasses.dataclass(frozen=True)
    class Result:
        loss: float
        losses: np.ndarray

    class Capture:
        def __init__(self, rows):
            self.rows = rows

        def features(self, n):
            assert n == len(self.rows)
            return self.rows

    rank = distributed.rank()
    rng = np.random.default_rng(100 + rank)  # each rank would choose differently on its own
    mine = [(str(rng.choice(["rm-a", "rm-b", "rm-c"])),) for _ in range(6)]
    try:
        distributed.shard(["only prompt"])
        too_many = None
    except LaserError as err:
        too_many = str(err)
    share = distributed.shard(list(range(5)))
    padded = distributed.shard_padded(["x", "y", "z"])
    tiny = distributed.shard_padded(["only"])
    doubled = distributed.map_sharded(lambda xs, ys: [f"{x}{y}" for x, y in zip(xs, ys)], list("abc"), "123")
    mine_result = Result(loss=float(rank), losses=np.arange(3.0) + 10 * rank)
    result = distributed.gather_result(mine_result, n_real=2 + rank)  # rank 0's last row is padding
    states = Capture(np.full((len(share), 2), float(rank)))
    contexts = distributed.GatheredCapture(states, len(share)).features(5)
    out = {"padded": padded, "tiny": tiny, "doubled": doubled, "result": [result.loss, result.losses.tolist()],
           "contexts": contexts.tolist(), "rank": rank, "size": distributed.world_size(),
           "main": distributed.is_main(), "share": share, "gathered": distributed.gather(share), "mine": mine,
           "chosen": distributed.broadcast_choices(mine),
           "mean": distributed.all_reduce_mean([float(rank), 10.0 * rank]),
           "scalar": distributed.all_reduce_mean(float(rank)), "too_many": too_many}
    distributed.wait()
    with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
        json.dump(out, f)
    distributed.close()
""")


def test_one_process_is_a_no_op_and_creates_no_accelerate_state(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    items = ["p0", "p1", "p2"]
    assert (distributed.world_size(), distributed.enabled(), distributed.rank(), distributed.is_main()) == (
        1, False, 0, True)
    assert distributed.shard(items) == items and distributed.gather(items) == items
    assert distributed.broadcast_choices([("rm-a",), ("rm-a", "rm-b")]) == [("rm-a",), ("rm-a", "rm-b")]
    assert distributed.all_reduce_mean([1, 2.5]) == [1.0, 2.5] and distributed.all_reduce_mean(3) == 3.0
    assert distributed.broadcast({"k": 1}) == {"k": 1} and distributed.local_device("cuda:1") == "cuda:1"
    assert distributed.shard_padded(items) == (items, 3) and distributed.shard_padded([]) == ([], 0)
    assert distributed.map_sharded(lambda xs: [x.upper() for x in xs], items) == ["P0", "P1", "P2"]
    result = object()
    assert distributed.gather_result(result, n_real=1) is result
    distributed.wait()
    distributed.close()
    assert distributed.accelerator() is None


def test_one_process_never_imports_accelerate() -> None:
    code = ("import sys; from laser_app import distributed as d; d.shard([1]); d.gather([1]); d.wait(); "
            "d.broadcast_choices([('a',)]); d.all_reduce_mean(1.0); print('accelerate' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in distributed.SIZE_VARIABLES}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_more_processes_than_prompts_is_one_clear_line_before_any_process_group(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(LaserError, match=r"^4 processes share a batch of 3 prompts, so some would get none: "
                                         r"launch with at most 3 processes or raise --batch-size$"):
        distributed.shard(["a", "b", "c"])
    with pytest.raises(LaserError, match="--device cuda:1 under accelerate launch"):
        distributed.local_device("cuda:1")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.local_device("cuda") == "cuda:3" and distributed.local_device("cpu") == "cpu"


def test_two_cpu_processes_shard_broadcast_and_reduce(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    for name in distributed.SIZE_VARIABLES:
        env.pop(name, None)
    # what `accelerate launch --multi_gpu --num_processes 2` runs: torch's launcher, one process per rank
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["size"], r["main"]) for r in ranks] == [(0, 2, True), (1, 2, False)]
    assert [r["share"] for r in ranks] == [[0, 1, 2], [3, 4]]
    assert all(r["gathered"] == [0, 1, 2, 3, 4] for r in ranks)
    assert ranks[0]["mine"] != ranks[1]["mine"]  # rank 1 alone would have chosen otherwise ...
    assert ranks[0]["chosen"] == ranks[1]["chosen"] == ranks[0]["mine"]  # ... but takes rank 0's choice
    assert all(r["mean"] == [0.5, 5.0] and r["scalar"] == 0.5 for r in ranks)
    assert [r["padded"] for r in ranks] == [[["x", "y"], 2], [["z", "z"], 1]]
    assert [r["tiny"] for r in ranks] == [[["only"], 1], [["only"], 0]]
    assert all(r["doubled"] == ["a1", "b2", "c3"] for r in ranks)
    assert all(r["result"] == [0.5, [0.0, 1.0, 10.0, 11.0, 12.0]] for r in ranks)
    assert all(r["contexts"] == [[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 2 for r in ranks)
    assert all(r["too_many"] == "2 processes share a batch of 1 prompt, so some would get none: launch with "
               "at most 1 process or raise --batch-size" for r in ranks)
