"""Tests of training.keras_weights (`train --init-from`).

The proof: Keras' ResNet50 with random weights (no download), its batch norms given random
scales, shifts and convolution biases and then the statistics of a batch (so that a few channels'
variances are far below 1e-3, and every activation stays near 1), written to .h5 in the Keras 2
layout (that of the ImageNet files, written here with h5py) and in Keras 3's (`save_weights`), and
loaded into our ResNet-50: in inference both give the same stem, pooled features and logits, for
3-channel images, and for 1-channel ones (our stem's kernels summed over RGB, Keras fed the image
repeated on RGB; and Keras' own 1-channel ResNet50). Then the mapping's refusals, on small files
written without Keras, and a training run started from such a file: what it records, its resume.

Keras builds its two ResNet50s once per module (64x64, 3 and 1 channels), in a process of its own
(tests.keras_reference), and our ResNet-50 is built once per channel count; everything else is
small.
"""
import functools
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import types

import h5py
import numpy as np
import pytest
import tensorflow as tf

import nets
from lidc.errors import LidcError
from nets import resnet_v1
from tests import keras_reference
from tests.keras_reference import write_keras2
from tests.test_training_helpers import train_config, write_dataset
from tools import train as train_tool
from training import keras_weights, runner
from training.loop import Hooks
from training.rundir import RunDir

v1 = tf.compat.v1

BATCH_NORM = ("gamma", "beta", "moving_mean", "moving_variance")
SMALL_STAGES = [(8, 1, 1), (16, 1, 2)]


# Files without Keras ---------------------------------------------------------------------------

