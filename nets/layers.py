"""The layers every network here is built from, written with low-level TensorFlow ops.

Each layer makes its variables with `tf.compat.v1.get_variable` inside a
`tf.compat.v1.variable_scope` named after the layer, so checkpoints read like the architecture
(`resnet50/conv1/weights`, `resnet50/conv1/bn/gamma`, `resnet50/conv1/bn/moving_mean`). Images are
NHWC throughout, the layout the CPU kernels are fastest in. Convolutions and products go through
`nets.fast_ops` (the same sums on faster CPU kernels), and each convolution and dense layer records
its cost for `nets.flops.forward_flops`.

Batch normalisation (Ioffe and Szegedy, "Batch Normalization: Accelerating Deep Network Training
by Reducing Internal Covariate Shift", 2015, arXiv:1502.03167) uses the fused kernel. A boolean
`is_training` tensor chooses batch statistics (training) or the moving averages (inference); the
ops that update the moving averages are placed in `tf.compat.v1.GraphKeys.UPDATE_OPS` and change
them only when `is_training` is True, so the train op must run them:

  update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
  with tf.control_dependencies(update_ops):
    train_op = optimizer.minimize(loss)

Choices that concern a whole network are settings of its layers, made for the layers built in an
`arg_scope` (`nets.scoping`, after TF-slim's) rather than passed to every call:

  fold_batch_norm  (WITH_BATCH_NORM, default False) each batch norm is left out and its
                   convolution gets a bias: the inference form, whose values `nets.folding`
                   computes; only for graphs built with is_training False.
  weight_decay     (WITH_WEIGHTS, default 0.0) each weight matrix of a convolution or dense layer
                   adds weight_decay * tf.nn.l2_loss(weights) to
                   `tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES`; 0 adds nothing. Biases and
                   batch norm are not decayed. The losses are ops added while the network is
                   built, so the op-level seeds of the initialisers after them move: a run with
                   weight decay starts from other initial weights than the same seed without.
  dtype            (WITH_DTYPE, default tf.float32) the type the layer computes in: its inputs
                   are cast to it and its weights and biases requested in it. Alone, the
                   variables are made in that type (the export's inference form); inside
                   `precision(dtype)`, the mixed-precision training form, they are float32 and
                   cast on read. Batch norm's variables and statistics stay float32 either way.

Mixed precision (Micikevicius et al., "Mixed Precision Training", 2018, arXiv:1710.03740), the
TF1 way of the official ResNet's `_custom_dtype_getter`: `precision('bfloat16')` sets dtype for
every layer built inside and puts a custom getter on the variable scope that makes each requested
bfloat16 or float16 variable as float32 and hands the layer its cast, so the optimiser updates
float32 weights (small steps would vanish in 8 bits of mantissa) while the products run in the low
type. Within float32, `precision` adds nothing to the graph.

Usage:
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    with layers.arg_scope(layers.WITH_WEIGHTS, weight_decay=1e-4):
      net = layers.conv_bn_relu(images, 64, 3, is_training, scope='conv1')
      net = layers.max_pool(net, 2, 2)
      logits = layers.dense(layers.flatten(net), 3, scope='logits')
    decay = tf.add_n(tf.compat.v1.losses.get_regularization_losses())
"""
import contextlib
import zlib

import numpy as np
import tensorflow as tf

from nets import fast_ops, flops, scoping
from nets.scoping import arg_scope, current_arg_scope

# 0.99 rather than slim's 0.997: runs here are a few thousand steps on small data, and the averages
# must forget the random-init statistics within a few hundred steps to be usable for evaluation.
BATCH_NORM_DECAY = 0.99
BATCH_NORM_EPSILON = 1e-3
# The compute types `precision` accepts; float32 variables are cast to the other two on read.
PRECISIONS = ("float32", "bfloat16", "float16")


def he_initializer():
    """He et al. 2015 ("Delving Deep into Rectifiers") initialisation for layers followed by ReLU:
    truncated normal with variance 2 / fan_in."""
    return tf.compat.v1.variance_scaling_initializer(
        scale=2.0, mode="fan_in", distribution="truncated_normal")


