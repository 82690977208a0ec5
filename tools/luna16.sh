#!/usr/bin/env bash
# Runs `python -m tools.luna16` from the repository root; every option is passed through (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m tools.luna16 "$@"
