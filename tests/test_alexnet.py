"""Tests of nets.alexnet, in the manner of TF-slim's alexnet_test.py; runs a tiny variant (fc6 and
fc7 of 8 units, 32x32 inputs)."""
from nets import alexnet
from tests.nets_helpers import (NUM_CLASSES, built, check_modes, output_shapes, static_shapes,
                                variable_names)

TINY_SIZE = 32


def tiny_alexnet(images, is_training):
    return alexnet.alexnet(images, NUM_CLASSES, is_training, scope="tiny", fc_depth=8)


def test_end_points():
    _, logits, end_points = built("alexnet")
    # 64 -conv1/2-> 32 -pool-> 16 -pool-> 8 -pool-> 4
    assert static_shapes(end_points) == {
        "conv1": [None, 32, 32, 96], "pool1": [None, 16, 16, 96],
        "conv2": [None, 16, 16, 256], "pool2": [None, 8, 8, 256],
        "conv3": [None, 8, 8, 384], "conv4": [None, 8, 8, 384],
        "conv5": [None, 8, 8, 256], "pool5": [None, 4, 4, 256],
        "fc6": [None, 4096], "fc7": [None, 4096], "features": [None, 4096],
        "logits": [None, NUM_CLASSES]}
    assert end_points["features"] is end_points["fc7"] and end_points["logits"] is logits


def test_model_variables():
    names, trainable = variable_names(tiny_alexnet, TINY_SIZE)
    layers = ["conv%d" % n for n in range(1, 6)] + ["fc6", "fc7", "logits"]
    assert names == trainable == {"tiny/%s/%s" % (layer, kind) for layer in layers
                                  for kind in ("weights", "biases")}


def test_forward_drops_units_in_training_only():
    check_modes(tiny_alexnet, TINY_SIZE, batch_norms=0, dropout=True)


def test_unknown_batch_size():
    static, shapes = output_shapes(tiny_alexnet, TINY_SIZE)
    assert static == [None, NUM_CLASSES]
    assert shapes == [(1, NUM_CLASSES), (3, NUM_CLASSES)]


def test_default_image_size():
    assert alexnet.alexnet.default_image_size == 64