def batch_norm(inputs, is_training, decay=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON,
               scope="bn"):
    """Batch normalisation of NHWC inputs with the fused kernel.

    Args:
      inputs: float32 tensor [batch, height, width, channels].
      is_training: boolean scalar tensor (or Python bool). True: normalise with the batch's
        statistics and let the update ops move the averages; False: normalise with the moving
        averages and leave them unchanged.
      decay: moving-average decay; each training step moves the averages by (1 - decay) of the way
        to the batch statistics.
      epsilon: added to the variance before its square root.
      scope: variable scope, holding trainable `gamma` and `beta` and the non-trainable
        `moving_mean` and `moving_variance` (also in MOVING_AVERAGE_VARIABLES).

    Returns:
      The normalised tensor, of the shape of `inputs`. Two update ops (mean, variance) are added
      to `tf.compat.v1.GraphKeys.UPDATE_OPS`.
    """
    with tf.compat.v1.variable_scope(scope):
        channels = int(inputs.shape[-1])
        gamma = tf.compat.v1.get_variable(
            "gamma", [channels], initializer=tf.compat.v1.ones_initializer())
        beta = tf.compat.v1.get_variable(
            "beta", [channels], initializer=tf.compat.v1.zeros_initializer())
        moving_mean = _moving_average_variable("moving_mean", channels, 0.0)
        moving_variance = _moving_average_variable("moving_variance", channels, 1.0)

        def with_batch_statistics():
            return tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=epsilon, data_format="NHWC", is_training=True)

        def with_moving_averages():
            return tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=epsilon,
                data_format="NHWC", is_training=False)

        outputs, mean, variance = _smart_cond(is_training, with_batch_statistics,
                                              with_moving_averages)
        # At inference the step is exactly zero (and mean, variance are the averages themselves),
        # so running the update ops outside training leaves the averages bit-for-bit unchanged.
        step = tf.cast(is_training, tf.float32) * (1.0 - decay)
        for average, value in ((moving_mean, mean), (moving_variance, variance)):
            update = average.assign_sub((average - value) * step, read_value=False)
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
        return outputs


@scoping.add_arg_scope(weight_decay=0.0, dtype=tf.float32)
def conv_relu(inputs, depth, kernel_size, stride=1, padding="SAME", scope="conv"):
    """Convolution with a bias, then ReLU: the unit of the networks without batch norm.

    Args:
      inputs: float32 tensor [batch, height, width, channels]; channels must be known.
      depth: number of output channels.
      kernel_size: side of the square kernel.
      stride: step in both spatial directions.
      padding: 'SAME' or 'VALID'.
      scope: variable scope, holding `weights` [k, k, channels, depth] and `biases` [depth].

    Returns:
      The output tensor [batch, height', width', depth], in the dtype setting's type.

    Settings (arg_scope): weight_decay, dtype.
    """
    with tf.compat.v1.variable_scope(scope):
        weights = _weights([kernel_size, kernel_size, int(inputs.shape[-1]), depth],
                           scoping.settings(conv_relu))
        return tf.nn.relu(_convolve(inputs, weights, stride, padding, use_bias=True))


@scoping.add_arg_scope(fold_batch_norm=False, weight_decay=0.0, dtype=tf.float32)
def conv_bn(inputs, depth, kernel_size, is_training, stride=1, scope="conv"):
    """Convolution (SAME padding, no bias), then batch norm: a residual branch's last unit.

    Args:
      inputs: float32 tensor [batch, height, width, channels]; channels must be known.
      depth: number of output channels.
      kernel_size: side of the square kernel.
      is_training: boolean scalar tensor, as for `batch_norm`.
      stride: step in both spatial directions.
      scope: variable scope, holding `weights` [k, k, channels, depth]; the batch norm's variables
        are under `scope/bn`.

    Returns:
      The output tensor [batch, height / stride, width / stride, depth].

    Settings (arg_scope): fold_batch_norm (then `scope` holds `weights` and `biases` and no batch
    norm), weight_decay, dtype.

    Raises:
      ValueError: fold_batch_norm is set and `is_training` is not the constant False.
    """
    with tf.compat.v1.variable_scope(scope):
        return _conv_bn(inputs, depth, kernel_size, is_training, stride,
                        scoping.settings(conv_bn))


