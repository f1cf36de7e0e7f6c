"""Benchmark set-up: ``--benchmark-only`` turns timing on.

The project's pytest ``addopts`` pass ``--benchmark-disable`` so the test suite runs benchmark bodies
once without timing; pytest-benchmark gives that flag precedence over ``--benchmark-only``. Asking
for ``--benchmark-only`` means timing is wanted, so it enables benchmarks here.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_enable = True
