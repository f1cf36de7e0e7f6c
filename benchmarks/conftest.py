"""Benchmark set-up: ``--benchmark-only`` turns timing on; the LASeR loop ablation is opt-in.

The project's pytest ``addopts`` pass ``--benchmark-disable`` so the test suite runs benchmark bodies
once without timing; pytest-benchmark gives that flag precedence over ``--benchmark-only``. Asking
for ``--benchmark-only`` means timing is wanted, so it enables benchmarks here.

Tests marked ``laser`` (the loop ablation, tens of minutes) run only when ``-m`` names that marker
(``-m laser``); ``--quick`` shrinks their grid to a CI-sized subset.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_enable = True


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", default=False,
                     help="the LASeR loop ablation's CI-sized subset (with -m laser)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "laser" in (config.getoption("markexpr", default="") or ""):
        return
    skip = pytest.mark.skip(reason="the LASeR loop ablation is opt-in: pytest benchmarks/ --benchmark-only -m laser")
    for item in items:
        if "laser" in item.keywords:
            item.add_marker(skip)