@scoping.add_arg_scope(fold_batch_norm=False, weight_decay=0.0, dtype=tf.float32)
def conv_bn_relu(inputs, depth, kernel_size, is_training, stride=1, scope="conv"):
    """Convolution (SAME padding, no bias), then batch norm, then ReLU.

    Arguments, returns, settings and errors as for `conv_bn`.
    """
    with tf.compat.v1.variable_scope(scope):
        return tf.nn.relu(_conv_bn(inputs, depth, kernel_size, is_training, stride,
                                   scoping.settings(conv_bn_relu)))


@scoping.add_arg_scope(weight_decay=0.0, dtype=tf.float32)
def dense(inputs, units, scope="fc"):
    """A fully connected layer (no activation) of [batch, features] inputs.

    Args:
      inputs: float32 tensor [batch, features]; features must be known.
      units: number of outputs.
      scope: variable scope, holding `weights` [features, units] and `biases` [units].

    Returns:
      The tensor [batch, units], in the dtype setting's type.

    Settings (arg_scope): weight_decay, dtype.
    """
    with tf.compat.v1.variable_scope(scope):
        features = int(inputs.shape[-1])
        weights = _weights([features, units], scoping.settings(dense))
        biases = _biases(units, weights.dtype)
        flops.record_multiply_adds(features * units)
        inputs = tf.cast(inputs, weights.dtype.base_dtype)
        return tf.nn.bias_add(fast_ops.matmul(inputs, weights), biases)


# The layers that read each setting, to name in an arg_scope.
WITH_BATCH_NORM = (conv_bn, conv_bn_relu)
WITH_WEIGHTS = (conv_relu, conv_bn, conv_bn_relu, dense)
WITH_DTYPE = WITH_WEIGHTS


@contextlib.contextmanager
def precision(dtype):
    """Builds the layers inside in mixed precision: they compute in `dtype`, their variables
    are float32 and cast to `dtype` on read (see the module's docstring).

    Usage:
      with layers.precision('bfloat16'):
        logits, end_points = builder(images, num_classes, is_training)
      logits = tf.cast(logits, tf.float32)  # softmax and loss in float32

    Args:
      dtype: one of PRECISIONS, as a name or a tf.DType. float32 adds nothing to the graph.

    Raises:
      ValueError: another type.
    """
    dtype = tf.as_dtype(dtype)
    if dtype.name not in PRECISIONS:
        raise ValueError("precision must be one of %s, got %s" % (", ".join(PRECISIONS),
                                                                   dtype.name))
    if dtype == tf.float32:
        yield
        return
    scope = tf.compat.v1.get_variable_scope()
    # Re-entering the current scope keeps every variable's and op's name as it was.
    with arg_scope(WITH_DTYPE, dtype=dtype), tf.compat.v1.variable_scope(
            scope, custom_getter=float32_variables, auxiliary_name_scope=False):
        yield


def float32_variables(getter, *args, **kwargs):
    """A custom getter (tf.compat.v1.variable_scope's custom_getter) that makes every bfloat16 or
    float16 variable requested as a float32 one and returns its cast to the requested type; other
    requests pass through. The cast is named VARIABLE_cast, as in the official TF1 ResNet."""
    dtype = tf.as_dtype(kwargs.get("dtype") or tf.float32)
    if dtype not in (tf.bfloat16, tf.float16):
        return getter(*args, **kwargs)
    variable = getter(*args, **{**kwargs, "dtype": tf.float32})
    return tf.cast(variable, dtype, name=variable.op.name.rsplit("/", 1)[-1] + "_cast")


def dropout(inputs, rate, is_training, scope="dropout"):
    """Dropout (Srivastava et al. 2014) in training, the identity at inference.

    Args:
      inputs: any float tensor.
      rate: fraction of units set to zero in training (the others are scaled by 1 / (1 - rate)).
      is_training: boolean scalar tensor.
      scope: name scope.

    Returns:
      A tensor of the shape of `inputs`. When the graph has a global step, the mask is a function
      of (graph seed, layer name, step) only, so a run resumed from a checkpoint drops the same
      units as the uninterrupted run would have.
    """
    with tf.name_scope(scope) as name:
        return _smart_cond(is_training, lambda: _dropout_training(inputs, rate, name),
                           lambda: tf.identity(inputs))


