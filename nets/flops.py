"""The forward cost of a network, counted from its layers' shapes when the graph is built.

Every convolution and dense layer of `nets.layers` records its multiply-adds for one image in the
graph collection MULTIPLY_ADDS, so the cost of a network is read without running it (as the FLOP
columns of the README and bench.roofline are). The count is the usual one: 2 x the multiply-adds
of the convolutions and dense layers; batch norm, ReLU, pooling and additions are left out.

Usage:
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
    nets.get('resnet50')(images, 3, False)
    gflops = flops.forward_flops() / 1e9  # 0.617
"""
import tensorflow as tf

# The graph collection holding one int64 constant per convolution or dense layer: its forward
# multiply-adds for one image.
MULTIPLY_ADDS = "multiply_adds"


def record_convolution(weights, outputs):
    """Records a convolution's multiply-adds: k * k * channels for each of its outputs.

    Args:
      weights: its kernel [k, k, channels, depth].
      outputs: its output [batch, height, width, depth]; nothing is recorded if height or width
        is unknown.
    """
    height, width = outputs.shape[1], outputs.shape[2]
    if height is not None and width is not None:
        kernel, _, channels, depth = weights.shape.as_list()
        record_multiply_adds(height * width * kernel * kernel * channels * depth)


def record_multiply_adds(count):
    """Adds a layer's forward multiply-adds for one image (an int) to MULTIPLY_ADDS."""
    tf.compat.v1.add_to_collection(
        MULTIPLY_ADDS, tf.constant(int(count), tf.int64, name="multiply_adds"))


def forward_flops(graph=None, scope=None):
    """The forward floating-point operations per image of the layers built in a graph.

    Args:
      graph: the graph; the default graph if None.
      scope: count only the layers whose names start with this scope (e.g. 'resnet50/'), for a
        graph holding more than one network.

    Returns:
      An int: 2 x the multiply-adds recorded.
    """
    graph = graph or tf.compat.v1.get_default_graph()
    counts = graph.get_collection(MULTIPLY_ADDS)
    if scope is not None:
        counts = [count for count in counts if count.name.startswith(scope)]
    return 2 * sum(int(tf.get_static_value(count)) for count in counts)
