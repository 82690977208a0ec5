#!/usr/bin/env bash
# Sets up .venv and runs the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
exec python -m pytest "$@"
