#!/usr/bin/env bash
# Runs `python -m tools.lr_find` from the repository root with the project's Python (tools/python.sh);
# every option is passed through (--help lists them).
exec "$(dirname "$0")/python.sh" tools.lr_find "$@"
