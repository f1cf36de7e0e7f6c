"""A real-model check on one CUDA GPU (not part of the test suite): LASeR and the score ensemble, 20 steps each.

The policy is a small instruct model (default Qwen/Qwen2.5-0.5B-Instruct, or a local folder) trained under
LoRA in bf16; the RMs come from a registry file, or by default three RMs built from the same model (a 1-5
judge, a yes/no judge and the response's likelihood). Arithmetic prompts with answers are written to a
temporary folder. For each method it prints the seconds per step split into generate / score / train /
select (+ encode), read from the run folder's events.jsonl, and the peak GPU memory.

    python scripts/gpu_check.py [--model PATH_OR_HUB_ID] [--registry rms.toml] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

PARTS = ("generate", "score", "train", "select", "encode")
JUDGE_YES_NO = ("Is the response a correct answer to the question?\nQuestion: {prompt}\nResponse: {response}\n"
                "Answer with one of {grades}.")


def write_data(folder: Path, n: int = 240, seed: int = 0) -> Path:
    """Addition and multiplication questions with their answers, one task each."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 30)
        op, task, answer = ("+", "add", a + b) if i % 2 else ("*", "mul", a * b)
        rows.append({"prompt": f"What is {a} {op} {b}? Reply with the number only.", "answer": str(answer),
                     "task": task})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_registry(folder: Path, model: str) -> Path:
    """Three RMs built from ``model`` with the project's RM kinds, in bf16 on the GPU."""
    common = f'model = "{model}"\ndtype = "bfloat16"\ndevice = "cuda"\n'
    path = folder / "rms.toml"
    path.write_text(
        f'[rms.judge-1to5]\nkind = "judge"\n{common}options = {{ batch_size = 32, max_length = 512 }}\n\n'
        f'[rms.judge-yes-no]\nkind = "judge"\n{common}'
        f'options = {{ grades = ["Yes", "No"], template = {json.dumps(JUDGE_YES_NO)}, batch_size = 32 }}\n\n'
        f'[rms.likelihood]\nkind = "likelihood"\n{common}options = {{ batch_size = 32 }}\n')
    return path


def step_seconds(run_dir: Path) -> dict[str, float]:
    """Mean seconds per step for each part, from the run's events.jsonl."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    return {part: sum(e["seconds"].get(part, 0.0) for e in events) / len(events) for part in PARTS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct", help="policy: hub id or local folder")
    parser.add_argument("--registry", type=Path, help="RM registry file (default: three RMs from --model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-responses", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--methods", default="linucb,ensemble-score", help="comma-separated --policy values")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: needs a CUDA GPU and a CUDA build of torch; torch sees none here", file=sys.stderr)
        return 1
    from laser_app.config import RunConfig
    from laser_app.loop import run_laser

    folder = Path(tempfile.mkdtemp(prefix="laser-gpu-check-"))
    data = write_data(folder, n=2 * args.batch_size * args.steps)
    registry = args.registry or write_registry(folder, args.model)
    print(f"policy {args.model}, RMs from {registry}, {args.steps} steps of {args.batch_size} prompts x "
          f"{args.n_responses} responses, bf16 + LoRA on {torch.cuda.get_device_name()}")
    for method in args.methods.split(","):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        config = RunConfig.model_validate(dict(
            policy=method, model=args.model, rm_registry=registry, data=data, device="cuda", dtype="bf16",
            lora=True, gradient_checkpointing=args.gradient_checkpointing, iterations=1,
            batches_per_iteration=args.steps, batch_size=args.batch_size, n_responses=args.n_responses,
            max_new_tokens=args.max_new_tokens, lr=1e-4, out=folder / method, overwrite=True))
        summary = run_laser(config, progress=False)
        secs = step_seconds(summary.run_dir)
        split = ", ".join(f"{part} {secs[part]:.2f}" for part in PARTS)
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{method:>15}: {sum(secs.values()):.2f} s/step ({split}); peak GPU memory {peak:.1f} GiB; "
              f"run folder {summary.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