def relu(inputs):
    """The rectified linear unit max(inputs, 0)."""
    return tf.nn.relu(inputs)


def max_pool(inputs, size, stride, padding="SAME", scope="pool"):
    """Max pooling of NHWC inputs over size x size windows."""
    return tf.nn.max_pool2d(inputs, size, stride, padding, name=scope)


def fixed_padding(inputs, kernel_size):
    """NHWC `inputs` padded with zeros for a kernel_size window as TF-slim's `conv2d_same`
    (resnet_utils) and Keras' ResNet pad them: (k - 1) // 2 rows and columns before the map and
    the rest after it, whatever its size and the stride; a VALID convolution or pool follows.

    TensorFlow's SAME pads what the stride leaves over, mostly after the map: a 7x7/2 convolution
    of a 64-pixel map is padded 2 before and 3 after where Keras' ResNet pads 3 and 3, so the
    windows sit one pixel apart. At stride 1 with an odd kernel the two agree. A separate pad, not
    the explicit paddings tf.nn.conv2d and tf.nn.max_pool2d take: their gradient kernels ran 6
    and 30 times slower on ResNet's stem (bench/README.md).

    Args:
      inputs: tensor [batch, height, width, channels].
      kernel_size: side of the square window.

    Returns:
      [batch, height + k - 1, width + k - 1, channels].
    """
    before = (kernel_size - 1) // 2
    after = kernel_size - 1 - before
    return tf.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]])


def conv_bn_relu_same(inputs, depth, kernel_size, is_training, stride=1, scope="conv"):
    """`conv_bn_relu` of the inputs padded by `fixed_padding`, convolved VALID: TF-slim's
    `conv2d_same`, and the stem of Keras' ResNet, whose ImageNet weights the training can start
    from. Same variables and output shape as `conv_bn_relu`; the windows differ only where the
    stride is above 1.

    Arguments, returns and errors as for `conv_bn`. Settings: those of `conv_bn_relu` (an
    arg_scope naming conv_bn_relu sets them here too).
    """
    settings = scoping.settings(conv_bn_relu)
    settings.padding = "VALID"
    with tf.compat.v1.variable_scope(scope):
        return tf.nn.relu(_conv_bn(fixed_padding(inputs, kernel_size), depth, kernel_size,
                                   is_training, stride, settings))


def global_avg_pool(inputs, scope="pool"):
    """The mean over height and width: [batch, height, width, channels] -> [batch, channels]."""
    return tf.reduce_mean(inputs, axis=[1, 2], name=scope)


def flatten(inputs, scope="flatten"):
    """[batch, d1, d2, ...] -> [batch, d1 * d2 * ...]; the trailing dimensions must be known."""
    return tf.reshape(inputs, [-1, int(np.prod(inputs.shape[1:]))], name=scope)


def classifier(inputs, hidden, num_classes, is_training, end_points, dropout_rate=0.0):
    """The dense head of the plain (non-residual) networks: flatten, then dense + ReLU (+ dropout
    in training) for each hidden layer, then the logits layer.

    Args:
      inputs: the last feature map [batch, height, width, channels] (or already [batch, features]).
      hidden: list of (scope, units) of the hidden dense layers, e.g. [('fc6', 4096)].
      num_classes: outputs of the logits layer (scope 'logits').
      is_training: boolean scalar tensor, for dropout.
      end_points: dict to which each hidden layer's output (before dropout), 'features' (the last
        of them) and 'logits' are added.
      dropout_rate: fraction of each hidden layer's outputs dropped in training; 0 for none.

    Returns:
      The logits [batch, num_classes].
    """
    net = flatten(inputs) if inputs.shape.ndims > 2 else inputs
    end_points["features"] = net
    for scope, units in hidden:
        net = relu(dense(net, units, scope=scope))
        end_points[scope] = end_points["features"] = net
        if dropout_rate:
            net = dropout(net, dropout_rate, is_training, scope="dropout_" + scope)
    logits = dense(net, num_classes, scope="logits")
    end_points["logits"] = logits
    return logits


