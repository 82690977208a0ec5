"""AlexNet written with the layers of `nets.layers`, its stem adapted to 64x64 inputs.

Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NIPS 2012, in the single-tower form the COVID CT studies used: five convolutions
(96, 256, 384, 384, 256 channels, ReLU) with 3x3/2 overlapping max pools after the first, second and
fifth, then dense layers of 4,096, 4,096 units (ReLU, dropout 0.5) and the classifier.

Adapted to 64x64 inputs: the 11x11/4 stem, made for 227-pixel images, becomes 5x5/2, so a patch
gives 64 -> 32 (conv1) -> 16 (pool1) -> 8 (pool2) -> 4 (pool5) and `fc6` reads 4x4x256 = 4,096
features, close to the original's 6x6x256. Pools use SAME padding so the sizes halve exactly. The
local response normalisation of the original is left out (later work found it does not help; batch
norm is not added, to stay with the paper).

Trainable parameters for 64x64x1 inputs and 3 classes: 37,289,667 (3,714,752 in the
convolutions, 33,574,915 in the head). Forward cost per 64x64 image: 0.783 GFLOPs.

Usage:
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    logits, end_points = alexnet.alexnet(images, 3, is_training)
"""
import tensorflow as tf

from nets import layers

# (channels, kernel size, stride, pooled after) of the five convolutions.
CONVOLUTIONS = [(96, 5, 2, True), (256, 5, 1, True), (384, 3, 1, False), (384, 3, 1, False),
                (256, 3, 1, True)]

# The fraction of fc6 and fc7 outputs dropped in training, the paper's.
DROPOUT_RATE = 0.5


def alexnet(images, num_classes, is_training, scope="alexnet", fc_depth=4096):
    """AlexNet.

    Args:
      images: float32 tensor [batch, height, width, channels], NHWC; batch may be unknown, height
        and width must be known.
      num_classes: number of outputs.
      is_training: boolean scalar tensor: dropout only if True.
      scope: variable scope of the whole network.
      fc_depth: units of fc6 and fc7.

    Returns:
      logits: [batch, num_classes], before softmax.
      end_points: dict of 'conv1' ... 'conv5', 'pool1', 'pool2', 'pool5', 'fc6', 'fc7',
        'features' (fc7) and 'logits'.
    """
    end_points = {}
    with tf.compat.v1.variable_scope(scope):
        net = images
        for index, (depth, kernel_size, stride, pooled) in enumerate(CONVOLUTIONS):
            name = "conv%d" % (index + 1)
            net = layers.conv_relu(net, depth, kernel_size, stride=stride, scope=name)
            end_points[name] = net
            if pooled:
                name = "pool%d" % (index + 1)
                net = layers.max_pool(net, 3, 2, scope=name)
                end_points[name] = net
        logits = layers.classifier(net, [("fc6", fc_depth), ("fc7", fc_depth)], num_classes,
                                   is_training, end_points, DROPOUT_RATE)
    return logits, end_points


# The input side the network is written for (slim's convention), which the shapes above assume.
alexnet.default_image_size = 64
