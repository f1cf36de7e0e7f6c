#!/usr/bin/env bash
# Idempotent set-up: a venv in the repo with the CPU torch wheel first, then the project with its extras.
# Re-running is a no-op unless pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.installed-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (first run takes about two minutes)" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # An unpinned torch pulls a multi-GB CUDA build: take the local CPU wheel before anything asks for torch.
  pip_q() { "$venv/bin/pip" install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }
  pip_q "torch==2.13.0"
  pip_q -e ".[llm,dev]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
