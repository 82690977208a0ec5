"""Metrics with their uncertainty, ROC and calibration, and the HTML reports built from them.

Each figure of a report is checked through the numbers behind it (the JSON and CSV it is drawn
from), and each report is checked to show those numbers and to embed every figure without
fetching anything.
"""
import json
import re

import numpy as np
import pytest

from tests.test_training_helpers import tiny_net, train_config, write_dataset
from training import metrics, uncertainty
from training.comparison import Grid, run_comparison
from training.evaluation import EvalOptions, evaluate_run
from training.loop import Hooks
from training.runner import run_training

QUIET = Hooks(log=lambda *a: None)


def cohort(patients=12, per_patient=10, seed=0):
    """labels, probabilities, patient ids: a classifier right about 70% of the time."""
    rng = np.random.default_rng(seed)
    n = patients * per_patient
    labels = rng.integers(0, 3, n)
    probabilities = rng.dirichlet([1, 1, 1], n) * 0.6
    probabilities[np.arange(n), labels] += 0.4 * (rng.random(n) < 0.8)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return labels, probabilities, np.repeat([f"P{i}" for i in range(patients)], per_patient)


def test_bootstrap_intervals_bracket_the_figures_and_are_fixed_by_the_seed():
    labels, probabilities, patients = cohort()
    result = uncertainty.bootstrap(labels, probabilities, patients, resamples=300, seed=4)
    assert result["patients"] == 12 and result["used"] == 300 and result["note"] is None
    figures = metrics.headline(labels, probabilities)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc"):
        low, high = result["intervals"][name]
        assert low <= figures[name] <= high and high - low > 0.01, name
    again = uncertainty.bootstrap(labels, probabilities, patients, resamples=300, seed=4)
    assert again == result
    assert uncertainty.bootstrap(labels, probabilities, patients, resamples=300,
                                 seed=5) != result


def test_bootstrap_resamples_patients_not_patches():
    # Each patient's patches are all right or all wrong: drawing whole patients, a resample's
    # accuracy is a share of whole patients (multiples of 1/12 with equal patients); drawing
    # patches would give any multiple of 1/120.
    labels = np.tile([0, 1, 2], 40)
    patients = np.repeat([f"P{i}" for i in range(12)], 10)
    right = np.repeat(np.arange(12) < 7, 10)
    probabilities = np.full((120, 3), 0.1)
    probabilities[np.arange(120), np.where(right, labels, (labels + 1) % 3)] = 0.8
    result = uncertainty.bootstrap(labels, probabilities, patients, resamples=200, seed=0)
    for end in result["intervals"]["accuracy"]:
        assert end * 12 == pytest.approx(round(end * 12), abs=0.06)


def test_resamples_lacking_a_class_are_skipped_and_few_patients_are_said():
    labels, probabilities, patients = cohort(patients=6)
    labels[patients == "P0"] = 1  # class 1 only in patient 0 from here on
    labels[(patients != "P0") & (labels == 1)] = 0
    result = uncertainty.bootstrap(labels, probabilities, patients, resamples=200, seed=1)
    assert 0 < result["used"] < 200
    assert "only 6 test patients" in result["note"]
    two = uncertainty.bootstrap(labels[:20], probabilities[:20], patients[:20], 100)
    assert two["intervals"] is None and "too few to resample" in two["note"]


def test_the_roc_points_enclose_the_rank_auc():
    labels, probabilities, _ = cohort()
    curves = metrics.roc_points(labels, probabilities)
    aucs = metrics.one_vs_rest_auc(labels, probabilities)
    for c, curve in curves.items():
        assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(aucs[c], abs=2e-3)


def test_expected_calibration_error_by_hand():
    probabilities = np.array([[0.95, 0.05, 0], [0.95, 0.05, 0], [0.65, 0.35, 0],
                              [0.35, 0.65, 0]])
    labels = np.array([0, 1, 0, 1])  # the first bin: half right; the second: both right
    result = metrics.reliability(labels, probabilities)
    assert [(b["count"], b["accuracy"]) for b in result["bins"]] == [(2, 1.0), (2, 0.5)]
    assert result["ece"] == pytest.approx(0.5 * 0.35 + 0.5 * 0.45)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny run, trained and evaluated with 200 bootstrap resamples."""
    root = tmp_path_factory.mktemp("report")
    write_dataset(root / "work", sizes=(60, 30, 60))
    run_training(train_config(root, max_steps=40, eval_every=20), builder=tiny_net,
                 hooks=QUIET)
    report = evaluate_run(root / "runs", "tiny", root / "work", EvalOptions(bootstrap=200),
                          log=lambda *a: None)
    return root, report


def images(page):
    return re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)


def test_the_run_report_embeds_every_figure_and_shows_the_numbers(evaluated):
    root, report = evaluated
    page = (root / "runs" / "tiny" / "report.html").read_text()
    shown = images(page)
    assert shown[:4] == ["learning_curves", "confusion", "roc", "calibration"]
    eval_dir = root / "runs" / "tiny" / "eval"  # then the galleries and Grad-CAM figures
    assert sorted(shown[4:]) == sorted(p.stem for folder in ("gallery", "cam")
                                       for p in (eval_dir / folder).glob("*.png"))
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    stored = json.loads((root / "runs" / "tiny" / "eval" / "metrics.json").read_text())
    low, high = stored["uncertainty"]["intervals"]["accuracy"]
    assert f"{stored['accuracy']:.3f} [{low:.3f}, {high:.3f}]" in page
    assert f"{stored['balanced_accuracy']:.3f}" in page
    bins = stored["calibration"]["bins"]
    assert sum(b["count"] for b in bins) == stored["n"]
    assert stored["calibration"]["ece"] == pytest.approx(
        sum(b["count"] / stored["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins))
    assert "expected calibration error" in page
    assert set(stored["roc"]) == set(stored["class_names"])
    assert report["uncertainty"]["patients"] == 20  # write_dataset: 3 patches a patient
    config = json.loads((root / "runs" / "tiny" / "config.json").read_text())
    assert f"<td class=\"name\">lr</td><td>{config['lr']}</td>" in page


def test_the_comparison_report_shows_every_run_and_the_summary(tmp_path):
    write_dataset(tmp_path / "work")
    options = {k: v for k, v in train_config(tmp_path, max_steps=10, eval_every=10).items()
               if k not in ("net", "name", "train_size", "seed")}
    rows = run_comparison(options, Grid(["tiny"], [12, 30], seeds=[0, 1],
                                        builders={"tiny": tiny_net}), QUIET)
    page = (tmp_path / "work" / "compare" / "report.html").read_text()
    assert images(page) == ["compare"]
    for r in rows:
        assert f"<td class=\"name\">tiny</td><td>{r['size']}</td><td>{r['seed']}</td>" in page
        assert r["run"] in page
    means = {s: np.mean([r["balanced_accuracy"] for r in rows if r["size"] == s])
             for s in (12, 30)}
    for mean in means.values():
        assert f"{round(mean, 4)}" in page
