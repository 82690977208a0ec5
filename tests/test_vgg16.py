"""Tests of nets.vgg16, in the manner of TF-slim's vgg_test.py; runs tiny variants (two blocks of
4 and 8 channels, fc6 and fc7 of 8 units, 16x16 inputs), with and without batch norm."""
import pytest
import tensorflow as tf

from nets import vgg16
from tests.nets_helpers import (NUM_CLASSES, built, check_modes, output_shapes, static_shapes,
                                variable_names)

TINY_BLOCKS = [(1, 4), (2, 8)]
TINY_SIZE = 16


def tiny_vgg(images, is_training):
    return vgg16.vgg16(images, NUM_CLASSES, is_training, scope="tiny", fc_depth=8,
                       blocks=TINY_BLOCKS)


def tiny_vgg_bn(images, is_training):
    return vgg16.vgg16_bn(images, NUM_CLASSES, is_training, scope="tiny", fc_depth=8,
                          blocks=TINY_BLOCKS)


def test_end_points():
    _, logits, end_points = built("vgg16")
    expected = {"fc6": [None, 4096], "fc7": [None, 4096], "features": [None, 4096],
                "logits": [None, NUM_CLASSES]}
    size = 64
    for block, depth in enumerate((64, 128, 256, 512, 512), start=1):
        expected["conv%d" % block] = [None, size, size, depth]
        size //= 2
        expected["pool%d" % block] = [None, size, size, depth]
    assert static_shapes(end_points) == expected
    assert end_points["features"] is end_points["fc7"] and end_points["logits"] is logits


def test_end_points_with_batch_norm_are_the_same():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
        _, end_points = vgg16.vgg16_bn(images, NUM_CLASSES, False)
    assert static_shapes(end_points) == static_shapes(built("vgg16")[2])


TINY_CONVOLUTIONS = ["tiny/conv1/conv1_1", "tiny/conv2/conv2_1", "tiny/conv2/conv2_2"]
TINY_HEAD = {"tiny/%s/%s" % (layer, kind) for layer in ("fc6", "fc7", "logits")
             for kind in ("weights", "biases")}


def test_model_variables():
    names, trainable = variable_names(tiny_vgg, TINY_SIZE)
    assert names == trainable == TINY_HEAD | {
        "%s/%s" % (conv, kind) for conv in TINY_CONVOLUTIONS for kind in ("weights", "biases")}


def test_model_variables_with_batch_norm():
    names, trainable = variable_names(tiny_vgg_bn, TINY_SIZE)
    # No biases on the convolutions: each batch norm's beta is the bias.
    convolutions = {conv + "/weights" for conv in TINY_CONVOLUTIONS}
    gammas_betas = {"%s/bn/%s" % (conv, kind) for conv in TINY_CONVOLUTIONS
                    for kind in ("gamma", "beta")}
    averages = {"%s/bn/%s" % (conv, kind) for conv in TINY_CONVOLUTIONS
                for kind in ("moving_mean", "moving_variance")}
    assert trainable == TINY_HEAD | convolutions | gammas_betas
    assert names == trainable | averages


def test_forward_drops_units_in_training_only():
    check_modes(tiny_vgg, TINY_SIZE, batch_norms=0, dropout=True)


def test_forward_with_batch_norm_moves_the_averages_in_training_only():
    check_modes(tiny_vgg_bn, TINY_SIZE, batch_norms=len(TINY_CONVOLUTIONS), dropout=True)


@pytest.mark.parametrize("builder", [tiny_vgg, tiny_vgg_bn])
def test_unknown_batch_size(builder):
    static, shapes = output_shapes(builder, TINY_SIZE)
    assert static == [None, NUM_CLASSES]
    assert shapes == [(1, NUM_CLASSES), (3, NUM_CLASSES)]


def test_default_image_size():
    assert vgg16.vgg16.default_image_size == vgg16.vgg16_bn.default_image_size == 64
