"""Tests of the graph builders in nets/, in the manner of TF-slim's *_test.py.

Full-size networks are only built as graphs (never run); sessions run tiny variants on batches of
one or two, so the file stays fast.
"""
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import nets
from nets import resnet_v1
from tests.nets_helpers import NUM_CLASSES, built, make_inputs, random_images

TINY_STAGES = [(8, 1, 1), (16, 2, 2)]


def tiny_resnet(images, is_training):
    return resnet_v1.resnet_v1(images, NUM_CLASSES, is_training, TINY_STAGES, scope="tiny",
                               stem_depth=4)


# Parameter counts from the architectures' arithmetic, independent of the graphs.

def conv_params(kernel, channels, depth, bias=False):
    return kernel * kernel * channels * depth + (depth if bias else 0)


def bn_params(channels):
    return 2 * channels  # gamma and beta; the moving averages are not trainable


def dense_params(features, units):
    return features * units + units


def resnet_params(units_per_stage, channels=1, classes=NUM_CLASSES):
    total = conv_params(7, channels, 64) + bn_params(64)
    depth_in = 64
    for depth, units in zip((256, 512, 1024, 2048), units_per_stage):
        bottleneck = depth // 4
        total += conv_params(1, depth_in, depth) + bn_params(depth)  # projection shortcut
        for _ in range(units):
            total += (conv_params(1, depth_in, bottleneck) + bn_params(bottleneck)
                      + conv_params(3, bottleneck, bottleneck) + bn_params(bottleneck)
                      + conv_params(1, bottleneck, depth) + bn_params(depth))
            depth_in = depth
    return total + dense_params(2048, classes)


def vgg16_params(channels=1, classes=NUM_CLASSES):
    widths = [channels, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(conv_params(3, a, b, bias=True) for a, b in zip(widths, widths[1:]))
    # 64 / 2**5 = 2: fc6 reads a 2x2x512 map.
    return convs + dense_params(2 * 2 * 512, 4096) + dense_params(4096, 4096) + dense_params(
        4096, classes)


def lenet5_params(channels=1, classes=NUM_CLASSES):
    # 64 -conv5-> 60 -pool-> 30 -conv5-> 26 -pool-> 13
    return (conv_params(5, channels, 6, bias=True) + conv_params(5, 6, 16, bias=True)
            + dense_params(13 * 13 * 16, 120) + dense_params(120, 84) + dense_params(84, classes))


def alexnet_params(channels=1, classes=NUM_CLASSES):
    convs = [(5, channels, 96), (5, 96, 256), (3, 256, 384), (3, 384, 384), (3, 384, 256)]
    # 64 -conv1/2-> 32 -pool-> 16 -pool-> 8 -pool-> 4
    return (sum(conv_params(k, a, b, bias=True) for k, a, b in convs)
            + dense_params(4 * 4 * 256, 4096) + dense_params(4096, 4096)
            + dense_params(4096, classes))


# The counts documented in the docstrings, and their arithmetic.
PARAMETERS = {
    "lenet5": (337_591, lenet5_params),
    "alexnet": (37_289_667, alexnet_params),
    "vgg16": (39_899_843, vgg16_params),
    "resnet50": (23_507_907, lambda: resnet_params((3, 4, 6, 3))),
    "resnet101": (42_500_035, lambda: resnet_params((3, 4, 23, 3))),
    "resnet152": (58_143_683, lambda: resnet_params((3, 8, 36, 3))),
}


def test_registry_has_display_names():
    assert set(nets.DISPLAY_NAMES) == set(nets.NETWORKS) == set(PARAMETERS)
    assert nets.DISPLAY_NAMES["resnet50"] == "ResNet-50"


def test_get_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="resnet50"):
        nets.get("resnet49")


@pytest.mark.parametrize("name", sorted(nets.NETWORKS))
def test_output_shape_with_unknown_batch(name):
    _, logits, end_points = built(name)
    assert logits.shape.as_list() == [None, NUM_CLASSES]
    assert end_points["logits"] is logits
    assert end_points["features"].shape.as_list()[0] is None


