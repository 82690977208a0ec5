"""LeNet-5 written with the layers of `nets.layers`, adapted to 64x64 inputs.

LeCun, Bottou, Bengio and Haffner, "Gradient-Based Learning Applied to Document Recognition",
Proc. IEEE 1998: two 5x5 VALID convolutions (6 then 16 channels) each followed by a 2x2/2 pool, then
dense layers of 120 and 84 units and the classifier. As in most modern re-implementations (and
TF-slim's `lenet`) the units are ReLU and the pools max pools, in place of the scaled tanh and the
trainable subsampling of the original, and the C3 convolution sees all six S2 maps.

The original reads 32x32 digits and flattens a 5x5x16 map into C5; a 64x64 patch gives
64 -> 60 (conv1) -> 30 (pool1) -> 26 (conv2) -> 13 (pool2), so `fc3` reads 13x13x16 = 2,704
features.

Trainable parameters for 64x64x1 inputs and 3 classes: 337,591 (of which 324,600 in fc3).
Forward cost per 64x64 image: 5.0 MFLOPs.

Usage:
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 1])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    logits, end_points = lenet5.lenet5(images, 3, is_training)
"""
import tensorflow as tf

from nets import layers


def lenet5(images, num_classes, is_training, scope="lenet5"):
    """LeNet-5.

    Args:
      images: float32 tensor [batch, height, width, channels], NHWC; batch may be unknown, height
        and width must be known.
      num_classes: number of outputs.
      is_training: boolean scalar tensor; unused (LeNet-5 has neither batch norm nor dropout), kept
        for the common builder signature.
      scope: variable scope of the whole network.

    Returns:
      logits: [batch, num_classes], before softmax.
      end_points: dict of 'conv1', 'pool1', 'conv2', 'pool2', 'fc3', 'fc4', 'features' (fc4) and
        'logits'.
    """
    end_points = {}
    with tf.compat.v1.variable_scope(scope):
        net = images
        for index, depth in enumerate((6, 16)):
            name = "conv%d" % (index + 1)
            net = layers.conv_relu(net, depth, 5, padding="VALID", scope=name)
            end_points[name] = net
            net = layers.max_pool(net, 2, 2, padding="VALID", scope="pool%d" % (index + 1))
            end_points["pool%d" % (index + 1)] = net
        logits = layers.classifier(net, [("fc3", 120), ("fc4", 84)], num_classes, is_training,
                                   end_points)
    return logits, end_points


# The input side the network is written for (slim's convention), which the shapes above assume.
lenet5.default_image_size = 64
