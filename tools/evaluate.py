"""Evaluates a trained run on the test set: accuracy, per-class precision/recall/F1, ROC AUC.

  python -m tools.evaluate --name demo

Restores the run's best checkpoint (the latest when there is no best), classifies
WORK/dataset/test.npz and writes runs/NAME/eval/metrics.json, confusion.png and
learning_curves.png.
"""
import re

from lidc.records import CLASS_NAMES
from lidc.errors import LidcError
from lidc.io import write_json
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs")
    p.add_argument("--name", required=True, help="the run folder under --runs")
    p.add_argument("--batch-size", type=int, default=256, help="patches per inference batch")
    return p


def checkpoint_of(run_dir):
    """The best checkpoint's prefix, else the latest's.

    Raises:
      LidcError: the run has no checkpoint.
    """
    import tensorflow as tf

    for folder in (run_dir.best, run_dir.ckpt):
        prefix = tf.train.latest_checkpoint(str(folder))
        if prefix:
            return prefix
    raise LidcError(run_dir.root, "has no checkpoint; train it first (python -m tools.train)")


def run_evaluation(runs, name, work, batch_size=256, log=print):
    """Evaluates run `name` on WORK/dataset/test.npz and writes its eval/ folder.

    Returns:
      the report written to eval/metrics.json (training.metrics.report plus run, checkpoint,
      step).
    Raises:
      LidcError: no such run, no checkpoint, no test set, or the run is in use.
    """
    from training import data, metrics, plots
    from training.model import Predictor
    from training.rundir import RunDir, locked

    run_dir = RunDir(runs / name)
    if not run_dir.root.is_dir():
        raise LidcError(run_dir.root, "no such run; train it first (python -m tools.train)")
    test = data.load(work / "dataset", "test")
    with locked(run_dir):
        prefix = checkpoint_of(run_dir)
        with Predictor.from_checkpoint(prefix) as predictor:
            probabilities = predictor.predict(test.x, batch_size)
        names = CLASS_NAMES if probabilities.shape[1] == len(CLASS_NAMES) else \
            [f"class {c}" for c in range(probabilities.shape[1])]
        report = metrics.report(test.label, probabilities, names)
        step = re.search(r"-(\d+)$", prefix)
        report.update(run=name, checkpoint=prefix, step=int(step.group(1)) if step else None,
                      test_set=test.path)
        write_json(run_dir.eval / "metrics.json", report)
        plots.confusion(report["confusion"], names, run_dir.eval / "confusion.png",
                        title=f"{name}: test accuracy {report['accuracy']:.3f}")
        if run_dir.metrics.is_file() and run_dir.metrics.stat().st_size:
            history = run_dir.read_metrics().get("history", [])
            config = run_dir.read_config() if run_dir.config.is_file() else {}
            if history:
                plots.learning_curves(history, run_dir.eval / "learning_curves.png",
                                      config.get("stop_accuracy"), title=name)
    log(f"{name}: {len(test)} test patches, checkpoint {prefix}\n{metrics.table(report)}")
    return report


def main(argv=None):
    args = build_parser().parse_args(argv)

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")
    report = run_evaluation(args.runs, args.name, args.work, args.batch_size)
    eval_dir = args.runs / args.name / "eval"
    cli.summary(f"evaluate: {args.name}", {
        "test accuracy": f"{report['accuracy']:.3f}",
        "macro F1": f"{report['macro']['f1']:.3f}",
        "metrics": eval_dir / "metrics.json",
        "figures": f"{eval_dir / 'confusion.png'}, {eval_dir / 'learning_curves.png'}",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
