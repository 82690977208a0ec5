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
# PyTorch is not a dependency: TORCH_PYTHON=/path/to/python-with-torch bash bench/run.sh also times
# its ResNet-50 (bench/torch_speed.py) in turn with ours and Keras, in float32 and bfloat16.
torch=${TORCH_PYTHON:+--torch $TORCH_PYTHON}
{
  # Preprocessing at two cohort sizes: on 4 series each stage's fixed costs weigh more; then
  # how time and memory grow from 10 to 160 series (small slices).
  # bfloat16: ResNet-50 only, three rounds (on a CPU without AVX512_BF16 its steps take seconds).
  for bench in roofline "train_speed $torch" \
      "train_speed --precision bfloat16 --nets resnet50 --repeats 3 $torch" inference \
      "inference --precision bfloat16 --nets resnet50 --repeats 3" \
      "preprocess --patients 4 16" scale xml_speed; do
    echo "== python -m bench.$bench"
    python -m bench.$bench
    echo
  done
} 2>&1 | grep -v -e "^WARNING" -e "Instructions for updating" -e "This API was designed" \
                 -e "tf.saved_model.load" -e "absl::InitializeLog" \
                 -E -e "^[IWE][0-9]{4} [0-9:.]+ +[0-9]+ [a-z_]+\.cc:[0-9]+\]" \
  | tee data/bench/latest.txt
