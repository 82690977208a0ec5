"""Tests of training.tta (the square's symmetries), training.explain (Grad-CAM, galleries) and the
end points a trained graph records (training.model)."""
import itertools
import json

import numpy as np
import pytest
import tensorflow as tf

import nets
from lidc.errors import LidcError
from tests.test_training_evaluate_predict import trained  # noqa: F401 (a fixture)
from training import batches, explain, model as model_lib, tta
from training.data import Split
from training.model import Predictor
from training.rundir import run_folder

v1 = tf.compat.v1

# An image no symmetry of the square leaves unchanged: every pixel differs.
ASYMMETRIC = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)


def turned(name, image=ASYMMETRIC):
    return tta.apply(name, image)


# Test-time augmentation: the eight symmetries --------------------------------------------------

def test_the_eight_symmetries_are_distinct():
    images = [turned(name).tobytes() for name in tta.SYMMETRIES]
    assert len(tta.SYMMETRIES) == 8 and len(set(images)) == 8


def test_the_symmetries_form_a_group():
    by_image = {turned(name).tobytes(): name for name in tta.SYMMETRIES}
    for a, b in itertools.product(tta.SYMMETRIES, repeat=2):
        assert tta.apply(a, turned(b)).tobytes() in by_image, (a, b)  # closed
    for a in tta.SYMMETRIES:  # every one has an inverse
        assert any(np.array_equal(tta.apply(b, turned(a)), ASYMMETRIC) for b in tta.SYMMETRIES)
    np.testing.assert_array_equal(turned("identity"), ASYMMETRIC)


@pytest.mark.parametrize("group", ["all", "rot", "flip"])
def test_each_named_set_is_a_subgroup(group):
    names = tta.parse(group)
    images = {turned(name).tobytes() for name in names}
    for a, b in itertools.product(names, repeat=2):
        assert tta.apply(a, turned(b)).tobytes() in images, (a, b)


def test_the_symmetries_are_what_their_names_say():
    image = ASYMMETRIC[0, :, :, 0]
    expected = {"identity": image, "rot90": np.rot90(image), "rot180": image[::-1, ::-1],
                "rot270": np.rot90(image, -1), "flip_lr": image[:, ::-1],
                "flip_ud": image[::-1], "transpose": image.T, "transverse": image[::-1, ::-1].T}
    for name, want in expected.items():
        np.testing.assert_array_equal(turned(name)[0, :, :, 0], want, err_msg=name)


def test_parse_takes_groups_and_lists_and_refuses_unknown_names():
    assert tta.parse("all") == tuple(tta.SYMMETRIES)
    assert tta.parse("rot") == ("identity", "rot90", "rot180", "rot270")
    assert tta.parse("flip_ud, identity") == ("identity", "flip_ud")
    for bad in ("", "spin", "rot90,spin", ","):
        with pytest.raises(ValueError, match="names no symmetries"):
            tta.parse(bad)


def test_tta_averages_the_probabilities_over_the_symmetries():
    # A "network" that answers by where the brightest pixel is: class 0 in the top half.
    def predict(images):
        top = images[:, :2].max(axis=(1, 2, 3)) > images[:, 2:].max(axis=(1, 2, 3))
        return np.stack([top, ~top], axis=1).astype(np.float64)

    # The brightest pixel (15) is bottom right: top after rot90, flip_ud, transverse and rot180.
    np.testing.assert_allclose(tta.predict(predict, ASYMMETRIC, tta.parse("all")), [[0.5, 0.5]])
    np.testing.assert_allclose(tta.predict(predict, ASYMMETRIC, ("identity",)), [[0, 1]])
    with pytest.raises(ValueError, match="square"):
        tta.predict(predict, np.zeros((1, 4, 6, 1)), ("identity",))


# End points recorded in the graph --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(trained):
    """The RunDir of the tiny run trained on the blobs (tests.test_training_evaluate_predict)."""
    return run_folder(trained / "runs", "tiny")


@pytest.mark.parametrize("load", ["checkpoint", "saved_model"])
def test_a_loaded_model_finds_its_end_points_and_logits(tiny_run, load):
    loader = {"checkpoint": lambda: Predictor.from_checkpoint(tiny_run.checkpoint()),
              "saved_model": lambda: Predictor.from_saved_model(tiny_run.saved_model)}[load]
    with loader() as predictor:
        points = predictor.end_points()
        assert list(points) == ["conv1", "pool", "logits"]
        assert points["conv1"].shape.as_list() == [None, 16, 16, 4]
        assert predictor.logits.shape.as_list() == [None, 3]
        x = np.random.default_rng(0).random((5, 16, 16, 1)).astype(np.float32)
        logits, probabilities = predictor.session.run(
            [predictor.logits, predictor.probabilities], {predictor.images: x})
        np.testing.assert_allclose(probabilities, _softmax(logits), rtol=1e-5)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_a_model_saved_without_end_points_says_so(tiny_run, monkeypatch):
    with Predictor.from_checkpoint(tiny_run.checkpoint()) as predictor:
        monkeypatch.setattr(predictor, "end_points", lambda: {})
        with pytest.raises(LidcError, match="records no end points"):
            explain.GradCam(predictor)
    with Predictor.from_checkpoint(tiny_run.checkpoint()) as predictor:
        with pytest.raises(LidcError, match="no map end point 'pool'.*it has: conv1"):
            explain.GradCam(predictor, "pool")


