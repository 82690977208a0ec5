"""Training throughput: images per second of a full training step of our graphs against Keras.

A step is what `training.loop` runs: the placeholder feed of a float32 NHWC batch and its one-hot
labels, forward, backward, Adam's update and the batch-norm moving-average updates, fetching the
train op, the loss and the accuracy. Keras' counterpart is `tf.keras.applications.ResNet50` /
`VGG16` (weights=None, the same 64x64x1 input and 3 classes, Adam, `train_on_batch`) in the same
process. After warm-up the two run in turn with the machine's float32 matmul probe
(bench.roofline), `--repeats` rounds of `--steps` steps each; the median per-step time is reported,
with the share of the matmul rate (measured in the same rounds) reached.

    python -m bench.train_speed [--nets resnet50 vgg16 lenet5] [--batches 16 64] [--repeats 5]
"""
import argparse

import numpy as np
import tensorflow as tf

import bench
import nets
from bench import roofline
from training import model as model_lib

v1 = tf.compat.v1

IMAGE_SHAPE = (64, 64, 1)
NUM_CLASSES = 3
# Our network -> the Keras application a user would pick instead.
KERAS_APPLICATIONS = {"resnet50": "ResNet50", "vgg16": "VGG16"}


def batch(size, seed=0, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """A random (images, one-hot labels) batch: float32 NHWC in [0, 1], float32 one-hot."""
    rng = np.random.default_rng(seed)
    x = rng.random((size, *image_shape), dtype=np.float32)
    y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, size)]
    return x, y


class OursGraph:
    """Our training graph (training.model.build) for `builder`, initialised in a session of its
    own, with the session options the trainer uses."""

    def __init__(self, builder, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, seed=0):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.model = model_lib.build(builder, image_shape, num_classes, seed=seed)
            init = v1.global_variables_initializer()
        self.session = v1.Session(graph=self.graph, config=model_lib.session_config())
        self.session.run(init)

    def close(self):
        """Closes the session (the graph goes with the object)."""
        self.session.close()


class OursTrainer(OursGraph):
    """`step()` runs one training step on a fixed batch exactly as training.loop does."""

    def __init__(self, builder, batch_size, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
                 seed=0):
        super().__init__(builder, image_shape, num_classes, seed)
        self.x, self.y = batch(batch_size, seed, image_shape, num_classes)
        m = self.model
        self.fetches = [m.train_op, m.loss, m.accuracy]
        self.feed = {m.images: self.x, m.labels: self.y, m.is_training: True,
                     m.learning_rate: 0.001}

    def step(self):
        """One training step; returns [None, loss, accuracy]."""
        return self.session.run(self.fetches, self.feed)


class KerasTrainer:
    """A tf.keras.applications model compiled with Adam; `step()` is one `train_on_batch`."""

    def __init__(self, application, batch_size, image_shape=IMAGE_SHAPE,
                 num_classes=NUM_CLASSES, seed=0):
        tf.keras.utils.set_random_seed(seed)
        self.model = keras_model(application, image_shape, num_classes)
        self.model.compile(optimizer=tf.keras.optimizers.Adam(0.001),
                           loss="categorical_crossentropy", metrics=["accuracy"])
        self.x, self.y = batch(batch_size, seed, image_shape, num_classes)

    def step(self):
        """One `train_on_batch`; returns Keras' [loss, accuracy]."""
        return self.model.train_on_batch(self.x, self.y)

    def close(self):
        """Clears Keras' global session state."""
        tf.keras.backend.clear_session()


def keras_model(application, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """`tf.keras.applications.<application>` untrained, for our input shape and classes."""
    return getattr(tf.keras.applications, application)(
        weights=None, input_shape=image_shape, classes=num_classes)


def measure(trainers, warmup=2, repeats=5, steps=3):
    """Seconds per step of each trainer (name -> object with step()), alternating, median."""
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.step()
    return bench.alternate({name: t.step for name, t in trainers.items()}, repeats, steps)


def compare(name, batch_size, warmup=2, repeats=5, steps=3, keras=True):
    """Seconds per step of our `name`, of Keras' counterpart when it has one, and the machine's
    float32 matmul rate measured in the same rounds.

    Returns {'ours': seconds, 'keras': seconds or None, 'limit': FLOP/s}.
    """
    probe = roofline.MatmulProbe()
    trainers = {"ours": OursTrainer(nets.get(name), batch_size), "limit": probe}
    if keras and name in KERAS_APPLICATIONS:
        trainers["keras"] = KerasTrainer(KERAS_APPLICATIONS[name], batch_size)
    try:
        seconds = measure(trainers, warmup, repeats, steps)
    finally:
        for trainer in trainers.values():
            trainer.close()
    seconds.setdefault("keras", None)
    seconds["limit"] = probe.rate(seconds["limit"])
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    roofline.add_timing_options(p, ["resnet50", "vgg16", "lenet5"])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=3, help="steps per round")
    args = p.parse_args(argv)
    roofline.announce_machine()
    rows = []
    for name in args.nets:
        flops = roofline.network_flops(name)
        for size in args.batches:
            s = compare(name, size, args.warmup, args.repeats, args.steps, not args.no_keras)
            ours = size / s["ours"]
            keras = size / s["keras"] if s["keras"] else None
            rows.append([name, size, s["ours"], ours,
                         "-" if keras is None else keras,
                         "-" if keras is None else ours / keras, s["limit"] / 1e9,
                         f"{100 * roofline.share(flops, ours, s['limit'], training=True):.0f}%"])
            print(f"  {name} batch {size}: ours {ours:.1f} img/s"
                  + ("" if keras is None else f", keras {keras:.1f} img/s")
                  + f", limit {s['limit'] / 1e9:.0f} GFLOP/s", flush=True)
    print("\ntraining step (feed + forward + backward + Adam + batch-norm updates), 64x64x1, "
          "3 classes")
    print(bench.table(["net", "batch", "s/step", "ours img/s", "keras img/s", "ours/keras",
                       "limit GFLOP/s", "of limit"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
