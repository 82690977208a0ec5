"""Inference throughput: images per second of our exported model and session graph against Keras.

Three ways to classify the same float32 64x64x1 images in batches of `--batch` (256):
  saved_model  the run's export (training.model.export), loaded by training.model.Predictor as
               `tools.predict` does
  session      the training graph itself, is_training left at False (what evaluation runs)
  keras        tf.keras.applications.<Net>(weights=None, same input and classes).predict
After warm-up the three run in turn with the machine's float32 matmul probe (bench.roofline),
`--repeats` rounds; the median is reported, with the share of the matmul rate (measured in the
same rounds) reached. `--precision bfloat16` (or float16): our graph and export in that precision,
Keras under the matching mixed-precision policy.

    python -m bench.inference [--nets resnet50 vgg16] [--batch 256] [--images 1024] [--repeats 5]
                              [--precision float32|bfloat16|float16]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

import bench
import nets
from bench import roofline
from bench.train_speed import (IMAGE_SHAPE, KERAS_APPLICATIONS, KERAS_POLICIES, OursGraph,
                               Timing, keras_model, keras_policy)
from training import model as model_lib


class OursSession(OursGraph):
    """Our training graph, initialised, classifying through `probabilities` in its session."""

    def predict(self, images, batch_size):
        """[N, C] probabilities of `images`, run through the training graph in batches."""
        (probabilities,) = model_lib.run_in_batches(
            self.session, [self.model.probabilities], {self.model.images: images}, batch_size)
        return probabilities

    def export(self, export_dir):
        """Writes the graph's saved model to `export_dir`, as training does (model.export)."""
        with self.graph.as_default():
            model_lib.export(self.session, self.model, export_dir)


def images(count, seed=0, image_shape=IMAGE_SHAPE):
    """`count` random float32 images in [0, 1) of `image_shape`, fixed by `seed`."""
    return np.random.default_rng(seed).random((count, *image_shape), dtype=np.float32)


def compare(name, count=1024, batch_size=256, timing=Timing(warmup=1)):
    """Seconds to classify `count` images with each way, in `timing.precision`, and the float32
    matmul rate measured in the same rounds (timing's warmup, repeats and keras; one call a
    round). Returns {way: seconds or None, 'limit': FLOP/s}."""
    x = images(count)
    probe = roofline.MatmulProbe()
    ours = OursSession(nets.get(name), precision=timing.precision)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / "saved_model"
        ours.export(export_dir)
        predictor = model_lib.Predictor.from_saved_model(export_dir)
    runs = {"saved_model": lambda: predictor.predict(x, batch_size),
            "session": lambda: ours.predict(x, batch_size), "limit": probe.step}
    if timing.keras and name in KERAS_APPLICATIONS:
        with keras_policy(timing.precision):
            model = keras_model(KERAS_APPLICATIONS[name])
        runs["keras"] = lambda: model.predict(x, batch_size=batch_size, verbose=0)
    try:
        for run in runs.values():
            for _ in range(timing.warmup):
                run()
        seconds = bench.alternate(runs, timing.repeats)
    finally:
        predictor.close()
        ours.close()
        probe.close()
        tf.keras.backend.clear_session()
    seconds.setdefault("keras", None)
    seconds["limit"] = probe.rate(seconds["limit"])
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    roofline.add_timing_options(p, ["resnet50", "vgg16"])
    p.add_argument("--batch", type=int, default=256, help="images per run")
    p.add_argument("--images", type=int, default=1024, help="images classified per repetition")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precision", choices=list(KERAS_POLICIES), default="float32",
                   help="the type the networks compute in (Keras: the matching mixed policy)")
    args = p.parse_args(argv)
    roofline.announce_machine()
    timing = Timing(warmup=args.warmup, repeats=args.repeats, precision=args.precision,
                    keras=not args.no_keras)
    rows = []
    for name in args.nets:
        flops = roofline.network_flops(name)
        s = compare(name, args.images, args.batch, timing)
        keras = args.images / s["keras"] if s["keras"] else None
        for way in ("saved_model", "session", "keras"):
            if s[way] is None:
                continue
            rate_way = args.images / s[way]
            rows.append([name, way, rate_way, "-" if keras is None else rate_way / keras,
                         s["limit"] / 1e9,
                         f"{100 * roofline.share(flops, rate_way, s['limit'], False):.0f}%"])
        print(f"  {name}: " + ", ".join(f"{w} {args.images / s[w]:.0f} img/s"
                                        for w in ("saved_model", "session", "keras") if s[w])
              + f", limit {s['limit'] / 1e9:.0f} GFLOP/s", flush=True)
    print(f"\ninference, batch {args.batch}, 64x64x1, 3 classes, {args.precision}")
    print(bench.table(["net", "way", "img/s", "vs keras", "limit GFLOP/s", "of limit"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
