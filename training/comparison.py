"""The comparison of networks by training-set size: each network trained on stratified subsets
of the training set, once per seed, each run tested on the whole test set.

    rows = run_comparison(options, Grid(nets=["lenet5", "resnet50"], sizes=[100, 400],
                                        seeds=[0, 1, 2]))

WORK/compare/compare.csv has one row per run; compare_summary.csv the mean and the standard
deviation over the seeds of each (net, size); compare.png a chosen metric against the size on a
log axis, with error bars, beside the chance and majority baselines.
"""
import json
import time
from dataclasses import dataclass, field

import numpy as np

from lidc.errors import LidcError
from lidc.io import write_csv
from training import data, plots, report as html
from training.evaluation import evaluate_run
from training.loop import Hooks
from training.options import COMPARED, DEFAULTS
from training.rundir import run_folder
from training.runner import display_name, run_training

COLUMNS = ("net", "size", "seed", "steps", "test_accuracy", "balanced_accuracy", "macro_f1",
           "macro_auc", "run", "seconds")
# The figures compare_summary.csv averages and compare.png can plot.
METRICS = ("test_accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
SUMMARY_COLUMNS = ("net", "size", "runs",
                   *(f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")))


@dataclass(frozen=True)
class Grid:
    """What to compare: networks by name, training-set sizes, seeds, the runs' name prefix
    (runs are PREFIX-NET-nSIZE-sSEED), whether to retrain finished runs, and builders
    overriding the nets/ registry (by name, for tests)."""
    nets: list
    sizes: list
    seeds: list = (0,)
    prefix: str = "compare"
    force: bool = False
    builders: dict = field(default_factory=dict)

    def run_name(self, net, size, seed):
        """The run folder's name of one (net, size, seed)."""
        return f"{self.prefix}-{net}-n{size}-s{seed}"

    def runs(self):
        """Every (net, size, seed), in the order they are trained."""
        return [(net, size, seed) for net in self.nets for size in self.sizes
                for seed in self.seeds]


def run_comparison(options, grid, hooks=Hooks(), metric="balanced_accuracy"):
    """Trains and evaluates every run of `grid`, reusing finished runs; writes
    WORK/compare/compare.csv, compare_summary.csv and compare.png (`metric` by size).

    Args:
      options: the training options (training.options), with work and runs.
      grid: the Grid.
      hooks: progress bar and log of the training runs.
      metric: the figure compare.png plots (one of METRICS).
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
    runs = grid.runs()
    rows = []
    for k, (net, size, seed) in enumerate(runs, 1):
        say = (lambda text, k=k: hooks.log(f"[{k}/{len(runs)}] {text}"))
        rows.append(_compared_run({**options, "seed": seed}, grid, (net, size), hooks, say))
    out = work / "compare"
    write_csv(out / "compare.csv", rows, COLUMNS)
    write_csv(out / "compare_summary.csv", summarise(rows), SUMMARY_COLUMNS)
    test_labels = data.load(work / "dataset", "test").label
    plots.comparison(rows, out / "compare.png", metric=metric,
                     labels={n: display_name(n) for n in grid.nets},
                     baselines=baselines(test_labels, metric))
    html.write_comparison_report(out)
    return rows


def _compared_run(options, grid, net_size, hooks, say):
    """Trains (or reuses) and evaluates one run of the grid; returns its compare.csv row."""
    net, size = net_size
    name = grid.run_name(net, size, options["seed"])
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
    return row(net, size, options["seed"], run_dir)


def whole(sizes, work):
    """`sizes` with 'all' replaced by the number of training patches in WORK/dataset."""
    if "all" not in sizes:
        return list(sizes)
    total = len(data.load(work / "dataset", "train"))
    return sorted({total if s == "all" else s for s in sizes})


def majority_share(labels):
    """The accuracy of always answering the most frequent class."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def baselines(labels, metric):
    """{name: value} of what answering without looking scores on `metric`: always the majority
    class, and chance (1/K for the accuracies, 0.5 for an AUC)."""
    classes = len(np.unique(labels))
    if metric == "macro_auc":
        return {"chance": 0.5}
    if metric == "test_accuracy":
        return {"chance": 1 / classes, "majority class": majority_share(labels)}
    if metric == "balanced_accuracy":
        return {"chance (and the majority class)": 1 / classes}
    # macro F1: the majority class's F1 is 2p / (1 + p) for its share p; the others' are 0.
    share = majority_share(labels)
    return {"majority class": 2 * share / (1 + share) / classes}


def summarise(rows):
    """compare_summary.csv's rows: the mean and standard deviation (over the seeds; 0 for one
    run) of each metric of each (net, size), in the order of first appearance."""
    groups = {}
    for r in rows:
        groups.setdefault((r["net"], r["size"]), []).append(r)
    out = []
    for (net, size), runs in groups.items():
        summary = {"net": net, "size": size, "runs": len(runs)}
        for m in METRICS:
            values = np.array([r[m] for r in runs if r[m] is not None], float)
            summary[f"{m}_mean"] = round(float(values.mean()), 4) if len(values) else None
            summary[f"{m}_std"] = round(float(values.std(ddof=1)), 4) if len(values) > 1 \
                else (0.0 if len(values) else None)
        out.append(summary)
    return out


def row(net, size, seed, run_dir):
    """The compare.csv row of a finished, evaluated run."""
    metrics = run_dir.read_metrics()
    with open(run_dir.eval / "metrics.json") as f:
        report = json.load(f)
    return {"net": net, "size": size, "seed": seed, "steps": metrics["step"],
            "test_accuracy": round(report["accuracy"], 4),
            "balanced_accuracy": round(report["balanced_accuracy"], 4),
            "macro_f1": round(report["macro"]["f1"], 4),
            "macro_auc": None if report["macro"]["auc"] is None else
            round(report["macro"]["auc"], 4),
            "run": run_dir.root.name, "seconds": round(metrics["train_seconds"], 1)}
