#!/usr/bin/env bash
# Set up (idempotently), then lint, type-check and run the test suite; under CI also the CI-sized LASeR loop
# ablation (about a minute, plus a minute to build its small world when not cached).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check banditkit adapters laser_app benchmarks tests
mypy -p banditkit -p laser_adapters -p laser_app
pytest -q "$@"
if [ "${CI:-}" = "true" ]; then
  pytest -q benchmarks/test_loop_ablation.py --benchmark-only -m laser --quick
fi
