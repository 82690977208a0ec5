"""Tests of tools.predict as a tool people script: --format json|csv, --index, --tta, --cam."""
import csv
import io
import json
import cv2
import numpy as np
import pytest
import tensorflow as tf

from lidc.patch_files import read_npy, read_png
from tests.test_training_helpers import tiny_net, train_config, write_dataset
from tools import cli, predict
from training import tta
from training.loop import Hooks
from training.model import Predictor
from training.prediction import parse_rows
from training.runner import run_training

CLASSES = ["nodule >= 3 mm", "nodule < 3 mm", "non-nodule >= 3 mm"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run on 16x16 blobs, three HU patches in patches.npy and one PNG; returns the
    folder that holds runs/, patches.npy and patch.png."""
    root = tmp_path_factory.mktemp("predict")
    write_dataset(root / "work")
    run_training(train_config(root, max_steps=60, eval_every=30), builder=tiny_net,
                 hooks=Hooks(log=lambda *a: None))
    hu = np.full((3, 16, 16), -440, np.int16)
    hu[0, 4:12, 4:12] = 400
    hu[2, 7:9, 7:9] = 400
    np.save(root / "patches.npy", hu)
    png = np.full((16, 16), 102, np.uint8)
    png[7:9, 7:9] = 255
    cv2.imwrite(str(root / "patch.png"), png)
    return root


@pytest.fixture(autouse=True)
def graph_mode_is_not_global(monkeypatch):
    # The tools' main() turns eager execution off for the whole process; tests share one.
    monkeypatch.setattr(tf.compat.v1, "disable_eager_execution", lambda: None)


def expected(trained, images):
    with Predictor.from_saved_model(trained / "runs" / "tiny" / "saved_model") as predictor:
        return predictor.predict(images)


def run(trained, capsys, *argv):
    assert predict.main(["--name", "tiny", "--runs", str(trained / "runs"), *argv]) == 0
    return capsys.readouterr()


def test_json_is_one_array_of_an_object_per_patch(trained, capfd):
    # capfd: what reaches file descriptor 1 (TensorFlow's C++ side included) must be the JSON.
    npy, png = trained / "patches.npy", trained / "patch.png"
    out = run(trained, capfd, "--format", "json", str(npy), str(png)).out
    rows = json.loads(out)
    assert [(r["file"], r["index"]) for r in rows] == [
        (str(npy), 0), (str(npy), 1), (str(npy), 2), (str(png), 0)]
    assert all(set(r) == {"file", "index", "class", "label", "probabilities"} for r in rows)
    want = np.concatenate([expected(trained, read_npy(npy)), expected(trained, read_png(png))])
    np.testing.assert_array_equal([r["probabilities"] for r in rows], want)
    assert [r["class"] for r in rows] == list(want.argmax(axis=1))
    assert [r["label"] for r in rows] == [CLASSES[c] for c in want.argmax(axis=1)]


def test_csv_has_a_column_per_class(trained, capsys):
    npy = trained / "patches.npy"
    out = run(trained, capsys, "--format", "csv", str(npy)).out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["file", "index", "class", "label", *(f"p_{c}" for c in CLASSES)]
    want = expected(trained, read_npy(npy))
    got = [[float(r[f"p_{c}"]) for c in CLASSES] for r in rows]
    np.testing.assert_array_equal(got, want)
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    assert [int(r["class"]) for r in rows] == list(want.argmax(axis=1))


def test_text_stays_one_sentence_per_patch(trained, capsys):
    lines = run(trained, capsys, str(trained / "patches.npy")).out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("patch 0: tiny is ")


@pytest.mark.parametrize("index, rows", [("1:3", [1, 2]), ("-1", [2]), ("::2", [0, 2]),
                                         (":1", [0]), ("1", [1]), ("0:100", [0, 1, 2])])
def test_index_classifies_a_range_of_the_npy(trained, capsys, index, rows):
    npy = trained / "patches.npy"
    out = run(trained, capsys, "--format", "json", "--index", index, str(npy)).out
    got = json.loads(out)
    assert [r["index"] for r in got] == rows
    # Equal up to float32 rounding: the sums run otherwise in batches of another size.
    np.testing.assert_allclose([r["probabilities"] for r in got],
                               expected(trained, read_npy(npy))[rows], rtol=1e-6)


@pytest.mark.parametrize("index, words", [
    ("5:9", "patches.npy: --index 5:9 selects none of its 3 patches"),
    ("7", "patches.npy: --index 7:8 selects none of its 3 patches"),
    ("a:b", "--index: 'a:b' is not start:stop[:step] of integers"),
    ("1:2:0", "the step cannot be 0"),
    ("1:2:3:4", "is not start:stop[:step]"),
])
def test_a_bad_range_exits_2(trained, capsys, index, words):
    with pytest.raises(SystemExit) as exit_:
        cli.run(predict.main, ["--name", "tiny", "--runs", str(trained / "runs"),
                               "--index", index, str(trained / "patches.npy")])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err


def test_index_without_an_npy_exits_2(trained, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(predict.main, ["--name", "tiny", "--runs", str(trained / "runs"),
                               "--index", "0:2", str(trained / "patch.png")])
    assert exit_.value.code == 2 and "none was given" in capsys.readouterr().err


def test_parse_rows_is_pythons_slice_syntax():
    values = list(range(10))
    for text in ("2:5", ":3", "7:", "::3", "-3:", "1:8:2", "9:2:-2"):
        start, stop, step = (int(p) if p else None for p in (text.split(":") + [""])[:3])
        assert values[parse_rows(text)] == values[start:stop:step], text
    assert values[parse_rows("4")] == [4] and values[parse_rows("-1")] == [9]


@pytest.mark.parametrize("flag, names", [(["--tta"], tta.GROUPS["all"]),
                                         (["--tta", "rot"], tta.GROUPS["rot"]),
                                         (["--tta", "flip_lr,identity"], ("identity", "flip_lr"))])
def test_tta_averages_the_softmax_over_the_symmetries(trained, capsys, flag, names):
    npy = trained / "patches.npy"
    out = run(trained, capsys, "--format", "json", str(npy), *flag).out
    with Predictor.from_saved_model(trained / "runs" / "tiny" / "saved_model") as predictor:
        want = tta.predict(predictor.predict, read_npy(npy), names)
    np.testing.assert_allclose([r["probabilities"] for r in json.loads(out)], want, rtol=1e-6)


def test_a_bare_tta_before_file_names_says_how_to_write_it(trained, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(predict.main, ["--name", "tiny", "--runs", str(trained / "runs"), "--tta",
                               str(trained / "patches.npy")])
    assert exit_.value.code == 2 and "write --tta all" in capsys.readouterr().err


def test_cam_writes_one_figure_per_patch(trained, capsys, tmp_path):
    npy, png = trained / "patches.npy", trained / "patch.png"
    captured = run(trained, capsys, "--format", "json", "--cam", str(tmp_path / "cams"),
                   "--index", "1:3", str(npy), str(png))
    rows = json.loads(captured.out)
    assert [r["cam"] for r in rows] == [str(tmp_path / "cams" / name) for name in
                                        ("patches_1.png", "patches_2.png", "patch.png")]
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == [
        "patch.png", "patches_1.png", "patches_2.png"]
    assert all((tmp_path / "cams" / name).read_bytes()[:4] == b"\x89PNG"
               for name in ("patch.png", "patches_1.png"))
    assert "Grad-CAM at conv1: 3 figures" in captured.err


def test_cam_end_point_must_be_a_map(trained, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.run(predict.main, ["--name", "tiny", "--runs", str(trained / "runs"), "--cam",
                               str(tmp_path), "--cam-end-point", "nope",
                               str(trained / "patch.png")])
    assert exit_.value.code == 1
    assert "has no map end point 'nope' for Grad-CAM; it has: conv1" in capsys.readouterr().err
