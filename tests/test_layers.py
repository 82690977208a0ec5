"""Tests of nets.layers and nets.flops: batch norm, dropout, the convolution layers, weight decay
and the forward cost, each on a layer or two in a fresh graph."""
import numpy as np
import pytest
import tensorflow as tf

import nets
from nets import flops, layers
from tests.nets_helpers import NUM_CLASSES, make_inputs, random_images

REGULARIZATION_LOSSES = tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES


def batch_norm_graph():
    images = tf.compat.v1.placeholder(tf.float32, [None, 2, 2, 3])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    outputs = layers.batch_norm(images, is_training)
    return images, is_training, outputs


def test_batch_norm_training_uses_batch_statistics():
    batch = np.random.RandomState(1).normal(5.0, 2.0, (4, 2, 2, 3)).astype(np.float32)
    with tf.Graph().as_default():
        images, is_training, outputs = batch_norm_graph()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            training = sess.run(outputs, {images: batch, is_training: True})
            inference = sess.run(outputs, {images: batch})
    mean, variance = batch.mean(axis=(0, 1, 2)), batch.var(axis=(0, 1, 2))
    epsilon = layers.BATCH_NORM_EPSILON
    np.testing.assert_allclose(training, (batch - mean) / np.sqrt(variance + epsilon),
                               rtol=1e-4, atol=1e-4)
    # The moving averages start at mean 0, variance 1.
    np.testing.assert_allclose(inference, batch / np.sqrt(1.0 + epsilon), rtol=1e-5)


def test_moving_averages_move_only_in_training():
    batch = np.random.RandomState(2).normal(5.0, 2.0, (4, 2, 2, 3)).astype(np.float32)
    with tf.Graph().as_default():
        images, is_training, _ = batch_norm_graph()
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        averages = tf.compat.v1.moving_average_variables()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(update_ops, {images: batch})
            mean, variance = sess.run(averages)
            np.testing.assert_array_equal(mean, np.zeros(3))
            np.testing.assert_array_equal(variance, np.ones(3))
            sess.run(update_ops, {images: batch, is_training: True})
            mean, variance = sess.run(averages)
    step = 1.0 - layers.BATCH_NORM_DECAY
    np.testing.assert_allclose(mean, step * batch.mean(axis=(0, 1, 2)), rtol=1e-5)
    # The fused kernel hands the averages the unbiased batch variance.
    np.testing.assert_allclose(variance, 1.0 - step + step * batch.var(axis=(0, 1, 2), ddof=1),
                               rtol=1e-5)


def test_dropout_is_identity_at_inference():
    batch = np.random.RandomState(3).uniform(1.0, 2.0, (2, 100)).astype(np.float32)
    with tf.Graph().as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, [None, 100])
        is_training = tf.compat.v1.placeholder_with_default(False, [])
        outputs = layers.dropout(inputs, 0.5, is_training)
        with tf.compat.v1.Session() as sess:
            np.testing.assert_array_equal(sess.run(outputs, {inputs: batch}), batch)
            training = sess.run(outputs, {inputs: batch, is_training: True})
    dropped = training == 0
    assert 0 < dropped.sum() < batch.size
    np.testing.assert_allclose(training[~dropped], 2.0 * batch[~dropped], rtol=1e-6)


def dropout_masks(steps):
    """The training dropout masks at each global step, from a freshly built graph and session."""
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        step = tf.compat.v1.train.get_or_create_global_step()
        outputs = layers.dropout(tf.ones([1, 100]), 0.5, True)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            masks = []
            for value in steps:
                step.load(value, sess)
                masks.append(sess.run(outputs) > 0)
    return masks


def test_dropout_mask_is_a_function_of_the_step():
    first, second, again = dropout_masks([7, 8, 7])
    np.testing.assert_array_equal(first, again)
    assert (first != second).any()
    # A resumed run (new graph and session) draws the same mask at the same step.
    np.testing.assert_array_equal(dropout_masks([7])[0], first)


def test_the_convolution_layers_variables_and_activations():
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=4)
        outputs = [layers.conv_relu(images, 2, 3, scope="plain"),
                   layers.conv_bn(images, 2, 3, is_training, scope="normalised"),
                   layers.conv_bn_relu(images, 2, 3, is_training, stride=2, scope="both")]
        names = {v.op.name for v in tf.compat.v1.global_variables()}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            plain, normalised, both = sess.run(outputs, {images: random_images(2, size=4) - 0.5})
    batch_norm = {"gamma", "beta", "moving_mean", "moving_variance"}
    assert names == ({"plain/weights", "plain/biases"}
                     | {"%s/weights" % scope for scope in ("normalised", "both")}
                     | {"%s/bn/%s" % (scope, v) for scope in ("normalised", "both")
                        for v in batch_norm})
    assert plain.shape == normalised.shape == (2, 4, 4, 2) and both.shape == (2, 2, 2, 2)
    assert plain.min() >= 0 and both.min() >= 0 and normalised.min() < 0  # ReLU or not


