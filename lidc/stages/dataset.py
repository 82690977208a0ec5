"""The dataset stage: train/val/test sets of windowed, one-hot labelled patches, split by patient.

Reads WORK/patches/, makes the units a network sees (`unit` "slice": one patch per lesion per
slice, the readers' marks merged, labelled by their majority; "mark": one per reader mark per
slice, the paper's), keeps the lesions enough readers marked (`min_readers`), splits by patient
(stratified by class; no patient's slices on two sides; split "random" is the paper's per-crop
split, which leaks slices of one nodule across sides), windows HU to [0, 1] over the training
window, adds the channel axis, one-hots the labels, and writes WORK/dataset/{train,val,test}.npz
(x, y, label, readers and UNIT_COLUMNS), WORK/dataset/split.csv
(each patient's side) and WORK/dataset/summary.json.

    result = run(Path("data/work"), DatasetOptions(unit="slice", seed=0))
"""
from dataclasses import asdict, dataclass

import numpy as np

from lidc import dataset, manifest, splits
from lidc.errors import LidcError
from lidc.io import read_csv, save_npz, write_csv, write_json
from lidc.records import CLASS_NAMES, NUM_CLASSES
from lidc.stages import StageResult, annotations, crop
from lidc.windows import TRAINING

# The three sides and their record are committed as one set (lidc.manifest): a kill between two
# writes must not leave a train side from one split beside a test side from another.
MANIFEST = "manifest.json"
UNITS = ("slice", "mark")
# What each unit carries into the dataset's arrays besides its image, label and readers: where
# it comes from, for evaluation by lesion or patient and for galleries of patches.
UNIT_COLUMNS = ("patch_index", "patient_id", "series_uid", "slice_index", "lesion_id", "mark_id")


@dataclass(frozen=True)
class DatasetOptions:
    """How to make, split and subsample the units: the dataset command's options (see
    tools/dataset.py)."""
    seed: int = 0
    split: str = "patient"
    test_share: float = 0.3
    val_share: float = 0.15
    max_train: int | None = None
    balance: str = "none"
    unit: str = "slice"
    min_readers: int = 1


def load_patches(work):
    """The crop stage's patches (memory-mapped), their rows and the digest of their set.

    Raises:
      LidcError: no patches, or a patches.csv that does not match patches.npy.
    """
    out = work / "patches"
    if not (out / "patches.npy").exists() or not (out / "patches.csv").exists():
        raise LidcError(out, "no patches here: run the crop stage first (tools/crop.sh)")
    patch_set = manifest.check(out, crop.MANIFEST, ["patches.npy", "patches.csv"], "crop")
    marks_set = manifest.read(work, annotations.MANIFEST)
    if marks_set is not None:  # else patches copied without their annotations: nothing to compare
        manifest.check_inputs(patch_set, out / "patches.csv",
                              {"annotations": manifest.digest(marks_set)}, "crop")
    patches = np.load(out / "patches.npy", mmap_mode="r")
    rows = read_csv(out / "patches.csv")
    if len(rows) != len(patches):
        raise LidcError(out / "patches.csv", f"{len(rows)} rows for {len(patches)} patches: "
                                             "run the crop stage again")
    if not rows:
        raise LidcError(out / "patches.csv", "no patches to split")
    return patches, rows, manifest.digest(patch_set)


def make_units(rows, options):
    """The units of the dataset from the patch rows: a dict of per-unit arrays (patch_index,
    label, patient_id, lesion_id, mark_id, readers).

    Raises:
      LidcError: no patch is left after `min_readers`.
    """
    table = {"patch_index": np.arange(len(rows), dtype=np.int64),
             "label": np.array([int(r["label"]) for r in rows], np.int64),
             "patient_id": np.array([r["patient_id"] for r in rows]),
             "lesion_id": np.array([int(r["lesion_id"]) for r in rows], np.int64),
             "mark_id": np.array([int(r["mark_id"]) for r in rows], np.int64),
             "slice_index": np.array([int(r["slice_index"]) for r in rows], np.int64),
             "series_uid": np.array([r["series_uid"] for r in rows]),
             "reader": np.array([r["reader"] for r in rows]),
             "row": np.array([float(r["row"]) for r in rows]),
             "col": np.array([float(r["col"]) for r in rows])}
    if options.min_readers > 1:
        keep = dataset.marked_by(table["lesion_id"], table["label"], table["reader"],
                                 options.min_readers)
        table = {name: values[keep] for name, values in table.items()}
    if not len(table["label"]):
        raise LidcError(None, f"no lesion was marked by {options.min_readers} readers as one "
                              "class: lower --min-readers")
    if options.unit == "slice":
        chosen, labels, readers = dataset.slice_units(table)
        units = {name: table[name][chosen] for name in UNIT_COLUMNS}
        return {**units, "label": labels, "readers": readers}
    units = {name: table[name] for name in ("label", *UNIT_COLUMNS)}
    return {**units, "readers": np.ones(len(units["label"]), np.int64)}