def _conv_bn(inputs, depth, kernel_size, is_training, stride, settings):
    """The convolution and batch norm of conv_bn(_relu) in the current variable scope. Folded, the
    convolution has a bias and the batch norm is gone. Padded SAME, or by `settings.padding` where
    the layer fixes its own (conv_bn_relu_same)."""
    folded = settings.fold_batch_norm
    if folded and tf.get_static_value(is_training) in (None, True):
        raise ValueError("folded batch norm is for inference: is_training must be False")
    weights = _weights([kernel_size, kernel_size, int(inputs.shape[-1]), depth], settings)
    outputs = _convolve(inputs, weights, stride, getattr(settings, "padding", "SAME"),
                        use_bias=folded)
    return outputs if folded else batch_norm(outputs, is_training)


def _weights(shape, settings):
    """The `weights` variable of a layer in the current variable scope, He-initialised, with its
    L2 loss in REGULARIZATION_LOSSES if settings.weight_decay is not 0."""
    decay = settings.weight_decay
    if decay < 0:
        raise ValueError("weight_decay must be at least 0, got %r" % (decay,))
    regularizer = None
    if decay:
        def regularizer(weights):
            # In float32 whatever the layer computes in (a cast of float32 weights adds no op).
            return tf.multiply(float(decay), tf.nn.l2_loss(tf.cast(weights, tf.float32)),
                               name="weight_decay")
    return tf.compat.v1.get_variable("weights", shape, dtype=settings.dtype,
                                     initializer=he_initializer(), regularizer=regularizer)


def _biases(depth, dtype):
    """The zero-initialised `biases` [depth] of a layer in the current variable scope."""
    return tf.compat.v1.get_variable("biases", [depth], dtype=dtype.base_dtype,
                                     initializer=tf.compat.v1.zeros_initializer())


def _convolve(inputs, weights, stride, padding, use_bias):
    """The convolution of `inputs` (cast to the weights' type) by `weights`, plus `biases` [depth]
    made in the current variable scope if use_bias; its multiply-adds recorded."""
    outputs = fast_ops.convolve(tf.cast(inputs, weights.dtype.base_dtype), weights, stride,
                                padding)
    if use_bias:
        outputs = tf.nn.bias_add(outputs, _biases(int(weights.shape[-1]), weights.dtype))
    flops.record_convolution(weights, outputs)
    return outputs


def _dropout_training(inputs, rate, name):
    step = tf.compat.v1.train.get_global_step()
    if step is None:
        return tf.nn.dropout(inputs, rate=rate)
    graph_seed, _ = tf.compat.v1.get_seed(None)
    layer_seed = (zlib.crc32(name.encode()) + (graph_seed or 0)) % 2**31
    seed = tf.stack([tf.constant(layer_seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.nn.experimental.stateless_dropout(inputs, rate=rate, seed=seed)


def _moving_average_variable(name, channels, value):
    return tf.compat.v1.get_variable(
        name, [channels], initializer=tf.compat.v1.constant_initializer(value), trainable=False,
        collections=[tf.compat.v1.GraphKeys.GLOBAL_VARIABLES,
                     tf.compat.v1.GraphKeys.MOVING_AVERAGE_VARIABLES])


def _smart_cond(pred, true_fn, false_fn):
    """tf.cond, or just one branch when `pred` is known when the graph is built (a Python bool or a
    constant), which keeps the branching out of graphs built for one mode only."""
    value = tf.get_static_value(pred)
    if value is None:
        return tf.cond(pred, true_fn, false_fn)
    return true_fn() if value else false_fn()


__all__ = ["BATCH_NORM_DECAY", "BATCH_NORM_EPSILON", "PRECISIONS", "WITH_BATCH_NORM",
           "WITH_WEIGHTS", "WITH_DTYPE", "precision", "float32_variables", "arg_scope", "current_arg_scope", "he_initializer", "batch_norm", "conv_relu",
           "conv_bn", "conv_bn_relu", "dense", "dropout", "relu", "max_pool", "global_avg_pool",
           "flatten", "classifier", "fixed_padding", "conv_bn_relu_same"]
