#!/usr/bin/env bash
# Runs `python -m tools.luna16` from the repository root with the project's Python (tools/python.sh);
# every option is passed through (--help lists them).
exec "$(dirname "$0")/python.sh" tools.luna16 "$@"
