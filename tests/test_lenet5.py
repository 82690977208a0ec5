"""Tests of nets.lenet5, in the manner of TF-slim's lenet_test.py (LeNet-5 is small enough to be its
own tiny variant)."""
import tensorflow as tf

from nets import lenet5
from tests.nets_helpers import (NUM_CLASSES, check_modes, make_inputs, output_shapes,
                                static_shapes, variable_names)


def lenet(images, is_training):
    return lenet5.lenet5(images, NUM_CLASSES, is_training)


def test_end_points():
    with tf.Graph().as_default():
        logits, end_points = lenet(*make_inputs())
    assert static_shapes(end_points) == {
        "conv1": [None, 60, 60, 6], "pool1": [None, 30, 30, 6],
        "conv2": [None, 26, 26, 16], "pool2": [None, 13, 13, 16],
        "fc3": [None, 120], "fc4": [None, 84], "features": [None, 84],
        "logits": [None, NUM_CLASSES]}
    assert end_points["features"] is end_points["fc4"] and end_points["logits"] is logits


def test_model_variables():
    names, trainable = variable_names(lenet, size=64)
    assert names == trainable == {"lenet5/%s/%s" % (layer, kind)
                                  for layer in ("conv1", "conv2", "fc3", "fc4", "logits")
                                  for kind in ("weights", "biases")}


def test_forward_is_the_same_in_training_and_inference():
    check_modes(lenet, 64, batch_norms=0, dropout=False)


def test_unknown_batch_size():
    static, shapes = output_shapes(lenet, size=64)
    assert static == [None, NUM_CLASSES]
    assert shapes == [(1, NUM_CLASSES), (3, NUM_CLASSES)]


def test_default_image_size():
    assert lenet5.lenet5.default_image_size == 64
