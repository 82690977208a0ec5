"""Shared inputs and runs of the network tests (test_nets.py, test_layers.py, test_lenet5.py, ...).

As in TF-slim's *_test.py: a helper makes the test input, every test builds in a fresh graph, and
sessions only run tiny variants on batches of a few images; the registered full-size networks are
built as graphs, once each, and never run. Not tests themselves.
"""
import functools

import numpy as np
import tensorflow as tf

import nets

NUM_CLASSES = 3


def make_inputs(batch=None, size=64, channels=1):
    """A float32 NHWC image placeholder and the trainer's is_training switch (default False)."""
    images = tf.compat.v1.placeholder(tf.float32, [batch, size, size, channels], name="images")
    is_training = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
    return images, is_training


def random_images(batch, size=64, channels=1, seed=0):
    """A fixed batch of float32 NHWC images in [0, 1)."""
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


def static_shapes(end_points):
    """{name: static shape as a list} of a dict of tensors."""
    return {name: tensor.shape.as_list() for name, tensor in end_points.items()}


def variable_names(builder, size):
    """(names of all variables, names of the trainable ones) of `builder` built on size x size."""
    with tf.Graph().as_default():
        builder(*make_inputs(size=size))
        return ({v.op.name for v in tf.compat.v1.global_variables()},
                {v.op.name for v in tf.compat.v1.trainable_variables()})


def run_modes(builder, size, batch=2):
    """Runs `builder`, built on [None, size, size, 1] in a fresh seeded graph, on a fixed batch.

    Returns:
      (inference logits, the same run again, training logits, moving averages before, moving
      averages after the training run), where the training run also runs the batch-norm update
      ops; the averages are one array per MOVING_AVERAGE_VARIABLES variable.
    """
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        images, is_training = make_inputs(size=size)
        logits, _ = builder(images, is_training)
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        averages = tf.compat.v1.moving_average_variables()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            feed = {images: random_images(batch, size)}
            inference = session.run(logits, feed)
            again = session.run(logits, feed)
            before = session.run(averages)
            training, _ = session.run([logits, updates], {**feed, is_training: True})
            after = session.run(averages)
    return inference, again, training, before, after


def check_modes(builder, size, batch_norms, dropout):
    """Runs `builder` in both modes (run_modes) and checks what is_training changes.

    Inference gives finite [2, NUM_CLASSES] logits, the same twice, and leaves the moving averages
    as they were; training gives other logits if the network has batch norm or dropout (else the
    very same ones), and moves every one of the 2 x `batch_norms` moving averages.
    """
    inference, again, training, before, after = run_modes(builder, size)
    assert inference.shape == training.shape == (2, NUM_CLASSES)
    assert np.isfinite(inference).all() and np.isfinite(training).all()
    assert np.abs(inference).max() > 0  # the comparisons below are not of zeros
    np.testing.assert_array_equal(again, inference)
    assert len(before) == len(after) == 2 * batch_norms
    for initial, trained in zip(before, after):
        assert not np.allclose(initial, trained)
    if batch_norms or dropout:
        assert not np.allclose(training, inference)
    else:
        np.testing.assert_array_equal(training, inference)


def output_shapes(builder, size, batches=(1, 3)):
    """The static logits shape of `builder` built with unknown batch size, and the shapes of the
    logits it gives for batches of each size in `batches`, all run through that one graph."""
    with tf.Graph().as_default():
        images, is_training = make_inputs(size=size)
        logits, _ = builder(images, is_training)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            shapes = [session.run(logits, {images: random_images(batch, size)}).shape
                      for batch in batches]
    return logits.shape.as_list(), shapes
