"""Training throughput: images per second of a full training step of our graphs against Keras.

A step is what `training.loop` runs: the placeholder feed of a float32 NHWC batch and its one-hot
labels, forward, backward, Adam's update and the batch-norm moving-average updates, fetching the
train op, the loss and the accuracy. Keras' counterpart is `tf.keras.applications.ResNet50` /
`VGG16` (weights=None, the same 64x64x1 input and 3 classes, Adam, `train_on_batch`) in the same
process. After warm-up the two run in turn with the machine's float32 matmul probe
(bench.roofline), `--repeats` rounds of `--steps` steps each; the median per-step time is reported,
with the share of the matmul rate (measured in the same rounds) reached.

`--precision bfloat16` (or float16) times our graph built in that precision (training.model's
mixed precision: float32 variables cast on read) against Keras under the matching mixed-precision
policy (mixed_bfloat16, mixed_float16 with its loss scaling). `--torch PYTHON` also times PyTorch's
ResNet-50 (bench.torch_speed: float32, or bfloat16 autocast) in a child process run by PYTHON, an
interpreter that has torch, in turn with the others.

    python -m bench.train_speed [--nets resnet50 vgg16 lenet5] [--batches 16 64] [--repeats 5]
                                [--precision float32|bfloat16|float16] [--torch PYTHON]
"""
import argparse
import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
# Our precision -> Keras' mixed-precision policy (float32 variables, products in the low type).
KERAS_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# The networks and precisions bench.torch_speed has.
TORCH_NETS, TORCH_PRECISIONS = ("resnet50",), ("float32", "bfloat16")


@dataclass(frozen=True)
class Timing:
    """How `compare` times: untimed warm-up steps, timed rounds, steps per round; the type the
    networks compute in; whether Keras' counterpart runs too; the Python interpreter that runs
    PyTorch's (None: no PyTorch)."""
    warmup: int = 2
    repeats: int = 5
    steps: int = 3
    precision: str = "float32"
    keras: bool = True
    torch: str = None


def batch(size, seed=0, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """A random (images, one-hot labels) batch: float32 NHWC in [0, 1], float32 one-hot."""
    rng = np.random.default_rng(seed)
    x = rng.random((size, *image_shape), dtype=np.float32)
    y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, size)]
    return x, y


class OursGraph:
    """Our training graph (training.model.build) for `builder` in `precision`, initialised in a
    session of its own, with the session options the trainer uses."""

    def __init__(self, builder, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, seed=0,
                 precision="float32"):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.model = model_lib.build(builder, image_shape, num_classes, seed=seed,
                                         precision=precision)
            init = v1.global_variables_initializer()
        self.session = v1.Session(graph=self.graph, config=model_lib.session_config())
        self.session.run(init)

    def close(self):
        """Closes the session (the graph goes with the object)."""
        self.session.close()


class OursTrainer(OursGraph):
    """`step()` runs one training step on a fixed batch exactly as training.loop does."""

    def __init__(self, builder, batch_size, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
                 seed=0, precision="float32"):
        super().__init__(builder, image_shape, num_classes, seed, precision)
        self.x, self.y = batch(batch_size, seed, image_shape, num_classes)
        m = self.model
        self.fetches = [m.train_op, m.loss, m.accuracy]
        self.feed = {m.images: self.x, m.labels: self.y, m.is_training: True,
                     m.learning_rate: 0.001}

    def step(self):
        """One training step; returns [None, loss, accuracy]."""
        return self.session.run(self.fetches, self.feed)


class KerasTrainer:
    """A tf.keras.applications model compiled with Adam under the mixed-precision policy of
    `precision` (KERAS_POLICIES; mixed_float16 compiles with Keras' loss scaling); `step()` is one
    `train_on_batch`."""

    def __init__(self, application, batch_size, image_shape=IMAGE_SHAPE,
                 num_classes=NUM_CLASSES, seed=0, precision="float32"):
        tf.keras.utils.set_random_seed(seed)
        with keras_policy(precision):
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