def tiny_net(images, is_training):
    """A convolution with batch norm, one without, and a dense layer: one of each weighted layer."""
    net = layers.conv_bn_relu(images, 4, 3, is_training, scope="conv1")
    net = layers.conv_relu(net, 4, 3, scope="conv2")
    return layers.dense(layers.flatten(net), NUM_CLASSES, scope="logits")


WEIGHTS = ["conv1/weights", "conv2/weights", "logits/weights"]


def test_no_weight_decay_by_default():
    with tf.Graph().as_default() as graph:
        tiny_net(*make_inputs(size=4))
        assert graph.get_collection(REGULARIZATION_LOSSES) == []
        plain = [op.type for op in graph.get_operations()]
    with tf.Graph().as_default() as graph:
        with layers.arg_scope(layers.WITH_WEIGHTS, weight_decay=0.0):
            tiny_net(*make_inputs(size=4))
        assert graph.get_collection(REGULARIZATION_LOSSES) == []
        assert [op.type for op in graph.get_operations()] == plain  # the very same graph


def test_weight_decay_adds_the_l2_loss_of_each_weight_matrix():
    with tf.Graph().as_default() as graph:
        with layers.arg_scope(layers.WITH_WEIGHTS, weight_decay=1e-3):
            tiny_net(*make_inputs(size=4))
        losses = graph.get_collection(REGULARIZATION_LOSSES)
        weights = {v.op.name: v for v in tf.compat.v1.trainable_variables()}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            losses, weights = sess.run([losses, weights])
    # One loss per weight matrix, in the order the layers are built; none for biases or gamma.
    expected = [1e-3 * np.sum(np.square(weights[name])) / 2 for name in WEIGHTS]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert min(expected) > 1e-4  # not a comparison of zeros


def test_weight_decay_for_some_layers_only():
    with tf.Graph().as_default() as graph:
        with layers.arg_scope([layers.dense], weight_decay=1e-3):
            tiny_net(*make_inputs(size=4))
        losses = graph.get_collection(REGULARIZATION_LOSSES)
    assert [loss.op.name for loss in losses] == ["logits/weights/Regularizer/weight_decay"]


def test_weight_decay_below_zero_is_refused():
    with tf.Graph().as_default():
        with layers.arg_scope([layers.dense], weight_decay=-1e-4), \
                pytest.raises(ValueError, match="weight_decay"):
            layers.dense(tf.zeros([1, 2]), 3)


def test_the_trainers_total_loss_includes_the_weight_decay():
    from training import model as model_lib

    def builder(images, num_classes, is_training):
        logits = tiny_net(images, is_training)
        return logits, {"logits": logits}

    with tf.Graph().as_default():
        model = model_lib.build(builder, (4, 4, 1), NUM_CLASSES, seed=0,
                                loss=model_lib.Loss(weight_decay=1e-2))
        decay = tf.add_n(tf.compat.v1.losses.get_regularization_losses())
        feed = {model.images: random_images(2, size=4),
                model.labels: np.eye(NUM_CLASSES, dtype=np.float32)[[0, 2]]}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            total, loss, decay = sess.run([model.total_loss, model.loss, decay], feed)
    assert decay > 1e-3
    np.testing.assert_allclose(total, loss + decay, rtol=1e-6)


def test_forward_flops_of_a_tiny_net():
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=8)
        with tf.compat.v1.variable_scope("tiny"):
            net = layers.conv_bn_relu(images, 4, 3, is_training, scope="conv1")
            net = layers.max_pool(net, 2, 2)
            layers.dense(layers.flatten(net), NUM_CLASSES, scope="logits")
        conv = 8 * 8 * (3 * 3 * 1) * 4  # one multiply-add per output per kernel tap
        dense = (4 * 4 * 4) * NUM_CLASSES
        assert flops.forward_flops() == 2 * (conv + dense)
        assert nets.forward_flops(scope="tiny/logits") == 2 * dense
        assert nets.forward_flops(scope="other/") == 0
