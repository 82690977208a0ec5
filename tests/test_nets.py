"""Tests of the graph builders in nets/, in the manner of TF-slim's *_test.py.

Full-size networks are only built as graphs (never run); sessions run tiny variants on batches of
one or two, so the file stays fast.
"""
import functools
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import nets
from nets import flops, folding, layers, resnet50

NUM_CLASSES = 3
TINY_STAGES = [(8, 1, 1), (16, 2, 2)]


def make_inputs(batch=None, size=64, channels=1):
    """A float32 NHWC image placeholder and the trainer's is_training switch (default False)."""
    images = tf.compat.v1.placeholder(tf.float32, [batch, size, size, channels], name="images")
    is_training = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
    return images, is_training


def random_images(batch, size=64, channels=1, seed=0):
    return np.random.RandomState(seed).uniform(size=(batch, size, size, channels)).astype(
        np.float32)


@functools.lru_cache(maxsize=None)
def built(name):
    """(graph, logits, end_points) of a registered network on 64x64x1 with unknown batch size;
    built once per network, in its own graph, since the large ones take seconds."""
    with tf.Graph().as_default() as graph:
        images, is_training = make_inputs()
        logits, end_points = nets.get(name)(images, NUM_CLASSES, is_training)
    return graph, logits, end_points


def tiny_resnet(images, is_training):
    return resnet50.resnet_v1(images, NUM_CLASSES, is_training, TINY_STAGES, scope="tiny",
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
        images, is_training = make_inputs(size=32)
        if fold:
            with layers.folded_batch_norm():
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
    batch = random_images(4, size=32)
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


def test_folded_batch_norm_refuses_a_training_graph():
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=32)
        with layers.folded_batch_norm(), pytest.raises(ValueError, match="inference"):
            tiny_resnet(images, is_training)


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


def test_nets_import_tensorflow_only():
    forbidden = ["keras", "tf.layers", "compat.v1.layers", "tf.contrib", "tf.estimator", "lidc",
                 "open("]
    for path in (pathlib.Path(__file__).parent.parent / "nets").glob("*.py"):
        text = path.read_text()
        assert not [word for word in forbidden if word in text], path
