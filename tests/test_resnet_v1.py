"""Tests of nets.resnet_v1, in the manner of TF-slim's resnet_v1_test.py; runs a tiny variant (a
4-channel stem and two stages of 8 and 16 channels, 32x32 inputs)."""
import numpy as np
import pytest
import tensorflow as tf

from nets import resnet_v1
from tests.nets_helpers import (NUM_CLASSES, built, check_modes, make_inputs, output_shapes,
                                random_images, static_shapes, variable_names)

TINY_STAGES = [(8, 1, 1), (16, 2, 2)]
TINY_SIZE = 32


def tiny_resnet(images, is_training):
    return resnet_v1.resnet_v1(images, NUM_CLASSES, is_training, TINY_STAGES, scope="tiny",
                               stem_depth=4)


def expected_end_points(stages, size=64):
    """{name: static shape} of a ResNet of `stages` on size x size inputs."""
    size //= 2
    expected = {"conv1": [None, size, size, 64]}
    size //= 2
    expected["pool1"] = [None, size, size, 64]
    for index, (depth, units, stride) in enumerate(stages):
        size //= stride
        block = "block%d" % (index + 1)
        expected[block] = [None, size, size, depth]
        for unit in range(units):
            expected["%s/unit_%d" % (block, unit + 1)] = [None, size, size, depth]
    expected.update({"pool": [None, 2048], "features": [None, 2048],
                     "logits": [None, NUM_CLASSES]})
    return expected


@pytest.mark.parametrize("name,stages", [("resnet50", resnet_v1.RESNET50),
                                         ("resnet101", resnet_v1.RESNET101),
                                         ("resnet152", resnet_v1.RESNET152)])
def test_end_points(name, stages):
    _, logits, end_points = built(name)
    assert static_shapes(end_points) == expected_end_points(stages)
    assert end_points["block4"] is end_points["block4/unit_3"]
    assert end_points["features"] is end_points["pool"] and end_points["logits"] is logits


def test_resnet50_end_points_as_in_the_paper():
    shapes = static_shapes(built("resnet50")[2])
    assert [shapes["block%d" % n] for n in range(1, 5)] == [
        [None, 16, 16, 256], [None, 8, 8, 512], [None, 4, 4, 1024], [None, 2, 2, 2048]]
    assert "block3/unit_6" in shapes and "block3/unit_7" not in shapes


def test_resnet50_batch_norm_collections():
    graph, _, _ = built("resnet50")
    batch_norms = 1 + 3 * 16 + 4  # stem, three per unit, four projections
    assert len(graph.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)) == 2 * batch_norms
    averages = graph.get_collection(tf.compat.v1.GraphKeys.MOVING_AVERAGE_VARIABLES)
    assert len(averages) == 2 * batch_norms
    trainable = {v.op.name for v in graph.get_collection(
        tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)}
    assert not trainable & {v.op.name for v in averages}


def conv_bn(scope):
    """The variables of a convolution followed by batch norm: (all, trainable)."""
    averages = {scope + "/bn/moving_mean", scope + "/bn/moving_variance"}
    trainable = {scope + "/weights", scope + "/bn/gamma", scope + "/bn/beta"}
    return trainable | averages, trainable


def test_model_variables():
    names, trainable = variable_names(tiny_resnet, TINY_SIZE)
    scopes = ["tiny/conv1"]
    for unit, convs in [("block1/unit_1", ("shortcut", "conv1", "conv2", "conv3")),
                        ("block2/unit_1", ("shortcut", "conv1", "conv2", "conv3")),
                        ("block2/unit_2", ("conv1", "conv2", "conv3"))]:
        scopes += ["tiny/%s/bottleneck/%s" % (unit, conv) for conv in convs]
    logits = {"tiny/logits/weights", "tiny/logits/biases"}
    assert names == logits.union(*(conv_bn(scope)[0] for scope in scopes))
    assert trainable == logits.union(*(conv_bn(scope)[1] for scope in scopes))


def test_forward_uses_batch_statistics_and_moves_the_averages_in_training_only():
    # Batch norms: the stem's, three in each of the 3 units, the 2 projections'.
    check_modes(tiny_resnet, TINY_SIZE, batch_norms=1 + 3 * 3 + 2, dropout=False)


def test_gradients_reach_every_variable():
    with tf.Graph().as_default():
        logits, _ = tiny_resnet(*make_inputs(size=TINY_SIZE))
        variables = tf.compat.v1.trainable_variables()
        gradients = tf.gradients(tf.reduce_sum(logits), variables)
        assert all(g is not None for g in gradients), [
            v.op.name for v, g in zip(variables, gradients) if g is None]


def test_unknown_batch_size():
    static, shapes = output_shapes(tiny_resnet, TINY_SIZE)
    assert static == [None, NUM_CLASSES]
    assert shapes == [(1, NUM_CLASSES), (3, NUM_CLASSES)]


def test_default_image_size():
    assert {builder.default_image_size for builder in (
        resnet_v1.resnet_v1, resnet_v1.resnet50, resnet_v1.resnet101, resnet_v1.resnet152)} == {64}


def test_the_stem_is_padded_as_slims_conv2d_same_and_keras_resnet():
    # 3 rows and columns of zeros before and after the image for the 7x7/2 convolution, 1 and 1
    # for the 3x3/2 pool (SAME would pad 2 and 3, 0 and 1: windows one pixel away).
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=TINY_SIZE)
        _, end_points = tiny_resnet(images, is_training)
        # The stem's kernel; its batch norm is still at mean 0, variance 1, gamma 1, beta 0.
        (weights,) = [v for v in tf.compat.v1.global_variables()
                      if v.op.name == "tiny/conv1/weights"]
        pad = tf.pad(images, [[0, 0], [3, 3], [3, 3], [0, 0]])
        conv1 = tf.nn.relu(tf.nn.conv2d(pad, weights, 2, "VALID") / tf.sqrt(1.0 + 1e-3))
        pool1 = tf.nn.max_pool2d(tf.pad(conv1, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID")
        same = tf.nn.relu(tf.nn.conv2d(images, weights, 2, "SAME") / tf.sqrt(1.0 + 1e-3))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            ours, expected, with_same = session.run(
                [[end_points["conv1"], end_points["pool1"]], [conv1, pool1], same],
                {images: random_images(2, TINY_SIZE)})
    for got, want in zip(ours, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(with_same - ours[0]).max() > 0.1