@pytest.mark.parametrize("net, size, expected", [
    ("lenet5", 64, "pool2"), ("vgg16", 64, "conv4"), ("resnet50", 64, "block2"),
    ("lenet5", 32, "conv2")])
def test_the_default_end_point_is_the_last_map_of_at_least_8x8(net, size, expected):
    with tf.Graph().as_default() as graph:
        images = v1.placeholder(tf.float32, [None, size, size, 1])
        logits, _ = model_lib.recording_end_points(nets.get(net))(images, 3, False)
        predictor = Predictor(graph, None, images, tf.nn.softmax(logits), net)
        shapes = explain.map_shapes(predictor.end_points())
    assert explain.default_end_point(shapes) == expected
    assert min(shapes[expected]) >= explain.MIN_CAM_SIZE


def test_default_end_point_falls_back_to_the_largest_map():
    assert explain.default_end_point({"a": (4, 4), "b": (6, 6), "c": (2, 2)}) == "b"
    assert explain.default_end_point({"a": (16, 16), "b": (8, 8), "c": (4, 4)}) == "b"
    assert explain.default_end_point({}) is None


# Grad-CAM where the answer is known ------------------------------------------------------------

def discs(n, size=32, radius=4, seed=0):
    """n noisy images; the odd ones hold a bright disc off the centre, at a random place: the
    disc alone decides the class. Returns (x [n, size, size, 1], labels, centres [n, 2])."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    x = 0.4 + 0.1 * rng.standard_normal((n, size, size))
    centres = np.zeros((n, 2), int)
    for i in range(n):
        centre = rng.integers(radius + 1, size - radius - 1, size=2)
        while np.hypot(*(centre - size / 2)) <= 6:
            centre = rng.integers(radius + 1, size - radius - 1, size=2)
        centres[i] = centre
        if labels[i]:
            x[i][(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2] = 0.9
    return np.clip(x, 0, 1).astype(np.float32)[..., None], labels, centres


@pytest.fixture(scope="module")
def disc_model():
    """LeNet-5 trained on 32x32 discs for 200 steps, as a Predictor (its graph as build makes
    it, end points recorded)."""
    x, labels, _ = discs(400)
    y = np.eye(2, dtype=np.float32)[labels]
    graph = tf.Graph()
    with graph.as_default():
        model = model_lib.build(nets.get("lenet5"), (32, 32, 1), 2, seed=0)
        session = v1.Session(graph=graph)
        session.run(v1.global_variables_initializer())
        plan = batches.plan_for(labels, 32, 0)
        for step in range(200):
            bx, by = batches.make_batch(x, y, step, plan)
            session.run(model.train_op, {model.images: bx, model.labels: by,
                                         model.is_training: True})
    with Predictor(graph, session, model.images, model.probabilities, "discs") as predictor:
        yield predictor


def test_grad_cam_of_the_positive_class_is_highest_on_the_disc(disc_model):
    x, labels, centres = discs(60, seed=1)
    assert (disc_model.predict(x).argmax(axis=1) == labels).mean() > 0.95
    cam = explain.GradCam(disc_model)
    assert cam.end_point == "conv2"  # 10x10, the last map of at least 8x8
    positive = labels == 1
    heat = cam.maps(x[positive], np.ones(positive.sum(), int))
    assert heat.shape == (30, 32, 32) and heat.min() >= 0 and heat.max() <= 1
    yy, xx = np.mgrid[:32, :32]
    inside, ratios = [], []
    for h, (r, c) in zip(heat, centres[positive]):
        disc = (yy - r) ** 2 + (xx - c) ** 2 <= 4 ** 2
        inside.append(disc.flat[h.argmax()])
        ratios.append(h[disc].mean() / max(h[~disc].mean(), 1e-9))
    assert np.mean(inside) >= 0.6, inside
    assert np.mean(np.array(ratios) > 3) >= 0.9, ratios


def test_grad_cam_places_a_valid_networks_cells_on_their_pixels(disc_model):
    # LeNet-5's conv2 on 32x32: 28 (conv1, VALID 5x5) -> 14 (pool) -> 10 (VALID 5x5): cell i
    # sees pixels 2i .. 2i + 13, centred on 2i + 6.5, not on 3.2i + 1.1 as a plain resize has it.
    (row_step, row_offset), (column_step, column_offset) = \
        explain.GradCam(disc_model, "conv2").placement()
    assert row_step == pytest.approx(2, abs=0.1) and column_step == pytest.approx(2, abs=0.1)
    assert row_offset == pytest.approx(6.5, abs=0.5)
    assert column_offset == pytest.approx(6.5, abs=0.5)


def test_grad_cam_of_a_same_padded_map_is_the_resized_map(tiny_run):
    with Predictor.from_checkpoint(tiny_run.checkpoint()) as predictor:
        cam = explain.GradCam(predictor)
        assert cam.end_point == "conv1"
        assert cam.placement() == ((1.0, 0.0), (1.0, 0.0))
        x = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
        heat = cam.maps(x, [0, 1, 2, 0])
        raw = predictor.session.run(cam.heat, {predictor.images: x, cam.classes: [0, 1, 2, 0]})
    peak = raw.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(heat, np.where(peak > 0, raw / np.maximum(peak, 1e-30), 0),
                               atol=1e-6)


# Galleries ---------------------------------------------------------------------------------------

PROBABILITIES = np.array([
    [0.9, 0.05, 0.05],   # 0: class 0, right, confident
    [0.5, 0.45, 0.05],   # 1: class 0, right, uncertain (margin 0.05)
    [0.2, 0.7, 0.1],     # 2: class 0, wrong (said 1 at 0.7)
    [0.1, 0.1, 0.8],     # 3: class 0, wrong (said 2 at 0.8)
    [0.6, 0.3, 0.1],     # 4: class 0, right (0.6)
    [0.1, 0.8, 0.1],     # 5: class 1, right
    [0.45, 0.5, 0.05],   # 6: class 1, right, uncertain (margin 0.05, tied with row 1's)
    [0.2, 0.2, 0.6],     # 7: class 2, right
])
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 2])


def test_galleries_pick_the_most_confident_right_and_wrong_and_the_most_uncertain():
    galleries = explain.select_galleries(LABELS, PROBABILITIES, k=2)
    rows = {(g["class"], g["kind"]): g["rows"] for g in galleries}
    assert [(g["class"], g["kind"]) for g in galleries] == [
        (c, kind) for c in range(3) for kind in explain.KINDS]
    assert rows[0, "confident_right"] == [0, 4]
    assert rows[0, "confident_wrong"] == [3, 2]
    assert rows[0, "uncertain"] == [1, 4]  # margins 0.05, 0.3, 0.5 (row 2), 0.7 (row 3)
    assert rows[1, "confident_right"] == [5, 6]
    assert rows[1, "confident_wrong"] == []
    assert rows[1, "uncertain"] == [6, 5]
    assert rows[2, "confident_right"] == [7] and rows[2, "confident_wrong"] == []


def test_galleries_break_ties_by_row():
    probabilities = np.array([[0.6, 0.4]] * 4)
    galleries = explain.select_galleries(np.zeros(4, int), probabilities, k=3)
    assert galleries[0]["rows"] == [0, 1, 2] and galleries[2]["rows"] == [0, 1, 2]


def test_cam_rows_are_evenly_spaced_through_each_class():
    labels = np.array([0, 1, 0, 0, 2, 0, 0, 1])
    assert explain.cam_rows(labels, 3, 3) == {0: [0, 3, 6], 1: [1, 7], 2: [4]}
    assert explain.cam_rows(labels, 4, 1) == {0: [0], 1: [1], 2: [4], 3: []}
    assert explain.cam_rows(labels, 3, 0) == {0: [], 1: [], 2: []}


def test_gallery_files_list_the_rows_shown(tmp_path):
    x = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float32)
    split = Split(x, np.eye(3)[LABELS], LABELS, tmp_path / "test.npz", {
        "patient_id": np.array([f"LIDC-IDRI-{i:04d}" for i in range(8)]),
        "slice_index": np.arange(8) * 10, "readers": np.array([4, 3, 2, 1, 4, 3, 2, 1])})
    names = ["a", "b", "c"]
    path = explain.write_galleries(split, PROBABILITIES, tmp_path, names, k=2)
    content = json.loads(path.read_text())
    galleries = {(g["class"], g["kind"]): g for g in content["galleries"]}
    wrong = galleries[0, "confident_wrong"]
    assert wrong["image"] == "gallery/class0_confident_wrong.png"
    assert (tmp_path / wrong["image"]).read_bytes()[:4] == b"\x89PNG"
    assert wrong["patches"][0] == {"row": 3, "patient_id": "LIDC-IDRI-0003", "slice_index": 30,
                                   "readers": 1, "class": 0, "label": "a", "predicted": 2,
                                   "predicted_label": "c", "probabilities": [0.1, 0.1, 0.8]}
    assert galleries[1, "confident_wrong"]["image"] is None
    # The flat table a report lists: every patch shown, with its image.
    assert len(content["rows"]) == sum(len(g["patches"]) for g in content["galleries"])
    assert {"image": "gallery/class0_confident_wrong.png", "gallery": wrong["title"], "row": 3,
            "patient_id": "LIDC-IDRI-0003", "slice_index": 30, "readers": 1, "label": "a",
            "predicted_label": "c", "probabilities": "0.100 0.100 0.800"} in content["rows"]
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == sorted(
        g["image"].split("/")[1] for g in content["galleries"] if g["image"])


def test_lung_grey_turns_the_training_window_into_the_lung_window():
    from lidc.windows import LUNG, TRAINING

    hu = np.array([[-1000.0, -600.0, 0.0, 150.0]])
    np.testing.assert_allclose(explain.lung_grey(TRAINING.to_unit(hu)), LUNG.to_unit(hu),
                               atol=1e-6)
