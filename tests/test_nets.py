"""Tests of the registry of networks (nets/__init__.py), of what every registered network shares
(the builder signature, unknown batch size, the parameter counts and costs the docstrings document)
and of the package's imports. Each network's own tests: test_lenet5.py, test_alexnet.py,
test_vgg16.py, test_resnet_v1.py.

Full-size networks are only built as graphs here, once each (tests/nets_helpers.built), never run.
"""
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import nets
from tests.nets_helpers import NUM_CLASSES, built, make_inputs, random_images


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


def test_registry_names_and_display_names():
    assert set(nets.DISPLAY_NAMES) == set(nets.NETWORKS) == set(PARAMETERS)
    assert nets.DISPLAY_NAMES == {
        "lenet5": "LeNet-5", "alexnet": "AlexNet", "vgg16": "VGG-16", "resnet50": "ResNet-50",
        "resnet101": "ResNet-101", "resnet152": "ResNet-152"}


def test_get_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="lenet5, resnet101, resnet152, resnet50, vgg16"):
        nets.get("resnet49")
    assert nets.get("vgg16") is nets.NETWORKS["vgg16"]


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


# Forward FLOPs per 64x64x1 image, as the docstrings and the README give them (GFLOPs, 3 places).
FLOPS = {"lenet5": 0.005, "alexnet": 0.783, "vgg16": 2.546, "resnet50": 0.617,
         "resnet101": 1.223, "resnet152": 1.829}


@pytest.mark.parametrize("name", sorted(nets.NETWORKS))
def test_forward_flops_as_documented(name):
    graph, _, _ = built(name)
    assert round(nets.forward_flops(graph) / 1e9, 3) == FLOPS[name]


def test_lenet5_forward_flops_from_the_architecture():
    # 64 -conv5-> 60 -pool-> 30 -conv5-> 26 -pool-> 13
    multiply_adds = (60 * 60 * 25 * 1 * 6 + 26 * 26 * 25 * 6 * 16
                     + 13 * 13 * 16 * 120 + 120 * 84 + 84 * NUM_CLASSES)
    assert nets.forward_flops(built("lenet5")[0]) == 2 * multiply_adds


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
