"""VGG-16 written with the layers of `nets.layers`, its head adapted to 64x64 inputs.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, arXiv:1409.1556, configuration D: thirteen 3x3 convolutions (stride 1, SAME, ReLU) in
five blocks of 64, 64 | 128, 128 | 256 x 3 | 512 x 3 | 512 x 3 channels, each block ended by a 2x2/2
max pool, then three dense layers, the first two with ReLU and dropout 0.5.

The 224-pixel original ends on a 7x7x512 map read by a 7x7 `fc6`; a 64x64 input ends on 2x2x512,
so here `fc6` is a dense layer on those 2,048 flattened features. `fc6` and `fc7` keep the
original 4,096 units (`fc_depth` makes them smaller). `vgg16` has no batch norm, as the original;
`vgg16_bn` puts it after every convolution (whose bias it then replaces), for training from
scratch with large learning rates.

Trainable parameters for 64x64x1 inputs and 3 classes: 39,899,843 (14,713,536 in the
convolutions, 25,186,307 in the head). Forward cost per 64x64 image: 2.546 GFLOPs.

Usage:
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    logits, end_points = vgg16.vgg16(images, 3, is_training)
"""
import tensorflow as tf

from nets import layers

# (convolutions, channels) of each block, configuration D of the paper.
VGG16 = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]

# The fraction of fc6 and fc7 outputs dropped in training, the paper's.
DROPOUT_RATE = 0.5


def vgg16(images, num_classes, is_training, scope="vgg16", fc_depth=4096, blocks=VGG16):
    """VGG-16.

    Args:
      images: float32 tensor [batch, height, width, channels], NHWC; batch may be unknown, height
        and width must be known (the head flattens the last feature map).
      num_classes: number of outputs.
      is_training: boolean scalar tensor: dropout only if True.
      scope: variable scope of the whole network.
      fc_depth: units of fc6 and fc7.
      blocks: list of (convolutions, channels), one per block (smaller for tests).

    Returns:
      logits: [batch, num_classes], before softmax.
      end_points: dict of 'convN' (each block's last convolution), 'poolN', 'fc6', 'fc7',
        'features' (fc7) and 'logits'.
    """
    def convolution(net, depth, name):
        return layers.conv_relu(net, depth, 3, scope=name)
    with tf.compat.v1.variable_scope(scope):
        return _vgg(images, num_classes, is_training, blocks, fc_depth, convolution)


def vgg16_bn(images, num_classes, is_training, scope="vgg16", fc_depth=4096, blocks=VGG16):
    """VGG-16 with batch norm after every convolution (is_training then also switches it).

    Arguments and returns as for `vgg16`.
    """
    def convolution(net, depth, name):
        return layers.conv_bn_relu(net, depth, 3, is_training, scope=name)
    with tf.compat.v1.variable_scope(scope):
        return _vgg(images, num_classes, is_training, blocks, fc_depth, convolution)


# The input side the network is written for (slim's convention), which the shapes above assume.
vgg16.default_image_size = 64
vgg16_bn.default_image_size = 64


def _vgg(images, num_classes, is_training, blocks, fc_depth, convolution):
    """The network in the current variable scope; convolution(net, depth, scope) is its unit."""
    end_points = {}
    net = images
    for index, (convolutions, depth) in enumerate(blocks):
        block = "conv%d" % (index + 1)
        with tf.compat.v1.variable_scope(block):
            for conv in range(convolutions):
                net = convolution(net, depth, "%s_%d" % (block, conv + 1))
        end_points[block] = net
        net = layers.max_pool(net, 2, 2, scope="pool%d" % (index + 1))
        end_points["pool%d" % (index + 1)] = net
    logits = layers.classifier(net, [("fc6", fc_depth), ("fc7", fc_depth)], num_classes,
                               is_training, end_points, DROPOUT_RATE)
    return logits, end_points
