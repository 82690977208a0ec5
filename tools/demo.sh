#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv, writes the synthetic LIDC-shaped cohort
# and runs every preprocessing stage on it. Every stage resumes, so running this again is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
tools/synthesize.sh "$@"
tools/index.sh
tools/annotations.sh
tools/crop.sh
tools/dataset.sh
echo
echo "Done. Look at data/work/: index.csv, annotations.csv, patches/patches.csv, dataset/*.npz,"
echo "and data/work/skipped/ for what each stage could not use and why."
