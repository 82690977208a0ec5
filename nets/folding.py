"""Batch norm folded into the convolution before it: the inference form of a trained network.

Once training is over, a batch norm with its moving averages is a fixed per-channel scale and
shift after a convolution, and the convolution can do both itself:

  batch_norm(conv(x, W)) = (conv(x, W) - mean) * scale + beta,  scale = gamma / sqrt(var + eps)
                         = conv(x, W * scale) + (beta - mean * scale)

the same sums, rounded differently, without a pass over every activation map (the export's
inference is faster for it; bench/README.md). The fold has two halves: the graph, built with every
batch norm left out and a bias given to its convolution instead, and the values, computed here
from the trained network's:

  values = {v.op.name: value for v, value in zip(variables, session.run(variables))}
  with tf.Graph().as_default():
    with layers.arg_scope(layers.WITH_BATCH_NORM, fold_batch_norm=True):
      logits, _ = builder(images, num_classes, False)
    ... initialise each variable to folding.fold_batch_norm(values)[its name]

Checkpoints keep the batch-norm variables; only the inference form is folded.
"""
import numpy as np

from nets.layers import BATCH_NORM_EPSILON


def fold_batch_norm(values, epsilon=BATCH_NORM_EPSILON):
    """The variable values of the folded form from a trained network's.

    Each convolution SCOPE/weights followed by SCOPE/bn/{gamma, beta, moving_mean,
    moving_variance} becomes SCOPE/weights times the batch norm's scale and SCOPE/biases, its
    shift; every other value is kept.

    Args:
      values: {variable name without ':0': array} of the trained network.
      epsilon: the batch norms' epsilon.

    Returns:
      {name: array}: the folded weights and biases (float32), no '/bn/' names, every other value
      as given.

    Raises:
      KeyError: a batch norm's other variables or its convolution's weights are missing.
    """
    folded = {name: value for name, value in values.items() if "/bn/" not in name}
    for name in values:
        if not name.endswith("/bn/gamma"):
            continue
        scope = name[:-len("/bn/gamma")]
        bn = {key: np.asarray(values[f"{scope}/bn/{key}"], np.float64)
              for key in ("gamma", "beta", "moving_mean", "moving_variance")}
        scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + epsilon)
        folded[f"{scope}/weights"] = (values[f"{scope}/weights"] * scale).astype(np.float32)
        folded[f"{scope}/biases"] = (bn["beta"] - bn["moving_mean"] * scale).astype(np.float32)
    return folded
