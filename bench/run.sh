#!/usr/bin/env bash
# Runs every benchmark in turn and keeps the printed tables in data/bench/latest.txt.
#   bash bench/run.sh       (from a clean clone: sets up .venv first, as the README's commands do)
# Options of one benchmark: python -m bench.NAME --help.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
mkdir -p data/bench
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# TensorFlow's C++ logging prints a few lines (oneDNN notice, no CUDA driver) before that setting
# takes effect; the filter below keeps them out of the tables.
{
  # Preprocessing at two cohort sizes: on 4 series each stage's fixed costs weigh more; then
  # how time and memory grow from 10 to 160 series (small slices).
  for bench in roofline train_speed inference "preprocess --patients 4 16" scale xml_speed; do
    echo "== python -m bench.$bench"
    python -m bench.$bench
    echo
  done
} 2>&1 | grep -v -e "^WARNING" -e "Instructions for updating" -e "This API was designed" \
                 -e "tf.saved_model.load" -e "absl::InitializeLog" \
                 -E -e "^[IWE][0-9]{4} [0-9:.]+ +[0-9]+ [a-z_]+\.cc:[0-9]+\]" \
  | tee data/bench/latest.txt