@contextlib.contextmanager
def keras_policy(precision):
    """Keras' global dtype policy set to that of `precision` for the block (models keep the
    policy they were built with), then set back."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(KERAS_POLICIES[precision])
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


class TorchTrainer:
    """PyTorch's ResNet-50 (bench.torch_speed) in a child process run by `python`, built and
    warmed up there; `step()` asks it for one training step and waits for it."""

    def __init__(self, python, batch_size, precision="float32"):
        self.process = subprocess.Popen(
            [python, "-m", "bench.torch_speed", "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        self.request = f"{precision} {batch_size} 1\n"
        self.step()  # the child builds the trainer and warms it up before its first answer

    def step(self):
        """One training step in the child; returns the seconds it reported."""
        self.process.stdin.write(self.request)
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"bench.torch_speed stopped (exit code {self.process.wait()})")
        return float(answer)

    def close(self):
        """Ends the child process (it stops at the end of its input)."""
        self.process.stdin.close()
        self.process.wait()


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


def compare(name, batch_size, timing=Timing()):
    """Seconds per step of our `name`, of Keras' and PyTorch's counterparts when asked for and
    they have one, all in `timing.precision`, and the machine's float32 matmul rate measured in
    the same rounds.

    Returns {'ours': seconds, 'keras': seconds or None, 'torch': seconds or None,
    'limit': FLOP/s}.
    """
    probe = roofline.MatmulProbe()
    precision = timing.precision
    trainers = {"ours": OursTrainer(nets.get(name), batch_size, precision=precision),
                "limit": probe}
    try:
        if timing.keras and name in KERAS_APPLICATIONS:
            trainers["keras"] = KerasTrainer(KERAS_APPLICATIONS[name], batch_size,
                                             precision=precision)
        if timing.torch and name in TORCH_NETS and precision in TORCH_PRECISIONS:
            trainers["torch"] = TorchTrainer(timing.torch, batch_size, precision)
        seconds = measure(trainers, timing.warmup, timing.repeats, timing.steps)
    finally:
        for trainer in trainers.values():
            trainer.close()
    seconds = {"keras": None, "torch": None, **seconds}
    seconds["limit"] = probe.rate(seconds["limit"])
    return seconds


def row(name, size, seconds, flops):
    """The table's row of one (net, batch) from compare's seconds, and its printed line."""
    rates = {who: size / seconds[who] if seconds[who] else None
             for who in ("ours", "keras", "torch")}
    cells = [name, size, seconds["ours"], rates["ours"]]
    for who in ("keras", "torch"):
        cells += ["-", "-"] if rates[who] is None else [rates[who], rates["ours"] / rates[who]]
    share = roofline.share(flops, rates["ours"], seconds["limit"], training=True)
    cells += [seconds["limit"] / 1e9, f"{100 * share:.0f}%"]
    line = f"  {name} batch {size}: " + ", ".join(
        f"{who} {rate:.1f} img/s" for who, rate in rates.items() if rate is not None)
    return cells, line + f", limit {seconds['limit'] / 1e9:.0f} GFLOP/s"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    roofline.add_timing_options(p, ["resnet50", "vgg16", "lenet5"])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=3, help="steps per round")
    p.add_argument("--precision", choices=list(KERAS_POLICIES), default="float32",
                   help="the type the networks compute in (Keras: the matching mixed policy)")
    p.add_argument("--torch", metavar="PYTHON",
                   help="also time PyTorch's ResNet-50 in a child process of this interpreter")
    args = p.parse_args(argv)
    roofline.announce_machine()
    timing = Timing(args.warmup, args.repeats, args.steps, args.precision, not args.no_keras,
                    args.torch)
    rows = []
    for name in args.nets:
        flops = roofline.network_flops(name)
        for size in args.batches:
            cells, line = row(name, size, compare(name, size, timing), flops)
            rows.append(cells)
            print(line, flush=True)
    print(f"\ntraining step (feed + forward + backward + Adam + batch-norm updates), 64x64x1, "
          f"3 classes, {args.precision}")
    print(bench.table(["net", "batch", "s/step", "ours img/s", "keras img/s", "ours/keras",
                       "torch img/s", "ours/torch", "limit GFLOP/s", "of limit"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
