"""Shared test set-up (tests and doctests): one torch thread and one BLAS thread.

On a loaded 2-core machine a second thread makes small torch and LAPACK calls many times slower.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_LIMITS: list[Any] = []


def pytest_configure(config: Any) -> None:
    # Benchmarks set their own BLAS threads (some cases measure the default).
    timing = config.getoption("benchmark_only", default=False)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        if not timing:
            _LIMITS.append(threadpool_limits(1))
    try:
        import torch
    except ImportError:  # banditkit's tests run without torch
        return
    torch.set_num_threads(1)
