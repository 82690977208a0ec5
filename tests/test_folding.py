"""Tests of batch norm folded for inference: the scope setting that builds the folded form
(nets.layers, fold_batch_norm) and the values that go with it (nets.folding)."""
import numpy as np
import pytest
import tensorflow as tf

from nets import folding, layers
from tests.nets_helpers import make_inputs, random_images
from tests.test_resnet_v1 import TINY_SIZE, tiny_resnet


def random_values(variables, seed=0):
    """A value for each variable, batch-norm statistics far from their initial 0 and 1."""
    rng = np.random.RandomState(seed)
    values = {}
    for v in variables:
        shape, name = v.shape.as_list(), v.op.name
        if name.endswith("moving_variance"):
            values[name] = rng.uniform(0.2, 3.0, shape)
        elif name.endswith(("moving_mean", "beta")):
            values[name] = rng.normal(0.0, 0.5, shape)
        elif name.endswith("gamma"):
            values[name] = rng.uniform(0.5, 2.0, shape)
        else:
            values[name] = rng.normal(0.0, 0.3, shape)
    return {name: value.astype(np.float32) for name, value in values.items()}


def logits_of(values, batch, fold):
    """The tiny ResNet's inference logits of `batch` with `values`, built plain or folded."""
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=TINY_SIZE)
        if fold:
            with layers.arg_scope(layers.WITH_BATCH_NORM, fold_batch_norm=True):
                logits, _ = tiny_resnet(images, tf.constant(False))
        else:
            logits, _ = tiny_resnet(images, is_training)
        variables = tf.compat.v1.global_variables()
        if values is None:
            values = random_values(variables)
        with tf.compat.v1.Session() as sess:
            sess.run([v.initializer for v in variables],
                     {v.initial_value: values[v.op.name] for v in variables})
            return sess.run(logits, {images: batch}), values, {v.op.name for v in variables}


def test_folded_batch_norm_gives_the_logits_of_the_moving_averages_without_batch_norm():
    batch = random_images(4, size=TINY_SIZE)
    plain, values, _ = logits_of(None, batch, fold=False)
    folded_values = folding.fold_batch_norm(values)
    folded, _, names = logits_of(folded_values, batch, fold=True)
    assert names == set(folded_values)
    assert not [n for n in names if "/bn/" in n]
    assert "tiny/conv1/biases" in names and "tiny/block2/unit_2/bottleneck/conv3/biases" in names
    np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-4)
    assert np.abs(plain).max() > 0.1  # the comparison is not of zeros
    # The batch norms' values matter: folding with other statistics gives other logits.
    shifted = {k: v + 0.5 if k.endswith("moving_mean") else v for k, v in values.items()}
    other, _, _ = logits_of(folding.fold_batch_norm(shifted), batch, fold=True)
    assert not np.allclose(other, plain, atol=1e-2)


def test_fold_batch_norm_scales_the_weights_and_shifts_by_the_statistics():
    values = {"net/conv/weights": np.full([1, 1, 2, 2], 2.0, np.float32),
              "net/conv/bn/gamma": np.array([2.0, 3.0], np.float32),
              "net/conv/bn/beta": np.array([0.5, -1.0], np.float32),
              "net/conv/bn/moving_mean": np.array([4.0, 1.0], np.float32),
              "net/conv/bn/moving_variance": np.array([1.0, 9.0], np.float32),
              "net/logits/weights": np.ones([2, 3], np.float32)}
    folded = folding.fold_batch_norm(values, epsilon=0.0)
    assert set(folded) == {"net/conv/weights", "net/conv/biases", "net/logits/weights"}
    scale = np.array([2.0, 1.0])  # gamma / sqrt(variance), per output channel: 2 / 1, 3 / 3
    np.testing.assert_allclose(folded["net/conv/weights"], np.full([1, 1, 2, 2], 2.0) * scale)
    np.testing.assert_allclose(folded["net/conv/biases"], [0.5 - 4.0 * 2.0, -1.0 - 1.0 * 1.0])
    assert folded["net/logits/weights"] is values["net/logits/weights"]


def test_folded_batch_norm_refuses_a_training_graph():
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=TINY_SIZE)
        with layers.arg_scope(layers.WITH_BATCH_NORM, fold_batch_norm=True), \
                pytest.raises(ValueError, match="inference"):
            tiny_resnet(images, is_training)


def test_the_fold_ends_with_its_scope():
    with tf.Graph().as_default():
        images, _ = make_inputs(size=TINY_SIZE)
        with layers.arg_scope(layers.WITH_BATCH_NORM, fold_batch_norm=True):
            tiny_resnet(images, False)
        with tf.compat.v1.variable_scope("after"):
            tiny_resnet(images, False)
        names = [v.op.name for v in tf.compat.v1.global_variables()]
    assert not [n for n in names if n.startswith("tiny/") and "/bn/" in n]
    assert "after/tiny/conv1/bn/gamma" in names and "after/tiny/conv1/biases" not in names
