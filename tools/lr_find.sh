#!/usr/bin/env bash
# Runs `python -m tools.lr_find` from the repository root; every option is passed through (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m tools.lr_find "$@"
