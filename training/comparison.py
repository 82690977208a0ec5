"""The comparison of networks by training-set size: each network trained on stratified subsets
of the training set, each run tested on the whole test set. The runs train one after the other
in this process, or, inside `lidc.workers.engine("ray", ...)`, as Ray tasks (one run a task, a
machine or a GPU each) with the same compare.csv but for its `seconds`.

    rows = run_comparison(options, Grid(nets=["lenet5", "resnet50"], sizes=[100, 400]))
    with engine("ray", address="head:6379"):
        rows = run_comparison(options, Grid(nets=["lenet5", "resnet50"], sizes=[100, 400]))
"""
import json
import time
from dataclasses import dataclass, field

import numpy as np

from lidc import workers
from lidc.errors import LidcError
from lidc.io import write_csv
from training import data, plots
from training.evaluation import evaluate_run
from training.loop import Hooks
from training.options import COMPARED, DEFAULTS
from training.rundir import run_folder
from training.runner import display_name, run_training

COLUMNS = ("net", "size", "steps", "test_accuracy", "macro_f1", "macro_auc", "run", "seconds")


@dataclass(frozen=True)
class Grid:
    """What to compare: networks by name, training-set sizes, the runs' name prefix (runs are
    PREFIX-NET-nSIZE), whether to retrain finished runs, and builders overriding the nets/
    registry (by name, for tests)."""
    nets: list
    sizes: list
    prefix: str = "compare"
    force: bool = False
    builders: dict = field(default_factory=dict)

    def run_name(self, net, size):
        """The run folder's name of one (net, size)."""
        return f"{self.prefix}-{net}-n{size}"


def run_comparison(options, grid, hooks=Hooks()):
    """Trains and evaluates every (net, size) of `grid`, reusing finished runs; writes
    WORK/compare/compare.csv and compare.png.

    Args:
      options: the training options (training.options), with work, runs and seed.
      grid: the Grid.
      hooks: progress bar and log of the training runs.
    Returns:
      the rows written to compare.csv (dicts with COLUMNS).
    Raises:
      LidcError: a size larger than the training set, or a finished run trained with other
        options (without force).
    """
    work = options["work"]
    train_rows = len(data.load(work / "dataset", "train"))
    too_big = [s for s in grid.sizes if not 0 < s <= train_rows]
    if too_big:
        raise LidcError(work / "dataset" / "train.npz",
                        f"--sizes {too_big} not between 1 and its {train_rows} patches")
    pairs = [(net, size) for net in grid.nets for size in grid.sizes]
    rows = _compared_runs(options, grid, pairs, hooks)
    out = work / "compare"
    write_csv(out / "compare.csv", rows, COLUMNS)
    test_labels = data.load(work / "dataset", "test").label
    plots.comparison(rows, out / "compare.png", labels={n: display_name(n) for n in grid.nets},
                     baseline=majority_share(test_labels))
    return rows


def _compared_runs(options, grid, pairs, hooks):
    """The compare.csv rows of the (net, size) `pairs`, in their order: trained one after the
    other in this process, or, inside a Ray engine's block (lidc.workers.engine), as one Ray
    task a run, each on a machine or a GPU of its own (lidc.workers.whole_machines)."""
    if workers.active_engine() is None:
        rows = []
        for k, (net, size) in enumerate(pairs, 1):
            say = (lambda text, k=k: hooks.log(f"[{k}/{len(pairs)}] {text}"))
            rows.append(_compared_run(options, grid, net, size, hooks, say))
        return rows
    with workers.whole_machines():
        return list(workers.parallel_map(_RemoteRun(options, grid), pairs, len(pairs),
                                         "compare", unit="run"))


class _RemoteRun:
    """One (net, size) of the grid trained and evaluated in a Ray worker; returns its row.
    Picklable: Ray's workers import this module to run it."""

    def __init__(self, options, grid):
        self.options = options
        self.grid = grid

    def __call__(self, pair):
        from training import environment

        environment.configure()  # graph mode, as the command set it up in its own process
        net, size = pair
        quiet = Hooks(log=lambda *a: None)  # a worker's lines reach no one
        return _compared_run(self.options, self.grid, net, size, quiet, quiet.log)


def _compared_run(options, grid, net, size, hooks, say):
    """Trains (or reuses) and evaluates one run of the grid; returns its compare.csv row."""
    name = grid.run_name(net, size)
    config = {**DEFAULTS, **options, "net": net, "name": name, "train_size": size,
              "dataset": data.dataset_digest(options["work"] / "dataset")}
    run_dir = run_folder(options["runs"], name)
    finished = not grid.force and run_dir.finished()
    if finished:
        run_dir.check_options(config, COMPARED, "was trained with other options",
                              "pass --force to retrain or choose another --prefix")
    evaluated = finished and (run_dir.eval / "metrics.json").is_file()
    if evaluated:
        say(f"{name}: finished earlier, reused")
    elif not finished:
        say(f"{name}: training {net} on {size} patches")
        started = time.perf_counter()
        # resume: a run interrupted earlier continues from its latest checkpoint.
        run_training(config, resume=not grid.force and run_dir.started(), force=grid.force,
                     builder=grid.builders.get(net), hooks=hooks)
        say(f"{name}: trained in {time.perf_counter() - started:.0f} s")
    if not evaluated:
        evaluate_run(options["runs"], name, options["work"], log=lambda *a: None)
    return row(net, size, run_dir)


def majority_share(labels):
    """The accuracy of always answering the most frequent class."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def row(net, size, run_dir):
    """The compare.csv row of a finished, evaluated run."""
    metrics = run_dir.read_metrics()
    with open(run_dir.eval / "metrics.json") as f:
        report = json.load(f)
    return {"net": net, "size": size, "steps": metrics["step"],
            "test_accuracy": round(report["accuracy"], 4),
            "macro_f1": round(report["macro"]["f1"], 4),
            "macro_auc": None if report["macro"]["auc"] is None else
            round(report["macro"]["auc"], 4),
            "run": run_dir.root.name, "seconds": round(metrics["train_seconds"], 1)}
