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
from training.evaluation import EvalOptions, evaluate_run
from training.model import Predictor
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


def test_evaluate_with_tta_adds_a_block_and_keeps_the_plain_keys(trained,
                                                                   graph_mode_is_not_global,
                                                                   capsys):
    common = ["--name", "tiny", "--work", str(trained / "work"), "--runs", str(trained / "runs")]
    assert evaluate.main(common) == 0
    plain = json.loads((trained / "runs" / "tiny" / "eval" / "metrics.json").read_text())
    assert evaluate.main([*common, "--tta", "rot"]) == 0
    report = json.loads((trained / "runs" / "tiny" / "eval" / "metrics.json").read_text())
    assert {k: v for k, v in report.items() if k != "tta"} == plain
    block = report["tta"]
    assert block["symmetries"] == ["identity", "rot90", "rot180", "rot270"]
    assert block["n"] == 30 and 0 <= block["accuracy"] <= 1
    assert set(block) >= {"accuracy", "balanced_accuracy", "macro", "per_class", "confusion"}
    out = capsys.readouterr().out
    assert "with test-time augmentation (identity, rot90, rot180, rot270)" in out
    assert "with test-time augmentation: accuracy" in out


def test_evaluate_writes_galleries_and_grad_cam(trained):
    evaluate_run(trained / "runs", "tiny", trained / "work",
                 EvalOptions(cam_per_class=2), log=lambda *a: None)
    eval_dir = trained / "runs" / "tiny" / "eval"
    galleries = json.loads((eval_dir / "galleries.json").read_text())
    assert len(galleries["galleries"]) == 9  # 3 classes x (right, wrong, uncertain)
    for gallery in galleries["galleries"]:
        assert (gallery["image"] is None) == (not gallery["patches"])
        if gallery["image"]:
            assert (eval_dir / gallery["image"]).read_bytes()[:4] == b"\x89PNG"
        for row in gallery["patches"]:
            assert row["class"] == gallery["class"] and row["patient_id"].startswith("P")
    cam = json.loads((eval_dir / "cam.json").read_text())
    assert cam["end_point"] == "conv1" and cam["per_class"] == 2
    # The blobs' test classes take turns: rows 0, 3, ... 27 are class 0; two evenly spaced.
    assert [[p["row"] for p in c["patches"]] for c in cam["classes"]] == [[0, 27], [1, 28],
                                                                          [2, 29]]
    assert [c["image"] for c in cam["classes"]] == [f"cam/class{c}.png" for c in range(3)]
    assert sorted(p.name for p in (eval_dir / "cam").iterdir()) == [
        "class0.png", "class1.png", "class2.png"]
    for c in cam["classes"]:
        assert all(p["explained"] == p["predicted"] for p in c["patches"])


def test_evaluate_without_end_points_leaves_grad_cam_out(trained, monkeypatch):
    monkeypatch.setattr(Predictor, "end_points", lambda self: {})
    logged = []
    report = evaluate_run(trained / "runs", "tiny", trained / "work", log=logged.append)
    assert report["n"] == 30
    assert any("no Grad-CAM figures" in line and "records no end points" in line
               for line in logged)
    with pytest.raises(LidcError, match="records no end points"):
        evaluate_run(trained / "runs", "tiny", trained / "work",
                     EvalOptions(cam_end_point="conv1"), log=lambda *a: None)


def test_evaluate_refuses_a_run_that_does_not_exist(trained):
    with pytest.raises(LidcError, match="no such run"):
        evaluate_run(trained / "runs", "nope", trained / "work")


def test_evaluate_refuses_a_dataset_built_again_since_the_run(trained, tmp_path):
    other = tmp_path / "work"
    write_dataset(other, seed=1)  # the same shapes, other patients on each side
    with pytest.raises(LidcError, match="is not the dataset run tiny was trained on"):
        evaluate_run(trained / "runs", "tiny", other, log=lambda *a: None)


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