def keras_like_weights(stages, stem_depth=4, channels=3, classes=5, seed=0):
    """{(layer, weight): float32 array} named and shaped as Keras' ResNet with our `stages` would
    have them, with random values (positive variances)."""
    rng = np.random.default_rng(seed)
    convs, depth_in = {"conv1": (7, channels, stem_depth)}, stem_depth
    for stage, (depth, units, _) in enumerate(stages):
        for unit in range(1, units + 1):
            block = f"conv{stage + 2}_block{unit}"
            if unit == 1:
                convs[f"{block}_0"] = (1, depth_in, depth)
            convs.update({f"{block}_1": (1, depth_in, depth // 4),
                          f"{block}_2": (3, depth // 4, depth // 4),
                          f"{block}_3": (1, depth // 4, depth)})
            depth_in = depth
    weights = {}
    for prefix, (size, inputs, outputs) in convs.items():
        weights[(f"{prefix}_conv", "kernel")] = rng.normal(0, 0.1, (size, size, inputs, outputs))
        weights[(f"{prefix}_conv", "bias")] = rng.normal(0, 0.1, outputs)
        for kind, (low, high) in zip(BATCH_NORM, [(0.5, 1.5), (-0.1, 0.1), (-0.1, 0.1),
                                                  (0.5, 1.5)]):
            weights[(f"{prefix}_bn", kind)] = rng.uniform(low, high, outputs)
    if classes:
        weights[("predictions", "kernel")] = rng.normal(0, 0.1, (depth_in, classes))
        weights[("predictions", "bias")] = rng.normal(0, 0.1, classes)
    return {key: value.astype(np.float32) for key, value in weights.items()}


def small_resnet(images, num_classes, is_training):
    return resnet_v1.resnet_v1(images, num_classes, is_training, SMALL_STAGES, scope="small",
                               stem_depth=4)


@functools.lru_cache(maxsize=None)
def small_variables(channels=1, builder=small_resnet, num_classes=3):
    """The variables of `builder` built on 16x16 images of `channels` (in a graph of their own)."""
    with tf.Graph().as_default():
        builder(v1.placeholder(tf.float32, [None, 16, 16, channels]), num_classes, False)
        return tuple(v1.global_variables())


# Keras' ResNet50 and ours ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_resnets(tmp_path_factory):
    """Keras' ResNet50s made by tests.keras_reference in a process of its own: their files and
    their outputs on the batch x."""
    folder = tmp_path_factory.mktemp("keras")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "tests.keras_reference", str(folder)],
                          cwd=pathlib.Path(__file__).parent.parent, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(folder / "outputs.npz") as saved:
        outputs = dict(saved)
    found = {"x": outputs.pop("x"), "model": folder / "model.h5"}
    for channels in (3, 1):
        found[f"c{channels}"] = types.SimpleNamespace(
            outputs={name: outputs[f"c{channels}_{name}"] for name in keras_reference.OUTPUTS},
            files={(layout, top): keras_reference.file_path(folder, channels, layout, top)
                   for layout in ("keras2", "keras3") for top in (False, True)})
    return types.SimpleNamespace(**found)


@functools.lru_cache(maxsize=None)
def our_resnet50(channels):
    """Our ResNet-50 on 64x64 images of `channels`, as the trainer builds it (an is_training
    switch defaulting to False): (graph, images, end points, variables)."""
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, 64, 64, channels])
        is_training = v1.placeholder_with_default(False, [])
        _, end_points = resnet_v1.resnet50(images, 3, is_training)
        return graph, images, end_points, tuple(v1.global_variables())


def ours_from(path, channels, images):
    """Our ResNet-50 of `channels` started from `path`: (its stem, pool, features and logits of
    `images`, the Imported)."""
    graph, placeholder, end_points, variables = our_resnet50(channels)
    imported = keras_weights.import_weights(path, variables)
    with v1.Session(graph=graph) as session:
        session.run(v1.variables_initializer(variables))
        keras_weights.assign(session, variables, imported.values)
        outputs = session.run({k: end_points[k] for k in ("conv1", "pool1", "features",
                                                          "logits")}, {placeholder: images})
    return outputs, imported


def assert_close(ours, keras, relative):
    """|ours - keras| <= relative x the largest |keras| (float32 sums in other orders through 50
    layers: the difference grows stage by stage, from ~1e-6 at the stem to a few 1e-5 of the
    largest value at the features)."""
    assert ours.shape == keras.shape
    scale = np.abs(keras).max()
    assert 0.5 < scale < 100  # the comparison is of activations of ordinary size
    np.testing.assert_array_less(np.abs(ours - keras), relative * scale)


LOGITS = ("resnet50/logits/weights", "resnet50/logits/biases")


@pytest.mark.parametrize("layout", ["keras2", "keras3"])
@pytest.mark.parametrize("top", [False, True], ids=["notop", "top"])
def test_our_resnet50_gives_keras_outputs_for_3_channels(keras_resnets, layout, top):
    expected = keras_resnets.c3.outputs
    ours, imported = ours_from(keras_resnets.c3.files[(layout, top)], 3,
                               np.repeat(keras_resnets.x, 3, axis=3))
    # The stem's windows are Keras': a one-pixel shift would differ by the activations' size.
    assert_close(ours["conv1"], expected["conv1"], 1e-5)
    assert_close(ours["pool1"], expected["pool1"], 1e-5)
    assert_close(ours["features"], expected["features"], 1e-4)
    assert len(imported.loaded) == 267 - (0 if top else 2)
    if top:
        assert_close(ours["logits"], expected["logits"], 1e-4)
        assert imported.initial == ()
    else:
        assert imported.initial == LOGITS
        assert "the file has no classifier (Keras' include_top=False)" in imported.notes


def test_our_1_channel_resnet50_sums_the_stem_and_gives_keras_outputs_on_rgb(keras_resnets):
    expected = keras_resnets.c3.outputs  # of x repeated on RGB
    ours, imported = ours_from(keras_resnets.c3.files[("keras2", True)], 1, keras_resnets.x)
    for name in ("conv1", "pool1"):
        assert_close(ours[name], expected[name], 1e-5)
    assert_close(ours["features"], expected["features"], 1e-4)
    assert_close(ours["logits"], expected["logits"], 1e-4)
    assert any("stem kernels summed" in note for note in imported.notes)


@pytest.mark.parametrize("layout", ["keras2", "keras3"])
def test_keras_own_1_channel_resnet50_loads_as_it_is(keras_resnets, layout):
    expected = keras_resnets.c1.outputs
    ours, imported = ours_from(keras_resnets.c1.files[(layout, False)], 1, keras_resnets.x)
    assert_close(ours["features"], expected["features"], 1e-4)
    assert not any("stem" in note for note in imported.notes)


def test_every_layout_reads_the_same_weights(keras_resnets):
    files = keras_resnets.c3.files
    reference = keras_weights.read_h5(files[("keras2", True)])
    assert ("conv1_conv", "kernel") in reference and len(reference) == 320
    for path in (files[("keras3", True)], keras_resnets.model):
        read = keras_weights.read_h5(path)
        assert read.keys() == reference.keys(), path
        for key in read:
            np.testing.assert_array_equal(read[key], reference[key], err_msg=str(key))
    notop = keras_weights.read_h5(files[("keras3", False)])
    assert notop.keys() == reference.keys() - {("predictions", "kernel"), ("predictions", "bias")}


# The adaptations -------------------------------------------------------------------------------

def test_the_bias_and_the_epsilon_go_into_the_moving_averages_exactly():
    rng = np.random.default_rng(1)
    weights = {("conv1_conv", "kernel"): rng.normal(size=(7, 7, 3, 5)),
               ("conv1_conv", "bias"): rng.normal(size=5),
               ("conv1_bn", "gamma"): rng.uniform(0.5, 2, 5),
               ("conv1_bn", "beta"): rng.normal(size=5),
               ("conv1_bn", "moving_mean"): rng.normal(size=5),
               # Two variances below 0.00099, whose shifted values are below 0.
               ("conv1_bn", "moving_variance"): np.array([1e-6, 5e-4, 0.01, 1.0, 3.0])}
    ours, notes = keras_weights.network_values(weights, "f.h5")
    value = {name: array.astype(np.float64) for name, (array, _) in ours.items()}
    assert ours["conv1/bn/moving_mean"][1] == "conv1_bn/moving_mean"
    assert (value["conv1/bn/moving_variance"][:2] < 0).all()
    conv = rng.normal(size=(100, 5))  # convolution outputs without the bias
    keras = {k: weights[("conv1_bn", k)] for k in BATCH_NORM}
    expected = (keras["gamma"] * (conv + weights[("conv1_conv", "bias")] - keras["moving_mean"])
                / np.sqrt(keras["moving_variance"] + 1.001e-5) + keras["beta"])
    got = (value["conv1/bn/gamma"] * (conv - value["conv1/bn/moving_mean"])
           / np.sqrt(value["conv1/bn/moving_variance"] + nets.layers.BATCH_NORM_EPSILON)
           + value["conv1/bn/beta"])
    np.testing.assert_allclose(got, expected, rtol=2e-4)  # float32 rounding of tiny variances
    assert len(notes) == 2


def test_the_classifier_is_dropped_when_the_classes_differ_and_loaded_when_they_agree(tmp_path):
    for classes, loaded in ((5, False), (3, True)):
        path = write_keras2(tmp_path / f"c{classes}.h5", keras_like_weights(SMALL_STAGES,
                                                                             classes=classes))
        imported = keras_weights.import_weights(path, small_variables())
        assert ("small/logits/weights" in imported.values) is loaded
        assert bool(imported.initial) is not loaded
        assert any("classifier" in note for note in imported.notes) is not loaded


# Refusals --------------------------------------------------------------------------------------

def refused(tmp_path, weights, variables=None):
    """The message import_weights refuses a Keras 2 file of `weights` with."""
    path = write_keras2(tmp_path / "weights.h5", weights)
    with pytest.raises(LidcError) as error:
        keras_weights.import_weights(path, variables or small_variables())
    assert str(path) in str(error.value)
    return str(error.value)


def test_a_shape_mismatch_names_the_file_the_variables_and_both_shapes(tmp_path):
    weights = keras_like_weights(SMALL_STAGES)
    weights[("conv2_block1_2_conv", "kernel")] = np.zeros((3, 3, 2, 3), np.float32)
    assert refused(tmp_path, weights).endswith(
        "conv2_block1_2_conv/kernel has shape [3, 3, 2, 3], the network's "
        "small/block1/unit_1/bottleneck/conv2/weights [3, 3, 2, 2]")


def test_a_1_channel_stem_is_not_spread_over_3_channels(tmp_path):
    message = refused(tmp_path, keras_like_weights(SMALL_STAGES, channels=1),
                      small_variables(channels=3))
    assert "conv1_conv/kernel has shape [7, 7, 1, 4], the network's small/conv1/weights " \
           "[7, 7, 3, 4]" in message


def test_a_deeper_resnet_file_and_a_shallower_one_are_refused(tmp_path):
    deeper = keras_like_weights([(8, 2, 1), (16, 1, 2)])
    assert "the network small has no variable for conv2_block2_1_bn/beta" in refused(
        tmp_path, deeper)
    shallower = keras_like_weights([(8, 1, 1)], classes=0)
    assert "no weight for the network's small/block2/unit_1" in refused(tmp_path, shallower)


def test_a_network_that_is_not_a_resnet_is_refused(tmp_path):
    message = refused(tmp_path, keras_like_weights(SMALL_STAGES),
                      small_variables(builder=nets.get("lenet5")))
    assert "no weight for the network's lenet5/" in message
    assert "--init-from reads Keras' ResNet into our ResNets" in message


def test_layers_of_other_networks_and_keras_older_resnet50_are_refused(tmp_path):
    weights = keras_like_weights(SMALL_STAGES)
    message = refused(tmp_path, {**weights, ("dense_7", "kernel"): np.zeros((2, 2), np.float32)})
    assert "layer 'dense_7' is not one of Keras' ResNet" in message
    older = {("bn_conv1" if layer == "conv1_bn" else layer, weight): value
             for (layer, weight), value in weights.items()}
    assert "older keras_applications ResNet50's file" in refused(tmp_path, older)


def test_files_that_are_not_keras_weights_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    with pytest.raises(LidcError, match="not a readable HDF5 file"):
        keras_weights.read_h5(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(LidcError, match="not a Keras weights file"):
        keras_weights.read_h5(other)
    with pytest.raises(LidcError, match="missing.h5: no such weights file"):
        keras_weights.source_sha1(tmp_path / "missing.h5")


# A training run --------------------------------------------------------------------------------

def checkpoint_values(run_dir):
    reader = tf.train.load_checkpoint(str(RunDir(run_dir).ckpt))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_a_run_starts_from_the_file_and_its_resume_keeps_the_checkpoint(tmp_path, monkeypatch):
    write_dataset(tmp_path / "work")
    path = write_keras2(tmp_path / "imagenet.h5", keras_like_weights(SMALL_STAGES))
    # A learning rate too small to move a weight: the checkpoint holds the imported values.
    config = train_config(tmp_path, init_from=str(path), lr=1e-12, max_steps=10, eval_every=10)
    logs = []
    runner.run_training(config, builder=small_resnet, hooks=Hooks(log=logs.append))
    run = RunDir(tmp_path / "runs" / "tiny")
    saved = json.loads(run.config.read_text())
    assert saved["init_from"] == str(path)
    assert saved["init_from_sha1"] == hashlib.sha1(path.read_bytes()).hexdigest()
    expected = keras_weights.import_weights(path, small_variables()).values
    stored = checkpoint_values(run.root)
    for name in ("small/conv1/weights", "small/conv1/bn/gamma",
                 "small/block2/unit_1/bottleneck/shortcut/weights"):
        np.testing.assert_allclose(stored[name], expected[name], rtol=1e-6, err_msg=name)
    assert any("left at their initialisation: small/logits/weights, small/logits/biases" in line
               for line in logs)

    def never(*args):
        raise AssertionError("a resumed run imported the file again")

    monkeypatch.setattr(keras_weights, "import_weights", never)
    steps = []
    runner.run_training({**config, "max_steps": 20}, resume=True, builder=small_resnet,
                        hooks=Hooks(after_step=steps.append, log=lambda *a: None))
    assert steps[0] == 11 and steps[-1] == 20
    write_keras2(path, keras_like_weights(SMALL_STAGES, seed=1))  # another file, same path
    with pytest.raises(LidcError, match="cannot resume with other options.*--init-from-sha1"):
        runner.run_training({**config, "max_steps": 30}, resume=True, builder=small_resnet)


def test_train_takes_init_from():
    args = train_tool.build_parser().parse_args(["--net", "resnet50", "--init-from", "w.h5"])
    assert args.init_from == "w.h5"
    assert train_tool.build_parser().parse_args(["--net", "resnet50"]).init_from is None
