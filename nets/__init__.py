"""Hand-written TF1-style graph builders for 64x64 CT patches, and a registry of them by name.

Every builder has one signature (ARCHITECTURE.md):

  logits, end_points = build(images, num_classes, is_training, **options)

`images` is float32 NHWC (the batch size may be unknown), `is_training` a boolean scalar tensor
(e.g. `tf.compat.v1.placeholder_with_default(False, [])`), `logits` are before softmax and
`end_points` a dict of named intermediate tensors; every network has 'features' (the input of its
logits layer) and 'logits'. `is_training` may also be a Python bool, which builds one mode only,
without the `tf.cond`s of batch norm and dropout. Batch-norm moving averages are updated by the
ops in `tf.compat.v1.GraphKeys.UPDATE_OPS`. Each builder's `default_image_size` is the input side it
is written for (64). To share a network's variables with an earlier build, build it again inside
`tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True)`. Choices that concern
every layer (batch norm folded for inference, weight decay) are made by an `arg_scope` around the
builder's call (`nets.layers`). This package imports TensorFlow only, never files.

The modules: one per network (`lenet5`, `alexnet`, `vgg16`, `resnet_v1`), the layers they share
(`layers`), the scoped settings of those layers (`scoping`), the faster CPU forms of a convolution
and a matmul (`fast_ops`), the forward cost (`flops`) and batch norm folded for inference
(`folding`).

Trainable parameters for 64x64x1 inputs and 3 classes, and forward cost per image:

  lenet5       337,591    0.005 GFLOPs
  alexnet   37,289,667    0.783 GFLOPs
  vgg16     39,899,843    2.546 GFLOPs
  resnet50  23,507,907    0.617 GFLOPs
  resnet101 42,500,035    1.223 GFLOPs
  resnet152 58,143,683    1.829 GFLOPs

Usage:
  import nets
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    logits, end_points = nets.get('resnet50')(images, 3, is_training)
    print(nets.count_params(), nets.forward_flops())  # 23507907 616706048
"""
import tensorflow as tf

# The modules, not their builders, are the package's attributes (as in slim's nets_factory), so
# `from nets import resnet_v1` is the module and `nets.get('resnet50')` the builder.
from nets import alexnet, fast_ops, flops, folding, layers, lenet5, resnet_v1, scoping, vgg16
from nets.flops import forward_flops

NETWORKS = {
    "lenet5": lenet5.lenet5,
    "alexnet": alexnet.alexnet,
    "vgg16": vgg16.vgg16,
    "resnet50": resnet_v1.resnet50,
    "resnet101": resnet_v1.resnet101,
    "resnet152": resnet_v1.resnet152,
}

DISPLAY_NAMES = {
    "lenet5": "LeNet-5",
    "alexnet": "AlexNet",
    "vgg16": "VGG-16",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "resnet152": "ResNet-152",
}


def get(name):
    """The builder registered under `name`.

    Raises:
      ValueError: the name is not registered; the message lists the known names.
    """
    if name not in NETWORKS:
        raise ValueError("unknown network %r; known: %s" % (name, ", ".join(sorted(NETWORKS))))
    return NETWORKS[name]


def count_params(graph_or_vars=None):
    """The number of trainable parameters.

    Args:
      graph_or_vars: a tf.Graph (its trainable variables), a list of variables, or None for the
        default graph.

    Returns:
      An int.
    """
    if graph_or_vars is None:
        graph_or_vars = tf.compat.v1.get_default_graph()
    if isinstance(graph_or_vars, tf.Graph):
        graph_or_vars = graph_or_vars.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
    return sum(variable.shape.num_elements() for variable in graph_or_vars)


__all__ = ["NETWORKS", "DISPLAY_NAMES", "get", "count_params", "forward_flops"]
