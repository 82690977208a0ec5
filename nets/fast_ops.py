"""Faster CPU forms of a convolution, a matrix product and a subsampling: same sums, other kernels.

Why they exist: on the CPU, TensorFlow's oneDNN kernels run some of the shapes that 64x64 inputs
give much slower than the same arithmetic as a plain float32 matrix product. Convolutions,
above all their backward passes, reach about half of the matmul rate, and a tenth of it on the
2x2 maps of ResNet's last stage; the usual gradient of a matmul with respect to its inputs (a
MatMul with `transpose_b`) is slower than a BatchMatMulV2 of the same shapes; and the generic
strided-slice kernel and its gradient are many times slower than a `tf.slice`, whose gradient is a
single pad. Each function here is written so that the faster kernel does the work, and gives what
its plain TensorFlow counterpart gives, gradients included (tests/test_fast_ops.py; in bfloat16
and float16 too, tests/test_precision.py). The
measurements behind each choice, what each gave a ResNet-50 training step, and the forms tried and
dropped are in bench/README.md ("What changed, and what each change gave"). On a GPU they are
cuBLAS products and copies as well; they were not measured there.

Usage:
  outputs = fast_ops.convolve(inputs, weights, stride=2, padding='SAME')  # as tf.nn.conv2d
"""
import tensorflow as tf

# Maps of at most this many pixels are convolved as a matmul of their shifted views (ResNet's
# last stage on 64x64 images works on 2x2 maps). On 4x4 maps the views' copies cost more than the
# faster product saves.
SMALL_MAP = 4


def convolve(inputs, weights, stride=1, padding="SAME"):
    """`tf.nn.conv2d(inputs, weights, stride, padding)`, as one matrix product where that is faster.

    A 1x1 convolution becomes a subsampling (its stride) and a matmul of [pixels, channels] by
    [channels, depth]; a stride-1 SAME convolution on a map of at most SMALL_MAP pixels, a matmul
    of its k*k shifted views by the [k*k*channels, depth] kernel. Every other convolution is
    tf.nn.conv2d itself.

    Args:
      inputs: float tensor [batch, height, width, channels], NHWC.
      weights: float tensor [k, k, channels, depth], of the inputs' type.
      stride: step in both spatial directions.
      padding: 'SAME' or 'VALID'.

    Returns:
      [batch, height', width', depth], as tf.nn.conv2d.
    """
    size = int(weights.shape[0])
    height, width = inputs.shape[1], inputs.shape[2]
    if size == 1:
        return _pixelwise_matmul(subsample(inputs, stride), weights)
    if (stride == 1 and padding == "SAME" and height is not None and width is not None
            and height * width <= SMALL_MAP):
        return _pixelwise_matmul(_shifted_views(inputs, size), weights)
    return tf.nn.conv2d(inputs, weights, strides=stride, padding=padding)


def subsample(inputs, stride):
    """Every `stride`-th row and column of NHWC inputs from the first: what a 1x1 convolution with
    that stride sees, under SAME or VALID padding alike.

    Where the stride divides the map, the rows and columns are a `tf.slice` of the inputs reshaped
    to [batch, h / s, s, w / s, s * c], whose gradient is a pad; strided slicing, the generic form
    kept for the other maps, has a much slower kernel and gradient.

    Args:
      inputs: tensor [batch, height, width, channels]; channels must be known.
      stride: the step, 1 for the inputs themselves.

    Returns:
      [batch, ceil(height / stride), ceil(width / stride), channels].
    """
    if stride == 1:
        return inputs
    height, width, channels = inputs.shape[1], inputs.shape[2], int(inputs.shape[3])
    if height is None or width is None or height % stride or width % stride:
        return inputs[:, ::stride, ::stride, :]
    rows, columns = height // stride, width // stride
    grid = tf.reshape(inputs, [-1, rows, stride, columns, stride * channels])
    firsts = tf.slice(grid, [0, 0, 0, 0, 0], [-1, -1, 1, -1, channels])
    return tf.reshape(firsts, [-1, rows, columns, channels])


@tf.custom_gradient
def matmul(inputs, weights):
    """`tf.matmul(inputs, weights)` of 2-D tensors, whose gradient with respect to the inputs runs
    as a BatchMatMulV2 of the output's gradient by the weights' adjoint.

    The usual gradient is a MatMul with transpose_b, which the CPU kernels run markedly slower than
    the untransposed product on ResNet-50's 1x1 shapes; the weights' gradient (transpose_a) keeps
    the MatMul, which is as fast as the forward product.

    Args:
      inputs: float tensor [rows, features].
      weights: float tensor [features, units].

    Returns:
      [rows, units], with the gradients of tf.matmul.
    """
    def gradient(outputs_gradient):
        return (tf.raw_ops.BatchMatMulV2(x=outputs_gradient, y=weights, adj_y=True),
                tf.matmul(inputs, outputs_gradient, transpose_a=True))
    return tf.matmul(inputs, weights), gradient


def _pixelwise_matmul(inputs, weights):
    """[batch, h, w, c] x [.., .., c', depth] -> [batch, h, w, depth], where c = the product of the
    weights' first three dimensions: every pixel's vector times the same matrix."""
    height, width, channels = (int(d) for d in inputs.shape[1:])
    depth = int(weights.shape[-1])
    outputs = matmul(tf.reshape(inputs, [-1, channels]), tf.reshape(weights, [channels, depth]))
    return tf.reshape(outputs, [-1, height, width, depth])


def _shifted_views(inputs, size):
    """The size x size neighbourhoods of a SAME, stride-1 convolution (zero padded), stacked on the
    channel axis in the weights' (row, column, channel) order: [batch, h, w, size * size * c].
    `tf.slice`, whose gradient is a single pad, rather than strided slicing, whose gradient kernel
    is several times slower."""
    height, width = int(inputs.shape[1]), int(inputs.shape[2])
    before = (size - 1) // 2
    after = size - 1 - before
    padded = tf.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]])
    views = [tf.slice(padded, [0, row, column, 0], [-1, height, width, -1])
             for row in range(size) for column in range(size)]
    return tf.concat(views, axis=3)
