#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv, writes the synthetic LIDC-shaped cohort
# (24 patients; options given to this script go to tools/synthesize.sh), runs the preprocessing
# stages, trains ResNet-50 with the paper's stop rule scaled to the demo, evaluates it, and
# compares LeNet-5 and ResNet-50 by training-set size over two seeds.
# Every step resumes or reuses finished work, so running this again is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh

tools/synthesize.sh --patients 24 "$@"
tools/preprocess.sh   # index, annotations and crop, one pool of workers
tools/dataset.sh      # by patient; one patch per lesion and slice

# Runs trained on another dataset (the cohort written with other options before) are trained
# again, not resumed: train, evaluate and compare refuse to mix datasets.
start=(--resume) fresh=()
if [[ -f runs/demo-resnet50/config.json ]] && ! python - <<'SAME'
import json, sys
from pathlib import Path
from training.data import dataset_digest
trained_on = json.loads(Path("runs/demo-resnet50/config.json").read_text()).get("dataset")
sys.exit(trained_on != dataset_digest(Path("data/work/dataset")))
SAME
then
  start=(--force) fresh=(--force)
fi

# The paper stops past 5,000 steps once validation accuracy is over 0.90. The demo's 461
# training patches, a third of them small nodules, need a tenth of the steps, batches balanced
# over the classes, the stop rule and the best checkpoint on balanced accuracy, and a learning
# rate annealed to 0 by the last step.
demo_training=(--augment --sampler balanced --stop-metric balanced_accuracy --stop-accuracy 0.90
               --lr-schedule cosine --eval-every 50)
tools/train.sh --net resnet50 --name demo-resnet50 "${start[@]}" "${demo_training[@]}" \
  --min-steps 200 --max-steps 600
tools/evaluate.sh --name demo-resnet50 --tta
# VGG-16 sits out of the demo (a step costs 4x ResNet-50's here); the README gives the full grid.
tools/compare.sh --nets lenet5,resnet50 --sizes 100,all --seeds 0,1 --prefix demo-compare \
  "${fresh[@]}" "${demo_training[@]}" --min-steps 150 --max-steps 200

cat <<'DONE'

Done. Where to look:
  runs/demo-resnet50/report.html       the ResNet-50 run: metrics with 95% intervals, ROC,
                                       calibration, learning curves, galleries, Grad-CAM
  data/work/compare/report.html        the comparison: balanced accuracy by training-set size
  data/work/compare/compare.png        the same plot alone; compare.csv, compare_summary.csv
  runs/demo-compare-*/report.html      each run of the comparison
  data/work/skipped/                   what the stages could not use, and why
  .venv/bin/tensorboard --logdir runs  the training curves
  bash tools/view.sh                   the cases in the browser, with the runs' verdicts
DONE
