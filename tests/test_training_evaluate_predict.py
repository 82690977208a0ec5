"""Tests of tools.evaluate and tools.predict on a tiny trained run."""
import json
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf

from lidc.errors import LidcError
from tests.test_training_helpers import tiny_net, train_config, write_dataset
from lidc.patch_files import read_npy
from tools import evaluate, predict
from training.evaluation import evaluate_run
from training.loop import Hooks
from training.prediction import predict_files
from training.runner import run_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run 'tiny' trained for 150 steps on the blobs; returns the folder above work/, runs/."""
    root = tmp_path_factory.mktemp("trained")
    write_dataset(root / "work")
    run_training(train_config(root, max_steps=150, eval_every=50), builder=tiny_net,
                 hooks=Hooks(log=lambda *a: None))
    return root


@pytest.fixture
def graph_mode_is_not_global(monkeypatch):
    # The tools' main() turns eager execution off for the whole process; tests share one.
    monkeypatch.setattr(tf.compat.v1, "disable_eager_execution", lambda: None)


def test_evaluate_writes_metrics_and_figures(trained, graph_mode_is_not_global, capsys):
    assert evaluate.main(["--name", "tiny", "--work", str(trained / "work"),
                          "--runs", str(trained / "runs")]) == 0
    eval_dir = trained / "runs" / "tiny" / "eval"
    report = json.loads((eval_dir / "metrics.json").read_text())
    assert report["n"] == 30 and report["accuracy"] > 0.8
    assert np.sum(report["confusion"]) == 30
    assert report["checkpoint"].startswith(str(trained / "runs" / "tiny" / "best"))
    assert set(report["per_class"]) == {"nodule >= 3 mm", "nodule < 3 mm", "non-nodule >= 3 mm"}
    assert 0.0 <= report["macro"]["auc"] <= 1.0
    for png in ("confusion.png", "learning_curves.png"):
        assert (eval_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "macro average" in out and "test accuracy" in out


def test_evaluate_refuses_a_run_that_does_not_exist(trained):
    with pytest.raises(LidcError, match="no such run"):
        evaluate_run(trained / "runs", "nope", trained / "work")


SENTENCE = re.compile(r"(.+): tiny is (\d+\.\d)% confident this is a "
                      r"(nodule >= 3 mm|nodule < 3 mm|non-nodule >= 3 mm)$")


def test_predict_prints_one_sentence_per_patch(trained, graph_mode_is_not_global, capsys):
    hu = np.full((3, 16, 16), -440, np.int16)  # 0.4 once windowed, as the blobs
    hu[0, 4:12, 4:12] = 400  # a big bright disk's worth of dense tissue: class 0 of the blobs
    np.save(trained / "patches.npy", hu)
    png = np.full((16, 16), 102, np.uint8)
    png[7:9, 7:9] = 255
    cv2.imwrite(str(trained / "patch.png"), png)
    assert predict.main(["--name", "tiny", "--runs", str(trained / "runs"),
                         str(trained / "patches.npy"), str(trained / "patch.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [SENTENCE.match(line).group(1) for line in lines] == [
        "patches.npy patch 0", "patches.npy patch 1", "patches.npy patch 2", "patch.png"]
    assert all(0 < float(SENTENCE.match(line).group(2)) <= 100 for line in lines)
    assert SENTENCE.match(lines[0]).group(3) == "nodule >= 3 mm"


def test_predict_refuses_patches_of_another_size(trained):
    np.save(trained / "big.npy", np.zeros((2, 64, 64), np.int16))
    with pytest.raises(LidcError, match="patches are 64x64; the network takes 16x16"):
        predict_files(trained / "runs", "tiny", [trained / "big.npy"])


def test_predict_windows_hu_like_the_dataset_stage(tmp_path):
    np.save(tmp_path / "hu.npy", np.array([[-2000, -1000, -300, 400, 3000]] * 5, np.int16))
    np.testing.assert_allclose(read_npy(tmp_path / "hu.npy")[0, 0, :, 0],
                               [0, 0, 0.5, 1, 1])
    # The dataset stage's float x, already in [0, 1], is taken as it is.
    np.save(tmp_path / "unit.npy", np.full((2, 4, 4, 1), 0.25, np.float32))
    np.testing.assert_array_equal(read_npy(tmp_path / "unit.npy"), 0.25)
