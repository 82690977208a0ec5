"""ResNet v1 (ResNet-50, -101, -152) written with the layers of `nets.layers`.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
arXiv:1512.03385, Table 1: a 7x7/2 convolution (64) with batch norm and ReLU, a 3x3/2 max pool,
four stages of bottleneck units (1x1, 3x3, 1x1 convolutions, the last one 4x wider than the first
two), global average pooling and one dense layer.

A stage is data, `(depth, units, stride)`: `depth` is the output channels of its units, `units`
their number, `stride` the downsampling of its first unit. That first unit has a projection
shortcut (1x1 convolution + batch norm, with the stage's stride; the paper's option B, the
"Conv-Block"); the others add their input unchanged (the "ID-Block"). As in the paper and its
Caffe models the stride sits on the first 1x1 convolution of the unit (the later "v1.5" moves it
to the 3x3 one). Convolutions have no bias, since batch norm follows each.

A 64x64 input becomes 32x32 after the stem's convolution, 16x16 after its pool, then 16x16x256
(block1), 8x8x512 (block2), 4x4x1024 (block3) and 2x2x2048 (block4).

The stem is padded as in TF-slim's resnet_v1 (`conv2d_same`) and Keras' ResNet50: the 7x7/2
convolution's input with 3 zeros before and after the map, the 3x3/2 pool's with 1 and 1
(`layers.fixed_padding`, then VALID), rather than TensorFlow's SAME, which pads a stride-2 window
of an even map mostly after it. So the weights of Keras' ResNet50 (imported by `train
--init-from`) give here what they give in Keras. The pool's zeros change no maximum: they follow
a ReLU, whose outputs are never below 0 (SAME's pool would ignore its padding, as -inf would).

Trainable parameters for 64x64x1 inputs and 3 classes: ResNet-50 23,507,907; ResNet-101
42,500,035; ResNet-152 58,143,683. Forward cost per 64x64 image (2 x the multiply-adds of the
convolutions and the dense layer): 0.617, 1.223 and 1.829 GFLOPs.

Usage:
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    logits, end_points = resnet_v1.resnet50(images, 3, is_training)
    features = end_points['block4']  # [batch, 2, 2, 2048]
"""
import tensorflow as tf

from nets import fast_ops, layers

# (depth, units, stride) of each stage, from Table 1 of the paper.
RESNET50 = [(256, 3, 1), (512, 4, 2), (1024, 6, 2), (2048, 3, 2)]
RESNET101 = [(256, 3, 1), (512, 4, 2), (1024, 23, 2), (2048, 3, 2)]
RESNET152 = [(256, 3, 1), (512, 8, 2), (1024, 36, 2), (2048, 3, 2)]

# A bottleneck unit's output is this many times wider than its 1x1 and 3x3 convolutions.
EXPANSION = 4


def bottleneck(inputs, depth, stride, is_training, projection, scope="bottleneck"):
    """One bottleneck unit: relu(shortcut(inputs) + conv3(conv2(conv1(inputs)))).

    Args:
      inputs: float32 tensor [batch, height, width, channels].
      depth: output channels; the 1x1 and 3x3 convolutions have depth / EXPANSION.
      stride: the unit's downsampling, applied by conv1 and by the projection.
      is_training: boolean scalar tensor, for batch norm.
      projection: True for a 1x1 convolution + batch norm shortcut, False for the identity (which
        needs channels == depth and stride == 1).
      scope: variable scope.

    Returns:
      The tensor [batch, height / stride, width / stride, depth].
    """
    with tf.compat.v1.variable_scope(scope):
        # Both branches start with a 1x1 convolution of this stride, i.e. a subsampling: done once.
        subsampled = fast_ops.subsample(inputs, stride)
        if projection:
            shortcut = layers.conv_bn(subsampled, depth, 1, is_training, scope="shortcut")
        else:
            shortcut = inputs
        residual = layers.conv_bn_relu(subsampled, depth // EXPANSION, 1, is_training,
                                       scope="conv1")
        residual = layers.conv_bn_relu(residual, depth // EXPANSION, 3, is_training,
                                       scope="conv2")
        residual = layers.conv_bn(residual, depth, 1, is_training, scope="conv3")
        return tf.nn.relu(shortcut + residual)


