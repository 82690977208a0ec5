#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv, writes the synthetic LIDC-shaped cohort,
# runs the four preprocessing stages, trains ResNet-50 with the paper's stop rule scaled to the
# demo, evaluates it, and compares LeNet-5, VGG-16 and ResNet-50 by training-set size.
# Every step resumes or reuses finished work, so running this again is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh

tools/synthesize.sh "$@"
tools/preprocess.sh   # index, annotations and crop, one pool of workers
tools/dataset.sh

# The paper stops past 5,000 steps once accuracy is over 0.90; the demo's 600 training patches
# need a tenth of that.
tools/train.sh --net resnet50 --name demo-resnet50 --resume --augment \
  --min-steps 200 --stop-accuracy 0.85 --max-steps 400 --eval-every 50
tools/evaluate.sh --name demo-resnet50
tools/compare.sh --nets lenet5,vgg16,resnet50 --sizes 150,400 --augment \
  --min-steps 100 --stop-accuracy 0.85 --max-steps 120 --eval-every 40

cat <<'DONE'

Done. Where to look:
  data/work/index.csv, annotations.csv, patches/patches.csv   what each stage found
  data/work/skipped/                                          what was not used, and why
  data/work/dataset/summary.json                              the split, class counts, HU window
  runs/demo-resnet50/eval/metrics.json, confusion.png, learning_curves.png
  data/work/compare/compare.csv, compare.png                  test accuracy by training-set size
  tensorboard --logdir runs                                   the training curves
DONE