def choose_sides(options, units):
    """The side (train, val or test) of every unit, and a warning about the split or None."""
    if options.split == "random":
        return splits.by_patch(len(units["label"]), options.test_share, options.val_share,
                               options.seed), None
    sides, warning = splits.by_patient(units["patient_id"], units["label"], options.test_share,
                                       options.val_share, options.seed)
    missing = [s for s in splits.SIDES if not (sides == s).any()]
    if missing:
        raise LidcError(None, f"{len(set(units['patient_id']))} patients are too few for a "
                              f"patient split (no patient left for {', '.join(missing)}); add "
                              "patients or use --split random")
    return sides, warning


def train_rows(options, train, labels):
    """The training side after `balance` and `max_train`."""
    if options.balance == "undersample":
        train = train[dataset.undersample(labels[train], options.seed)]
    if options.max_train:
        if options.max_train > len(train):
            raise LidcError(None, f"--max-train {options.max_train} exceeds the {len(train)} "
                                  "training patches")
        train = train[dataset.stratified_indices(labels[train], options.max_train,
                                                 options.seed)]
    return train


def _side_counts(table, index, patient_ids):
    return {f"{side} ({len(set(patient_ids[index[side]]))} patients)":
            f"{len(index[side])} patches: " + ", ".join(
                f"{n} {CLASS_NAMES[k]}" for k, n in enumerate(table[side]))
            for side in splits.SIDES}


def _write(out, patches, units, index, sides, record):
    """Writes the sides, split.csv and summary.json; returns the class counts by side."""
    table = {}
    patient_ids = units["patient_id"]
    for side in splits.SIDES:
        save_npz(out / f"{side}.npz", **dataset.arrays(patches, units, index[side]))
        table[side] = np.bincount(units["label"][index[side]], minlength=NUM_CLASSES).tolist()
    write_csv(out / "split.csv",
              [{"patient_id": p, "side": sides[patient_ids == p][0],
                "patches": int((patient_ids == p).sum())} for p in np.unique(patient_ids)],
              ["patient_id", "side", "patches"])
    write_json(out / "summary.json", {**record, "counts": table})
    return table


def run(work, options):
    """Splits WORK/patches/ into WORK/dataset/; returns the StageResult.

    Raises:
      LidcError: no patches, too few patients for a patient split, or too large a max_train.
    """
    patches, rows, patches_digest = load_patches(work)
    units = make_units(rows, options)
    sides, warning = choose_sides(options, units)
    index = {s: np.flatnonzero(sides == s) for s in splits.SIDES}
    index["train"] = train_rows(options, index["train"], units["label"])
    out = work / "dataset"
    record = {"options": {k: str(v) for k, v in {**asdict(options), "work": work}.items()},
              "class_names": CLASS_NAMES, "hu_window": (TRAINING.low, TRAINING.high),
              "warning": warning}
    with manifest.file_set(out, MANIFEST, "dataset", {"patches": patches_digest}) as files:
        table = _write(out, patches, units, index, sides, record)
        # summary.json describes the set for people (and names WORK); no stage reads it.
        files.extend([*(f"{side}.npz" for side in splits.SIDES), "split.csv"])
    counts = _side_counts(table, index, units["patient_id"])
    counts["units not used"] = len(units["label"]) - sum(len(i) for i in index.values())
    notes = [f"warning: {warning}"] if warning else []
    return StageResult(f"dataset ({options.split} split, one patch per {options.unit}): "
                       f"{out}/{{train,val,test}}.npz", counts, notes=notes)
