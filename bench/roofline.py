"""The machine's limit: the float32 matrix-multiply rate TensorFlow reaches, and each network's cost.

The roofline of a convolutional network on a CPU is the rate of its dense float32 arithmetic:
convolutions and dense layers are matrix multiplications, so no network step can beat a large
square matmul. A network's forward cost per image is counted from its layer shapes
(`nets.forward_flops`: 2 x multiply-adds of every convolution and dense layer); a training step
costs about 3x the forward (the backward pass computes two products per layer: the gradient
with respect to the input and to the weights). The share of the limit a network reaches is then

    training:  3 x forward_flops x batch / step seconds / matmul rate
    inference:     forward_flops x batch / batch seconds / matmul rate

    python -m bench.roofline [--sizes 1024 2048 4096] [--repeats 5]
"""
import argparse

import numpy as np
import tensorflow as tf

import bench
import nets
from training.model import session_config

v1 = tf.compat.v1

TRAINING_COST = 3  # a training step ~ forward + backward (2x forward)


class MatmulProbe:
    """A chain of float32 size x size matrix products, one session call per `step()`.

    `chain` products run in one call (each feeding the next, so none is skipped), which keeps the
    per-call overhead out of the figure. The throughput benchmarks time it in turn with the
    networks, so the limit and the networks' rates come from the same minutes of a shared machine.
    """

    def __init__(self, size=2048, chain=4):
        self.flops = chain * 2.0 * size ** 3
        self.graph = tf.Graph()
        with self.graph.as_default():
            rng = np.random.default_rng(0)
            # Variables, not constants: Grappler would fold a product of constants away.
            # Scaled by 1/sqrt(size) so that the chained products neither overflow nor underflow
            # (denormals are slow); cast back, since numpy's float64 scalar would promote them.
            a, b = (tf.Variable((rng.standard_normal((size, size)) / np.sqrt(size))
                                .astype(np.float32)) for _ in range(2))
            product = a
            for _ in range(chain):
                product = tf.matmul(product, b)
            # Fetch a scalar: the rate of the products, not of copying the result out.
            self.out = tf.reduce_sum(product[:1, :1])
            init = v1.global_variables_initializer()
        self.session = v1.Session(graph=self.graph, config=session_config())
        self.session.run(init)

    def step(self):
        """Runs the chain of products once."""
        self.session.run(self.out)

    def rate(self, seconds):
        """FLOP/s of one step that took `seconds`."""
        return self.flops / seconds

    def close(self):
        """Closes the probe's session."""
        self.session.close()


def matmul_rate(size=2048, chain=4, repeats=5):
    """Float32 FLOP/s of TensorFlow multiplying two size x size matrices on this machine: the
    median over `repeats` steps of a MatmulProbe, after one warm-up step."""
    probe = MatmulProbe(size, chain)
    try:
        probe.step()  # warm-up: kernel selection, thread pool start
        return probe.rate(bench.median_time(probe.step, repeats))
    finally:
        probe.close()


def machine_rate(sizes=(1024, 2048, 4096), repeats=5):
    """The best `matmul_rate` over `sizes`: the machine's float32 limit as TensorFlow reaches it.

    Returns (rate, {size: rate}).
    """
    rates = {size: matmul_rate(size, repeats=repeats) for size in sizes}
    return max(rates.values()), rates


def add_timing_options(p, nets_default, repeats=5):
    """The options every throughput benchmark shares."""
    p.add_argument("--nets", nargs="+", default=nets_default, choices=sorted(nets.NETWORKS))
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds (median reported)")
    p.add_argument("--no-keras", action="store_true", help="time our graphs only")


def announce_machine():
    """Prints the machine's description and what the limit column measures."""
    print(f"machine: {bench.machine()}")
    print("the limit: a chain of 2048x2048 float32 matmuls, timed in turn with the networks\n")


def network_flops(name, image_shape=(64, 64, 1), num_classes=3):
    """Forward FLOPs per image of network `name`, counted from its layer shapes."""
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, *image_shape])
        nets.get(name)(images, num_classes, False)
        return nets.forward_flops()


def share(flops_per_image, images_per_second, rate, training):
    """The fraction of `rate` (FLOP/s) that a network reaches at `images_per_second`."""
    cost = TRAINING_COST if training else 1
    return cost * flops_per_image * images_per_second / rate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096],
                   help="sides of the square matrices multiplied")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per size")
    p.add_argument("--nets", nargs="+", default=sorted(nets.NETWORKS),
                   help="networks whose cost is listed")
    args = p.parse_args(argv)
    print(f"machine: {bench.machine()}")
    best, rates = machine_rate(args.sizes, args.repeats)
    print("\nfloat32 matmul rate (TensorFlow)")
    print(bench.table(["size", "GFLOP/s"], [[s, r / 1e9] for s, r in rates.items()]))
    print(f"limit: {best / 1e9:.0f} GFLOP/s")
    rows = []
    for name in args.nets:
        flops = network_flops(name)
        rows.append([name, flops / 1e9, TRAINING_COST * flops / 1e9,
                     best / flops, best / (TRAINING_COST * flops)])
    print("\ncost per 64x64x1 image and the limit it implies")
    print(bench.table(["net", "fwd GFLOP", "train GFLOP", "max infer img/s", "max train img/s"],
                      rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
