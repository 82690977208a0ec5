"""Tests of nets.fast_ops: each faster form gives what its plain TensorFlow counterpart gives,
gradients included, and runs the kernel it was written for."""
import numpy as np
import pytest
import tensorflow as tf

from nets import fast_ops


@pytest.mark.parametrize("size,kernel,stride,padding", [
    (6, 1, 1, "SAME"),   # 1x1: a matmul
    (7, 1, 2, "SAME"),   # 1x1 with a stride, odd map: subsample, then a matmul
    (7, 1, 2, "VALID"),
    (8, 1, 2, "SAME"),   # a stride that divides the map: a slice of the reshaped map
    (6, 1, 3, "VALID"),
    (2, 3, 1, "SAME"),   # a small map: a matmul of the shifted views
    (1, 3, 1, "SAME"),
    (2, 4, 1, "SAME"),   # an even kernel pads unevenly, as tf.nn.conv2d does
    (5, 3, 1, "SAME"),   # a larger map: tf.nn.conv2d itself
    (5, 3, 2, "VALID"),
])
def test_convolve_equals_conv2d_with_its_gradients(size, kernel, stride, padding):
    rng = np.random.RandomState(kernel * 10 + size)
    x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 3, 5)).astype(np.float32)
    with tf.Graph().as_default():
        inputs, weights = tf.constant(x), tf.constant(w)
        ours = fast_ops.convolve(inputs, weights, stride, padding)
        reference = tf.nn.conv2d(inputs, weights, strides=stride, padding=padding)
        assert ours.shape.as_list() == reference.shape.as_list()
        upstream = tf.constant(rng.normal(size=reference.shape.as_list()).astype(np.float32))
        grads = [tf.gradients(out, [inputs, weights], grad_ys=upstream)
                 for out in (ours, reference)]
        with tf.compat.v1.Session() as session:
            ours, reference, (ours_grads, reference_grads) = session.run(
                [ours, reference, grads])
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    for ours_grad, reference_grad in zip(ours_grads, reference_grads):
        np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,kernel,kinds", [
    (8, 1, {"MatMul"}),           # 1x1
    (2, 3, {"MatMul", "Pad"}),    # the shifted views of a small map
    (5, 3, {"Conv2D"}),
])
def test_convolve_runs_the_kernel_it_chose(size, kernel, kinds):
    with tf.Graph().as_default() as graph:
        fast_ops.convolve(tf.zeros([1, size, size, 3]), tf.zeros([kernel, kernel, 3, 5]))
        used = {op.type for op in graph.get_operations()}
    assert kinds <= used and ("Conv2D" in used) == ("Conv2D" in kinds)


def test_subsample_takes_every_stride_th_row_and_column():
    x = np.arange(2 * 6 * 6 * 3, dtype=np.float32).reshape(2, 6, 6, 3)
    with tf.Graph().as_default() as graph:
        outputs = [fast_ops.subsample(tf.constant(x), stride) for stride in (1, 2, 3, 4)]
        with tf.compat.v1.Session() as session:
            values = session.run(outputs)
        kinds = {op.type for op in graph.get_operations()}
    for stride, value in zip((1, 2, 3, 4), values):
        np.testing.assert_array_equal(value, x[:, ::stride, ::stride, :])
    assert "StridedSlice" in kinds  # only for 4, which does not divide 6


def test_matmul_has_the_gradients_of_tf_matmul_through_a_batch_matmul():
    rng = np.random.RandomState(3)
    a = rng.normal(size=(6, 4)).astype(np.float32)
    w = rng.normal(size=(4, 5)).astype(np.float32)
    upstream = rng.normal(size=(6, 5)).astype(np.float32)
    with tf.Graph().as_default() as graph:
        inputs, weights = tf.constant(a), tf.constant(w)
        outputs = [fast_ops.matmul(inputs, weights), tf.matmul(inputs, weights)]
        ours, reference = [tf.gradients(out, [inputs, weights], grad_ys=upstream)
                           for out in outputs]
        with tf.compat.v1.Session() as session:
            values = session.run([outputs, ours, reference])
        kinds = {op.type for op in graph.get_operations()}
    (ours_out, reference_out), ours_grads, reference_grads = values
    np.testing.assert_allclose(ours_out, reference_out, rtol=1e-6)
    for ours_grad, reference_grad in zip(ours_grads, reference_grads):
        np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-5, atol=1e-5)
    assert "BatchMatMulV2" in kinds  # the inputs' gradient, oneDNN's faster kernel
