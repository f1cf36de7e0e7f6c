#!/usr/bin/env bash
# Set up (idempotently), then lint, type-check and run the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check banditkit adapters laser_app benchmarks tests
mypy -p banditkit -p laser_adapters -p laser_app
pytest -q "$@"