def stage(inputs, depth, units, stride, is_training, scope):
    """A stage of `units` bottleneck units, the first with a projection shortcut and `stride`.

    Args:
      inputs: float32 tensor [batch, height, width, channels].
      depth, units, stride: the stage, as in the stage lists (RESNET50, ...).
      is_training: boolean scalar tensor, for batch norm.
      scope: variable scope; the units are under SCOPE/unit_1, ...

    Returns:
      The list of the units' outputs, the stage's output last.
    """
    outputs = [inputs]
    with tf.compat.v1.variable_scope(scope):
        for index in range(units):
            with tf.compat.v1.variable_scope("unit_%d" % (index + 1)):
                outputs.append(bottleneck(outputs[-1], depth, stride if index == 0 else 1,
                                          is_training, projection=index == 0))
    return outputs[1:]


def resnet_v1(images, num_classes, is_training, stages, scope="resnet_v1", stem_depth=64):
    """ResNet v1 with bottleneck units, of any depth.

    Args:
      images: float32 tensor [batch, height, width, channels], NHWC; batch may be unknown.
      num_classes: number of outputs.
      is_training: boolean scalar tensor: batch statistics and moving-average updates if True.
      stages: list of (depth, units, stride), one per stage; the stages are named block1, ...
      scope: variable scope of the whole network.
      stem_depth: output channels of the 7x7 stem convolution (64 in the paper; smaller for tests).

    Returns:
      logits: [batch, num_classes], before softmax.
      end_points: dict of 'conv1' (stem convolution), 'pool1', 'blockN' (each stage's output),
        'blockN/unit_M', 'pool' and 'features' (the global average pool, [batch, depth]) and
        'logits'.
    """
    end_points = {}
    with tf.compat.v1.variable_scope(scope):
        # Padded as Keras' ResNet and slim's conv2d_same are (3 and 3, 1 and 1), not SAME's 2 and
        # 3, 0 and 1: the windows Keras' weights were trained with (train --init-from).
        net = layers.conv_bn_relu_same(images, stem_depth, 7, is_training, stride=2,
                                       scope="conv1")
        end_points["conv1"] = net
        # Zeros, as Keras pads: the same maxima as SAME's ignored padding, after the ReLU.
        net = layers.max_pool(layers.fixed_padding(net, 3), 3, 2, padding="VALID", scope="pool1")
        end_points["pool1"] = net
        for index, (depth, units, stride) in enumerate(stages):
            name = "block%d" % (index + 1)
            outputs = stage(net, depth, units, stride, is_training, scope=name)
            for unit, output in enumerate(outputs):
                end_points["%s/unit_%d" % (name, unit + 1)] = output
            net = end_points[name] = outputs[-1]
        net = layers.global_avg_pool(net, scope="pool")
        end_points["pool"] = end_points["features"] = net
        logits = layers.dense(net, num_classes, scope="logits")
        end_points["logits"] = logits
    return logits, end_points


def resnet50(images, num_classes, is_training, scope="resnet50"):
    """ResNet-50: stages of 3, 4, 6, 3 units. Arguments and returns as for `resnet_v1`."""
    return resnet_v1(images, num_classes, is_training, RESNET50, scope=scope)


def resnet101(images, num_classes, is_training, scope="resnet101"):
    """ResNet-101: stages of 3, 4, 23, 3 units. Arguments and returns as for `resnet_v1`."""
    return resnet_v1(images, num_classes, is_training, RESNET101, scope=scope)


def resnet152(images, num_classes, is_training, scope="resnet152"):
    """ResNet-152: stages of 3, 8, 36, 3 units. Arguments and returns as for `resnet_v1`."""
    return resnet_v1(images, num_classes, is_training, RESNET152, scope=scope)


# The input side the networks are written for (slim's convention), which the shapes above assume.
resnet_v1.default_image_size = 64
resnet50.default_image_size = 64
resnet101.default_image_size = 64
resnet152.default_image_size = 64
