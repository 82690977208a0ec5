#!/usr/bin/env bash
# Creates .venv beside the repository (if missing) and installs requirements.txt into it whenever
# the file changed. Sourced by demo.sh and test.sh; puts .venv/bin first on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON3:-python3}" -m venv .venv
fi
want=$(sha1sum requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha1 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$want" > .venv/.requirements.sha1
fi
export PATH="$PWD/.venv/bin:$PATH"
