"""The demo cohort beside the real LIDC-IDRI: class shares, marks, ratings, agreement and HU.

Reads a cohort that `python -m tools.synthesize` wrote: its ground truth (ROOT/cohort.json) and
what the pipeline made of it (WORK/patches/patches.csv and patches.npy, WORK/annotations.csv).
Without --work, it runs index, annotations and crop on the cohort into a temporary folder first.
Each figure is printed beside the real collection's (lidc.synthetic.calibration): measured on
the whole LIDC-XML-only archive (1,018 CT series), and for HU on the CT of real patients.

Patches are counted as the crop stage makes them: one per contour slice of a nodule >= 3 mm,
one per mark of a nodule < 3 mm or a non-nodule. HU figures are the mean over 64x64 crops of
their central 16x16 pixels and of their top and bottom 8 rows.

    python -m bench.cohort_stats --root data/LIDC-IDRI [--work data/work]
"""
import argparse
import contextlib
import csv
import io
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

import bench
from lidc.records import CLASS_NAMES, NODULE, NON_NODULE, NUM_CLASSES, SMALL_NODULE
from lidc.synthetic import calibration, read_cohort


def pipeline_figures(work):
    """What the pipeline's outputs in `work` show: {'patch_shares': per class, 'marks_per_series':
    per class, 'all_four': share of lesions with a contour that four readers contoured,
    'centre_edge': {label: (centre HU, edge HU)}}."""
    work = Path(work)
    with open(work / "patches" / "patches.csv", newline="") as f:
        labels = np.array([int(row["label"]) for row in csv.DictReader(f)], dtype=int)
    patches = np.load(work / "patches" / "patches.npy", mmap_mode="r")
    centre_edge = {label: calibration.centre_and_edge(patches[np.flatnonzero(labels == label)])
                   for label in range(NUM_CLASSES) if np.any(labels == label)}
    marks, series = defaultdict(set), set()
    contoured_by = defaultdict(set)  # (series, lesion) -> readers that contoured it
    with open(work / "annotations.csv", newline="") as f:
        for row in csv.DictReader(f):
            series.add(row["series_uid"])
            marks[int(row["label"])].add(row["mark_id"])
            if int(row["label"]) == NODULE:
                contoured_by[(row["series_uid"], row["lesion_id"])].add(row["reader"])
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    return {"patch_shares": tuple(counts / max(counts.sum(), 1)),
            "marks_per_series": tuple(len(marks[label]) / max(len(series), 1)
                                      for label in range(NUM_CLASSES)),
            "all_four": np.mean([len(r) >= 4 for r in contoured_by.values()])
            if contoured_by else 0.0,
            "centre_edge": centre_edge}


def run_pipeline(root, work):
    """Runs index, annotations and crop on `root` into `work`, quietly."""
    from tools import preprocess
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = preprocess.main(["--root", str(root), "--work", str(work)])
    if code:
        raise RuntimeError(f"preprocess exited with {code}")


def rows(truth, pipeline):
    """Table rows (figure, demo ground truth, demo pipeline, real) for Figures `truth` and the
    dict `pipeline` (pipeline_figures)."""
    real = calibration.REAL
    out = []
    for label, name in enumerate(CLASS_NAMES):
        out.append([f"share of patches: {name}", _pct(truth.patch_shares[label]),
                    _pct(pipeline["patch_shares"][label]), _pct(real.patch_shares[label])])
    for label, name in enumerate(CLASS_NAMES):
        out.append([f"marks per series: {name}", f"{truth.marks_per_series[label]:.1f}",
                    f"{pipeline['marks_per_series'][label]:.1f}",
                    f"{real.marks_per_series[label]:.1f}"])
    for rating in calibration.TEXTURES:
        out.append([f"texture {rating} (of >= 3 mm readings)", _pct(truth.texture[rating]), "",
                    _pct(real.texture[rating])])
    for rating in calibration.CALCIFICATIONS:
        out.append([f"calcification {rating}", _pct(truth.calcification[rating]), "",
                    _pct(real.calcification[rating])])
    out.append(["lesions contoured (>= 3 mm) per series", f"{truth.nodule_lesions_per_series:.2f}",
                "", f"{real.nodule_lesions_per_series:.2f}"])
    out.append(["  of them contoured by all four readers", _pct(truth.all_four),
                _pct(pipeline["all_four"]), _pct(real.all_four)])
    for label in (NODULE, SMALL_NODULE, NON_NODULE):
        demo = pipeline["centre_edge"].get(label)
        known = calibration.REAL_CENTRE_EDGE_HU.get(label)
        out.append([f"HU centre / edge: {CLASS_NAMES[label]}", "",
                    "-" if demo is None else f"{demo[0]:.0f} / {demo[1]:.0f}",
                    "-" if known is None else f"{known[0]:.0f} / {known[1]:.0f}"])
    return out


def _pct(share):
    return f"{100 * share:.1f}%"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="data/LIDC-IDRI", help="the cohort (with its cohort.json)")
    p.add_argument("--work", help="the pipeline's work folder for that cohort (default: run "
                                  "index, annotations and crop into a temporary one)")
    args = p.parse_args(argv)
    entries = read_cohort(args.root)["patients"].values()
    truth = calibration.truth_figures(entries)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work
        if work is None:
            work = Path(tmp) / "work"
            run_pipeline(args.root, work)
        pipeline = pipeline_figures(work)
    print(f"Demo cohort {args.root}: {len(entries)} patients, beside the real LIDC-IDRI")
    print(bench.table(["figure", "demo (ground truth)", "demo (pipeline)", "real"],
                      rows(truth, pipeline)))
    print("Real HU: nodules >= 3 mm pooled over three patients (LIDC-IDRI-0003 alone: "
          "{:.0f} / {:.0f}); non-nodules LIDC-IDRI-0003; nodules < 3 mm barely stand out from "
          "lung.".format(*calibration.REAL_CENTRE_EDGE_HU_0003[NODULE]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
