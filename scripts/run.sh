#!/usr/bin/env bash
# Set up (idempotently), then run the main job on the built-in default world.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
laser run --policy linucb --rms rm-a,rm-b,rm-c "$@"
