"""Keras' ResNet50 with random weights, the reference of tests/test_keras_weights.py, made in a
process of its own: Keras needs eager execution, which a command tested earlier in the same pytest
process turns off for good (training.environment).

    python -m tests.keras_reference FOLDER

writes into FOLDER, for a 3-channel and a 1-channel ResNet50 at 64x64 (3 classes, logits without
softmax): their weights as Keras 2 and Keras 3 files, with and without the classifier
(file_path), the whole 3-channel model as model.h5 (Keras' legacy full-model file, weights under
model_weights/), and outputs.npz: x, a batch of 2 1-channel images, and each model's stem ReLU,
pool, pooled features and logits of x (x repeated on RGB for the 3-channel model), in inference.
No download: weights=None, then `randomised`.
"""
import sys
from pathlib import Path

import h5py
import numpy as np

OUTPUTS = ("conv1", "pool1", "features", "logits")
# Layers whose first kernel is scaled down before the statistics are taken: their batch norms get a
# variance far below 1e-3 (below 0 once shifted for our epsilon) on a channel that still matters.
QUIET_CHANNEL = ("conv1_conv", "conv4_block2_2_conv", "conv5_block3_3_conv")


def file_path(folder, channels, layout, top):
    """Where main() writes the weights of the model of `channels` in `layout` ('keras2' or
    'keras3'), with the classifier (`top`) or without."""
    name = f"rgb{channels}_{'top' if top else 'notop'}"
    return Path(folder) / (f"{name}.h5" if layout == "keras2" else f"{name}.weights.h5")


def write_keras2(path, weights):
    """Writes `weights` ({(layer, weight): array}) as Keras 2 wrote .h5 weights, the layout of
    resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5: the root's `layer_names` (layers
    without weights too), a group per layer whose `weight_names` ('conv1_conv/kernel:0', ...)
    name its datasets."""
    layers = list(dict.fromkeys(layer for layer, _ in weights))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", b"conv1_pad"]
                                          + [layer.encode() for layer in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for empty in ("input_1", "conv1_pad"):
            f.create_group(empty).attrs["weight_names"] = np.array([], dtype=np.float64)
        for layer in layers:
            names = [f"{layer}/{weight}:0" for name, weight in weights if name == layer]
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([name.encode() for name in names])
            for name in names:
                group.create_dataset(name, data=weights[(layer, name.split("/")[-1][:-2])])
    return path


def randomised(model, rng, calibration):
    """`model` (a Keras ResNet50) with random batch-norm scales and shifts, convolution and dense
    biases, a few channels scaled down (QUIET_CHANNEL), then the moving averages set to the
    statistics of the `calibration` batch (one pass in training mode with momentum 0).

    The scales are drawn from [0.2, 0.6]: with scales up to 1.5 this random network amplifies
    float32 rounding so much that our own network and its folded inference form (the same
    arithmetic in another order) already differ by 1e-4 of the largest feature (measured), which
    would leave a comparison with Keras at that tolerance to chance."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            _, _, mean, variance = layer.get_weights()
            count = len(mean)
            layer.set_weights([rng.uniform(0.2, 0.6, count), rng.uniform(-0.5, 0.5, count),
                               mean, variance])
            layer.momentum = 0.0
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel, bias = layer.get_weights()
            if layer.name in QUIET_CHANNEL:
                kernel[..., 0] *= 0.01
            layer.set_weights([kernel, rng.uniform(-0.5, 0.5, bias.shape)])
    model(calibration, training=True)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.99
    return model


def keras_outputs(model, images):
    """Keras' stem ReLU, pool, pooled features and logits of `images`, in inference."""
    import keras

    names = ("conv1_relu", "pool1_pool", "avg_pool", "predictions")
    probe = keras.Model(model.input, [model.get_layer(name).output for name in names])
    return dict(zip(OUTPUTS, (out.numpy() for out in probe(images, training=False))))


def keras_files(model, folder, channels):
    """Writes the weights of `model` (of `channels`) as Keras 2 and Keras 3 files, with and
    without the classifier, where file_path says."""
    import keras

    weights = {(layer.name, w.name): w.numpy() for layer in model.layers for w in layer.weights}
    notop = {key: value for key, value in weights.items() if key[0] != "predictions"}
    write_keras2(file_path(folder, channels, "keras2", True), weights)
    write_keras2(file_path(folder, channels, "keras2", False), notop)
    model.save_weights(file_path(folder, channels, "keras3", True))
    without_top = keras.Model(model.input, model.get_layer("avg_pool").output)
    without_top.save_weights(file_path(folder, channels, "keras3", False))


def main(folder):
    """Writes the files and outputs.npz (module docstring) into `folder`."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 64, 64, 1)).astype(np.float32)
    outputs = {"x": x}
    for channels in (3, 1):
        model = randomised(keras.applications.ResNet50(
            weights=None, input_shape=(64, 64, channels), classes=3, classifier_activation=None),
            rng, rng.uniform(size=(8, 64, 64, channels)).astype(np.float32))
        for name, value in keras_outputs(model, np.repeat(x, channels, axis=3)).items():
            outputs[f"c{channels}_{name}"] = value
        keras_files(model, folder, channels)
        if channels == 3:
            model.save(Path(folder) / "model.h5")
    np.savez(Path(folder) / "outputs.npz", **outputs)


if __name__ == "__main__":
    main(sys.argv[1])
