"""Shared test inputs for the training tests: a tiny network and a tiny synthetic blob dataset.

Not tests themselves; named test_training_* so it sits with the tests it serves.
"""
from pathlib import Path

import numpy as np
import tensorflow as tf

from lidc import manifest
from lidc.io import save_npz

v1 = tf.compat.v1


def tiny_net(images, num_classes, is_training, scope="tiny"):
    """conv 3x3x4 -> ReLU -> a batch-norm-like running mean in UPDATE_OPS -> mean pool -> dense.

    Small enough to train in milliseconds, yet with every property the loop relies on: variables
    from get_variable under scopes, an is_training switch and an update op in UPDATE_OPS.
    """
    end_points = {}
    with v1.variable_scope(scope):
        with v1.variable_scope("conv1"):
            channels = images.shape[-1]
            kernel = v1.get_variable("weights", [3, 3, channels, 4],
                                     initializer=v1.initializers.he_normal())
            net = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME"))
        with v1.variable_scope("norm"):
            moving = v1.get_variable("moving_mean", [4], initializer=v1.zeros_initializer(),
                                     trainable=False)
            batch_mean = tf.reduce_mean(net, [0, 1, 2])
            update = v1.assign(moving, 0.9 * moving + 0.1 * batch_mean)
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
            mean = tf.cond(is_training, lambda: batch_mean, lambda: tf.identity(moving))
            net = net - mean
        end_points["conv1"] = net
        pooled = tf.reduce_mean(net, [1, 2])
        end_points["pool"] = pooled
        with v1.variable_scope("logits"):
            weights = v1.get_variable("weights", [4, num_classes],
                                      initializer=v1.initializers.glorot_uniform())
            biases = v1.get_variable("biases", [num_classes], initializer=v1.zeros_initializer())
            logits = tf.matmul(pooled, weights) + biases
    end_points["logits"] = logits
    return logits, end_points


def blobs(n, size=16, seed=0):
    """n images of three easy classes: 0 a big bright disk, 1 a small bright dot, 2 a dark disk.

    Returns:
      x [n, size, size, 1] float32 in [0, 1], labels [n] int64 (classes in turn).
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    yy, xx = np.mgrid[:size, :size]
    x = np.empty((n, size, size, 1), np.float32)
    for i, label in enumerate(labels):
        cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
        radius = 1.0 if label == 1 else size / 4
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        image = 0.4 + 0.05 * rng.standard_normal((size, size))
        image[disk] = 0.0 if label == 2 else 1.0
        x[i, ..., 0] = np.clip(image, 0, 1)
    return x, labels.astype(np.int64)


def write_dataset(work, sizes=(60, 30, 30), image=16, seed=0):
    """Writes WORK/dataset/{train,val,test}.npz of blobs, as the dataset stage would."""
    work = Path(work)
    with manifest.file_set(work / "dataset", "manifest.json", "dataset") as files:
        for k, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
            x, label = blobs(n, image, seed + k)
            save_npz(work / "dataset" / f"{split}.npz", x=x,
                     y=np.eye(3, dtype=np.float32)[label], label=label,
                     patient_id=np.array([f"P{i // 3:04d}" for i in range(n)]),
                     patch_index=np.arange(n, dtype=np.int64))
            files.append(f"{split}.npz")
    return work


def train_config(tmp_path, **overrides):
    """A config for tools.train.run_training with the dataset under tmp_path/work."""
    config = {"net": "tiny", "name": "tiny", "work": Path(tmp_path) / "work",
              "runs": Path(tmp_path) / "runs", "seed": 0, "batch_size": 8, "lr": 0.01,
              "lr_schedule": "constant", "lr_decay": 0.96, "lr_decay_steps": 1000,
              "min_steps": 1000, "stop_accuracy": 0.99, "max_steps": 20, "eval_every": 10,
              "patience": 0, "augment": False, "train_size": None, "deterministic": False}
    config.update(overrides)
    return config