@pytest.mark.parametrize("name", sorted(nets.NETWORKS))
def test_default_image_size(name):
    assert nets.get(name).default_image_size == 64


@pytest.mark.parametrize("name", sorted(nets.NETWORKS))
def test_parameter_count(name):
    documented, arithmetic = PARAMETERS[name]
    assert arithmetic() == documented
    graph, _, _ = built(name)
    assert nets.count_params(graph) == documented


def test_resnet50_end_points():
    _, _, end_points = built("resnet50")
    expected = {
        "conv1": [None, 32, 32, 64],
        "pool1": [None, 16, 16, 64],
        "block1": [None, 16, 16, 256],
        "block2": [None, 8, 8, 512],
        "block3": [None, 4, 4, 1024],
        "block4": [None, 2, 2, 2048],
        "block3/unit_6": [None, 4, 4, 1024],
        "pool": [None, 2048],
        "logits": [None, NUM_CLASSES],
    }
    for name, shape in expected.items():
        assert end_points[name].shape.as_list() == shape, name
    assert "block3/unit_7" not in end_points


def test_resnet50_batch_norm_collections():
    graph, _, _ = built("resnet50")
    batch_norms = 1 + 3 * 16 + 4  # stem, three per unit, four projections
    assert len(graph.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)) == 2 * batch_norms
    averages = graph.get_collection(tf.compat.v1.GraphKeys.MOVING_AVERAGE_VARIABLES)
    assert len(averages) == 2 * batch_norms
    trainable = {v.op.name for v in graph.get_collection(
        tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)}
    assert not trainable & {v.op.name for v in averages}


def test_tiny_resnet_variable_names():
    with tf.Graph().as_default():
        tiny_resnet(*make_inputs(size=32))
        names = {v.op.name for v in tf.compat.v1.global_variables()}

    def conv_bn(scope):
        return {scope + "/weights"} | {scope + "/bn/" + v for v in
                                       ("gamma", "beta", "moving_mean", "moving_variance")}

    expected = conv_bn("tiny/conv1") | {"tiny/logits/weights", "tiny/logits/biases"}
    for unit, convs in [("block1/unit_1", ("shortcut", "conv1", "conv2", "conv3")),
                        ("block2/unit_1", ("shortcut", "conv1", "conv2", "conv3")),
                        ("block2/unit_2", ("conv1", "conv2", "conv3"))]:
        for conv in convs:
            expected |= conv_bn("tiny/%s/bottleneck/%s" % (unit, conv))
    assert names == expected


def test_tiny_resnet_training_and_inference_differ():
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=32)
        logits, _ = tiny_resnet(images, is_training)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            batch = random_images(2, size=32)
            inference = sess.run(logits, {images: batch})
            training = sess.run(logits, {images: batch, is_training: True})
            assert inference.shape == (2, NUM_CLASSES)
            assert np.allclose(inference, sess.run(logits, {images: batch}))
            assert not np.allclose(inference, training)


def test_tiny_resnet_gradients_reach_every_variable():
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=32)
        logits, _ = tiny_resnet(images, is_training)
        variables = tf.compat.v1.trainable_variables()
        gradients = tf.gradients(tf.reduce_sum(logits), variables)
        assert all(g is not None for g in gradients), [
            v.op.name for v, g in zip(variables, gradients) if g is None]


def test_a_second_build_in_a_reusing_scope_shares_the_variables():
    builder = nets.get("lenet5")
    batch = random_images(2)
    with tf.Graph().as_default():
        images, is_training = make_inputs()
        first, _ = builder(images, NUM_CLASSES, is_training)
        count = len(tf.compat.v1.global_variables())
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True):
            second, _ = builder(images, NUM_CLASSES, is_training)
        assert len(tf.compat.v1.global_variables()) == count
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            first, second = sess.run([first, second], {images: batch})
    np.testing.assert_array_equal(first, second)


def test_nets_import_tensorflow_only():
    forbidden = ["keras", "tf.layers", "compat.v1.layers", "tf.contrib", "tf.estimator", "lidc",
                 "open("]
    for path in (pathlib.Path(__file__).parent.parent / "nets").glob("*.py"):
        text = path.read_text()
        assert not [word for word in forbidden if word in text], path
