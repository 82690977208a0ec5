"""Evaluating a trained run on the test set: its metrics (per patch and per lesion), figures and
the explanations of its answers, in runs/NAME/eval/.

    report = evaluate_run(Path("runs"), "demo", Path("data/work"), EvalOptions(bootstrap=1000))

The steps, each a function here: predict the test set (with test-time augmentation when asked),
measure (training.metrics), draw (training.plots), explain (training.explain: galleries, Grad-CAM)
and write eval/metrics.json.
"""
import re
from dataclasses import dataclass

from lidc.errors import LidcError
from lidc.io import write_json
from lidc.records import CLASS_NAMES
from training import data, explain, metrics, plots, report as html, tta, uncertainty
from training.model import Network, Predictor
from training.rundir import locked, run_folder
from training.runner import resolve_net


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: patches per inference batch; bootstrap resamples of the test patients
    for the confidence intervals (0: none) and their seed; the square symmetries averaged by
    test-time augmentation (None: none); the end point Grad-CAM reads (None: the builder's
    default) and how many patches of each class get one; the type the network computes in
    (None: the run's own, through its checkpoint's graph; a name of nets.layers.PRECISIONS: the
    inference form rebuilt in that type with the checkpoint's weights, as the export)."""
    batch_size: int = 256
    bootstrap: int = 1000
    seed: int = 0
    tta: tuple | None = None
    cam_end_point: str | None = None
    cam_per_class: int = 4
    precision: str | None = None


def class_names(num_classes):
    """The project's class names for 3 outputs, 'class N' for any other number."""
    if num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [f"class {c}" for c in range(num_classes)]


def evaluate_run(runs, name, work, options=EvalOptions(), log=print):
    """Evaluates run `name` on WORK/dataset/test.npz and writes its eval/ folder.

    Returns:
      the report written to eval/metrics.json (training.metrics.report plus lesion, run,
      checkpoint, step, test_set).
    Raises:
      LidcError: no such run, no checkpoint, no test set, or the run is in use.
    """
    run_dir = run_folder(runs, name)
    if not run_dir.root.is_dir():
        raise LidcError(run_dir.root, "no such run; train it first (python -m tools.train)")
    test = data.load(work / "dataset", "test")
    with locked(run_dir):
        _check_dataset(run_dir, work / "dataset")
        prefix = run_dir.checkpoint()
        with _predictor(run_dir, prefix, test, options.precision) as predictor:
            probabilities = predictor.predict(test.x, options.batch_size)
            augmented = _tta(predictor, test.x, options)
            _cams(predictor, test, probabilities, run_dir.eval, options, log)
        report = measure(test, probabilities, options)
        if augmented is not None:
            report["tta"] = {**metrics.report(test.label, augmented, report["class_names"]),
                             "symmetries": list(options.tta)}
        step = re.search(r"-(\d+)$", prefix)
        report.update(run=name, checkpoint=prefix, step=int(step.group(1)) if step else None,
                      test_set=test.path, precision=options.precision or _run_precision(run_dir))
        write_json(run_dir.eval / "metrics.json", report)
        _plots(run_dir, report)
        explain.write_galleries(test, probabilities, run_dir.eval, report["class_names"])
        html.write_run_report(run_dir)
    lesion = f"\nper lesion (mean of its patches):\n{metrics.table(report['lesion'])}" \
        if "lesion" in report else ""
    with_tta = f"\nwith test-time augmentation ({', '.join(options.tta)}):\n" \
        f"{metrics.table(report['tta'])}" if "tta" in report else ""
    log(f"{name}: {len(test)} test patches, checkpoint {prefix}\n{metrics.table(report)}{lesion}"
        f"{with_tta}")
    return report


def _check_dataset(run_dir, dataset_dir):
    """Refuses a dataset other than the one the run trained on: once the dataset stage has run
    again, its test patients may be others, some of them the run's training patients. (Runs from
    before the digest was recorded are not checked.)"""
    config = run_dir.read_config() if run_dir.config.is_file() else {}
    trained_on = config.get("dataset")
    if trained_on is not None and trained_on != data.dataset_digest(dataset_dir):
        raise LidcError(dataset_dir, f"is not the dataset run {run_dir.root.name} was trained on "
                                     "(the dataset stage has run since): its test set may hold "
                                     "the run's training patients; evaluate with the --work the "
                                     "run was trained on, or train the run again")


def _tta(predictor, images, options):
    """The probabilities of `images` averaged over the symmetries options.tta (training.tta);
    None without test-time augmentation."""
    if not options.tta:
        return None
    return tta.predict(lambda x: predictor.predict(x, options.batch_size), images, options.tta)


def _cams(predictor, test, probabilities, eval_dir, options, log):
    """Grad-CAM figures (training.explain.write_cams); a run that records no end points is
    evaluated without them unless an end point was asked for."""
    try:
        explain.write_cams(predictor, test, probabilities, eval_dir, options,
                           class_names(probabilities.shape[1]))
    except LidcError as e:
        if options.cam_end_point is not None:
            raise
        log(f"no Grad-CAM figures: {e}")


def _predictor(run_dir, prefix, test, precision):
    """The checkpoint's own graph (precision None), or the run's network rebuilt in `precision`
    with the checkpoint's weights."""
    if precision is None:
        return Predictor.from_checkpoint(prefix)
    config = run_dir.read_config() if run_dir.config.is_file() else {}
    if "net" not in config:
        raise LidcError(run_dir.config, "names no network, so the run cannot be rebuilt in "
                                        "another precision; evaluate it without --precision")
    network = Network(resolve_net(config["net"]), tuple(test.x.shape[1:]), test.y.shape[1],
                      precision)
    return Predictor.from_weights(prefix, network)


def _run_precision(run_dir):
    """The precision the run was trained in (float32 for runs from before the option)."""
    config = run_dir.read_config() if run_dir.config.is_file() else {}
    return config.get("precision", "float32")


def measure(test, probabilities, options):
    """The report of `probabilities` on the test Split: per patch (with bootstrap intervals
    over the patients, ROC curves and calibration), and per lesion where the split knows its
    lesions."""
    names = class_names(probabilities.shape[1])
    report = metrics.report(test.label, probabilities, names)
    if "patient_id" in test.columns:
        report["uncertainty"] = _named(uncertainty.bootstrap(
            test.label, probabilities, test.columns["patient_id"], options.bootstrap,
            options.seed), names)
    report["roc"] = {names[c]: curve
                     for c, curve in metrics.roc_points(test.label, probabilities).items()}
    report["calibration"] = metrics.reliability(test.label, probabilities)
    if "lesion_id" in test.columns:
        lesion_labels, lesion_probabilities, _ = metrics.by_lesion(
            test.label, probabilities, test.columns["lesion_id"])
        report["lesion"] = {**metrics.report(lesion_labels, lesion_probabilities, names),
                            "unit": "lesion"}
    return report


def _named(result, names):
    """The bootstrap result with its per-class intervals keyed by class name (JSON keys)."""
    intervals = result["intervals"]
    if intervals is not None:
        intervals["per_class"] = {names[c]: v for c, v in intervals["per_class"].items()}
    return result


def _reference_lines(config, report):
    """The stop threshold (when the run stops on accuracy) and the majority class's share of
    the test set: what a learning curve is read against."""
    lines = {}
    if config.get("stop_metric", "accuracy") == "accuracy" and "stop_accuracy" in config:
        lines["stop threshold"] = config["stop_accuracy"]
    support = [c["support"] for c in report["per_class"].values()]
    lines["majority class share (test)"] = max(support) / max(sum(support), 1)
    return lines


def _plots(run_dir, report):
    name, names = run_dir.root.name, report["class_names"]
    plots.confusion(report["confusion"], names, run_dir.eval / "confusion.png",
                    title=f"{name}: test accuracy {report['accuracy']:.3f}")
    plots.roc({names.index(n): curve for n, curve in report["roc"].items()},
              {c: report["per_class"][n]["auc"] for c, n in enumerate(names)}, names,
              run_dir.eval / "roc.png")
    plots.calibration(report["calibration"], run_dir.eval / "calibration.png")
    if run_dir.metrics.is_file() and run_dir.metrics.stat().st_size:
        history = run_dir.read_metrics().get("history", [])
        config = run_dir.read_config() if run_dir.config.is_file() else {}
        if history:
            plots.learning_curves(history, run_dir.eval / "learning_curves.png",
                                  _reference_lines(config, report), title=name)
