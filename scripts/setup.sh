#!/usr/bin/env bash
# Create .venv at the repository root with the pinned stack (requirements.lock) and lst itself.
# Idempotent: a second run only checks. Needs Python 3.11 and pip; torch/torchvision come as wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"lst needs Python 3.11, found {sys.version.split()[0]}"'
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.lst-installed
if [ ! -f "$stamp" ] || ! cmp -s requirements.lock "$stamp"; then
  echo "setup: installing the pinned stack (torch 2.14.1, torchvision 0.29.1, snakemake 9, ...)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.lock
  cp requirements.lock "$stamp"
fi
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "setup: .venv ready"
