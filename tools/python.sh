#!/usr/bin/env bash
# Runs `python -m MODULE ARGS...` from the repository root with the project's Python: $PYTHON if
# set, else .venv's (tools/setup.sh makes it), else python3. Every tools/STAGE.sh calls this, so
# the wrappers work in any shell after the demo, activated or not.
set -euo pipefail
cd "$(dirname "$0")/.."
module=$1
shift
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=python3
fi
exec "$py" -m "$module" "$@"
