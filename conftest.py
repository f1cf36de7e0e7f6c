"""Shared test set-up (tests and doctests): one torch thread (two threads on a loaded 2-core machine can be 20x slower)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: object) -> None:
    try:
        import torch
    except ImportError:  # banditkit's tests run without torch
        return
    torch.set_num_threads(1)
