"""Compares networks by training-set size: train each on stratified subsets, test each.

  python -m tools.compare --nets lenet5,vgg16,resnet50 --sizes 100,200,400 --max-steps 500

For each network and each size, trains run PREFIX-NET-nSIZE on a stratified subset of the
training set of that size (the same options and seed for all), evaluates it on the whole test
set and writes WORK/compare/compare.csv and compare.png (test accuracy against training-set size,
one line per network). Runs that finished and were evaluated are reused when the command is run
again (an interrupted one is resumed); --force retrains them all.
"""
import time

import numpy as np

from lidc.errors import LidcError
from lidc.io import write_csv
from tools import cli
from tools.evaluate import run_evaluation
from tools.train import IDENTITY, add_training_options, display_name, run_training

COLUMNS = ("net", "size", "steps", "test_accuracy", "macro_f1", "macro_auc", "run", "seconds")
# Options whose change makes a finished run a different experiment.
COMPARED = IDENTITY + ("min_steps", "stop_accuracy", "max_steps", "eval_every", "patience")


def comma_list(text, kind=str):
    items = [kind(item) for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("empty list")
    return items


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs", "seed", "force")
    p.add_argument("--nets", type=comma_list, default=["lenet5", "vgg16", "resnet50"],
                   help="comma-separated networks")
    p.add_argument("--sizes", type=lambda s: comma_list(s, int), default=[100, 200, 400],
                   help="comma-separated training-set sizes (patches)")
    p.add_argument("--prefix", default="compare", help="run names are PREFIX-NET-nSIZE")
    add_training_options(p)
    return p


def run_name(prefix, net, size):
    return f"{prefix}-{net}-n{size}"


def check_same_options(run_dir, config):
    """Refuses a finished run trained with other options than `config`'s.

    Raises:
      LidcError: the finished run was trained with other options.
    """
    saved = run_dir.read_config()
    changed = [f"--{k.replace('_', '-')} {saved.get(k)} -> {config.get(k)}"
               for k in COMPARED if saved.get(k) != config.get(k)]
    if changed:
        raise LidcError(run_dir.root, "was trained with other options (" + ", ".join(changed)
                        + "); pass --force to retrain or choose another --prefix")


def run_comparison(options, nets, sizes, prefix="compare", force=False, builders=None,
                   progress=None, log=print):
    """Trains and evaluates every (net, size) pair, reusing finished runs; writes the outputs.

    Args:
      options: the training options (argparse dests of tools.train), with work, runs and seed.
      nets: network names.
      sizes: training-set sizes.
      prefix: run names are PREFIX-NET-nSIZE.
      force: retrain every run.
      builders: optional dict name -> builder overriding the nets/ registry (for tests).
      progress: progress-bar factory for the training loops.
      log: where one-line messages go.
    Returns:
      the rows written to compare.csv (dicts with COLUMNS).
    """
    from training import data, plots
    from training.rundir import RunDir

    train_rows = len(data.load(options["work"] / "dataset", "train"))
    too_big = [s for s in sizes if not 0 < s <= train_rows]
    if too_big:
        raise LidcError(options["work"] / "dataset" / "train.npz",
                        f"--sizes {too_big} not between 1 and its {train_rows} patches")
    rows = []
    pairs = [(net, size) for net in nets for size in sizes]
    for k, (net, size) in enumerate(pairs, 1):
        name = run_name(prefix, net, size)
        config = {**options, "net": net, "name": name, "train_size": size}
        run_dir = RunDir(options["runs"] / name)
        finished = not force and run_dir.finished()
        if finished:
            check_same_options(run_dir, config)
        evaluated = finished and (run_dir.eval / "metrics.json").is_file()
        if evaluated:
            log(f"[{k}/{len(pairs)}] {name}: finished earlier, reused")
        elif not finished:
            log(f"[{k}/{len(pairs)}] {name}: training {net} on {size} patches")
            started = time.perf_counter()
            # resume: a run interrupted earlier continues from its latest checkpoint.
            run_training(config, resume=not force and run_dir.started(), force=force,
                         builder=(builders or {}).get(net), progress=progress, log=log)
            log(f"[{k}/{len(pairs)}] {name}: trained in {time.perf_counter() - started:.0f} s")
        if not evaluated:
            run_evaluation(options["runs"], name, options["work"], log=lambda *a: None)
        rows.append(row(net, size, run_dir))
    out = options["work"] / "compare"
    write_csv(out / "compare.csv", rows, COLUMNS)
    test_labels = data.load(options["work"] / "dataset", "test").label
    plots.comparison(rows, out / "compare.png", labels={n: display_name(n) for n in nets},
                     baseline=majority_share(test_labels))
    return rows


def majority_share(labels):
    """The accuracy of always answering the most frequent class."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def row(net, size, run_dir):
    """The compare.csv row of a finished, evaluated run."""
    import json

    metrics = run_dir.read_metrics()
    with open(run_dir.eval / "metrics.json") as f:
        report = json.load(f)
    return {"net": net, "size": size, "steps": metrics["step"],
            "test_accuracy": round(report["accuracy"], 4),
            "macro_f1": round(report["macro"]["f1"], 4),
            "macro_auc": None if report["macro"]["auc"] is None else
            round(report["macro"]["auc"], 4),
            "run": run_dir.root.name, "seconds": round(metrics["train_seconds"], 1)}


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    from tools.train import resolve

    for net in args.nets:
        try:
            resolve(net)
        except LidcError as e:
            p.error(str(e))

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")
    options = {k: v for k, v in vars(args).items() if k not in ("nets", "sizes", "prefix", "force")}
    rows = run_comparison(options, args.nets, args.sizes, args.prefix, args.force,
                          progress=cli.progress)
    out = args.work / "compare"
    cli.summary("compare: test accuracy by training-set size", {
        **{f"{r['net']} n={r['size']}": f"accuracy {r['test_accuracy']:.3f}, macro F1 "
                                        f"{r['macro_f1']:.3f}, {r['steps']} steps ({r['run']})"
           for r in rows},
        "table": out / "compare.csv",
        "plot": out / "compare.png",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
