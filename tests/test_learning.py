"""The whole pipeline learns: LeNet-5 trained on a tiny synthetic cohort beats chance on unseen
patients.

The demo cohort's classes overlap as real LIDC's do and are imbalanced (most patches are nodules
>= 3 mm), so accuracy alone would reward answering the majority class; the one-vs-rest ROC AUC,
whose chance level is 0.5 whatever the imbalance, is the measure.
"""
import json
import subprocess
import sys

from lidc.synthetic import write_cohort
from tools import annotations, crop, dataset, index


def run(*args):
    subprocess.run([sys.executable, "-m", *args], check=True, capture_output=True)


def test_lenet5_learns_the_tiny_synthetic_cohort(tmp_path):
    root, work, runs = tmp_path / "LIDC-IDRI", tmp_path / "work", tmp_path / "runs"
    write_cohort(root, patients=6, size=128, slices=24, seed=2)
    assert index.main(["--root", str(root), "--work", str(work), "--workers", "1"]) == 0
    for stage in (annotations, crop):
        assert stage.main(["--work", str(work), "--workers", "1"]) == 0
    assert dataset.main(["--work", str(work), "--unit", "mark"]) == 0
    common = ["--work", str(work), "--runs", str(runs), "--name", "lenet5"]
    run("tools.train", *common, "--net", "lenet5", "--max-steps", "300", "--eval-every", "50",
        "--min-steps", "300", "--augment", "--deterministic")
    run("tools.evaluate", *common)
    metrics = json.loads((runs / "lenet5" / "eval" / "metrics.json").read_text())
    assert metrics["macro"]["auc"] > 0.65, metrics["macro"]
