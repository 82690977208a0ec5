"""What a network trained on the synthetic demo cohort only tells apart in the real collection.

The demo cohort is only worth what transfers: this runs the preprocessing stages on the real
series in ../shared/lidc-samples (LIDC-IDRI-0003: its 4 readers marked nodules >= 3 mm and
non-nodules, no nodule < 3 mm), makes the dataset stage's units (one patch per lesion per slice,
the readers' majority), classifies them with trained runs and prints each class's one-vs-rest
AUC (a class absent from the series has none) and the balanced accuracy over the classes
present.

    python -m bench.transfer --runs runs --names demo-resnet50 [--samples ../shared/lidc-samples]
"""
import argparse
import contextlib
import io
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "lidc-samples"
WORK = Path("data/bench/transfer")


def real_units(samples, work=WORK):
    """The real series' units (lidc.stages.dataset.make_units, one per lesion per slice) and
    their patches windowed for the networks: (x [N, S, S, 1], labels [N])."""
    from lidc.stages import annotations, crop, dataset, index
    from lidc.windows import TRAINING

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        index.run(Path(samples) / "LIDC-IDRI", work, workers=1)
        annotations.run(work, workers=1)
        crop.run(work, workers=1)
    patches, rows, _ = dataset.load_patches(work)
    units = dataset.make_units(rows, dataset.DatasetOptions(unit="slice"))
    x = TRAINING.to_unit(patches[units["patch_index"]])[..., None]
    return x, units["label"]


def transfer(runs, name, x, labels):
    """{class name: AUC or None, 'balanced accuracy': value, 'units': N} of run `name`."""
    from training import metrics
    from training.evaluation import class_names
    from training.prediction import load_predictor
    from training.rundir import run_folder

    with load_predictor(run_folder(runs, name)) as predictor:
        probabilities = predictor.predict(x)
    names = class_names(probabilities.shape[1])
    aucs = metrics.one_vs_rest_auc(labels, probabilities)
    confusion = metrics.confusion_matrix(labels, probabilities.argmax(1), len(names))
    result = {n: (None if np.isnan(a) else round(float(a), 3)) for n, a in zip(names, aucs)}
    result["balanced accuracy"] = round(metrics.balanced_accuracy(confusion), 3)
    result["units"] = int(len(labels))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--names", default="demo-resnet50", help="comma-separated runs")
    p.add_argument("--samples", type=Path, default=SAMPLES)
    args = p.parse_args(argv)
    if not (args.samples / "LIDC-IDRI").is_dir():
        print(f"no real samples at {args.samples}: nothing to measure")
        return 0
    from training import environment

    environment.configure()
    x, labels = real_units(args.samples)
    counts = np.bincount(labels, minlength=3)
    print(f"real units of {args.samples / 'LIDC-IDRI'}: {len(labels)} "
          f"({', '.join(str(c) for c in counts)} by class)")
    for name in args.names.split(","):
        print(f"{name}: {transfer(args.runs, name, x, labels)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
