"""A tiny world-like setup for end-to-end tests: a policy, three RMs, a registry file and JSONL data.

Everything is built from configs with ``laser_adapters.testing`` and saved to a folder, so ``laser run``
loads it through ``--model``, ``--rm-registry``, ``--data`` and ``--eval-data`` exactly as user files.
"""

from __future__ import annotations

import json
from pathlib import Path

from laser_adapters.testing import tiny_causal_lm, tiny_classifier

RMS = ("rm-a", "rm-b", "rm-c")
TASKS = ("math", "yesno", "mcq")


def build_tiny_setup(root: Path) -> dict[str, Path]:
    """Write the setup under ``root``; returns the paths to pass as flags."""
    root.mkdir(parents=True, exist_ok=True)
    policy = tiny_causal_lm(root / "policy", hidden=32, layers=1, seed=0)
    for i, name in enumerate(RMS):
        tiny_classifier(root / name, hidden=16, layers=1, seed=i + 1)
    registry = root / "rms.toml"
    registry.write_text("".join(f'[rms.{n}]\nkind = "classifier"\nmodel = "./{n}"\n' for n in RMS))
    rows = [{"prompt": f"Q: {i} plus 1? Answer:", "answer": str(i + 1), "task": TASKS[i % 3]}
            for i in range(18)]
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluation = root / "eval.jsonl"
    evaluation.write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    # an RM that gives every response the same score (so every pair ties), and one that raises
    (root / "odd_rms.toml").write_text(
        '[rms.flat]\nkind = "function"\noptions = { callable = "operator:eq", batched = false }\n'
        '[rms.broken]\nkind = "function"\noptions = { callable = "math:fmod", batched = false }\n'
        '[rms.rm-a]\nkind = "classifier"\nmodel = "./rm-a"\n')
    return {"root": root, "policy": policy, "registry": registry, "odd_registry": root / "odd_rms.toml",
            "train": train, "eval": evaluation}


def run_args(paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """``laser run`` arguments for a few quick steps on the tiny setup."""
    return ["run", "--model", str(paths["policy"]), "--rm-registry", str(paths["registry"]),
            "--data", str(paths["train"]), "--eval-data", str(paths["eval"]), "--out", str(out),
            "--iterations", "2", "--batch-size", "3", "--batches-per-iteration", "3", "--n-responses", "4",
            "--max-new-tokens", "4", "--context", "hash", "--no-progress", *extra]
