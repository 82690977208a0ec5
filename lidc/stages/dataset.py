"""The dataset stage: train/val/test sets of windowed, one-hot labelled patches, split by patient.

Reads WORK/patches/, splits by patient (no patient's slices on two sides; split "random" is the
paper's per-crop split, which leaks slices of one nodule across sides), windows HU to [0, 1]
over the training window, adds the channel axis, one-hots the labels, and writes
WORK/dataset/{train,val,test}.npz (x, y, label, patient_id, patch_index, lesion_id, mark_id),
WORK/dataset/split.csv (each patient's side) and WORK/dataset/summary.json.

    result = run(Path("data/work"), DatasetOptions(split="patient", seed=0))
"""
from dataclasses import asdict, dataclass

import numpy as np

from lidc import dataset
from lidc import manifest
from lidc.errors import LidcError
from lidc.io import read_csv, save_npz, write_csv, write_json
from lidc.records import CLASS_NAMES, NUM_CLASSES
from lidc.stages import StageResult, crop
from lidc.windows import TRAINING


# The three sides and their record are committed as one set (lidc.manifest): a kill between two
# writes must not leave a train side from one split beside a test side from another.
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DatasetOptions:
    """How to split and subsample: the dataset command's options (see tools/dataset.py)."""
    seed: int = 0
    split: str = "patient"
    test_share: float = 0.3
    val_share: float = 0.15
    max_train: int | None = None
    balance: str = "none"


def load_patches(work):
    """The crop stage's patches (memory-mapped), their rows and the digest of their set.

    Raises:
      LidcError: no patches, or a patches.csv that does not match patches.npy.
    """
    out = work / "patches"
    if not (out / "patches.npy").exists() or not (out / "patches.csv").exists():
        raise LidcError(out, "no patches here: run the crop stage first (tools/crop.sh)")
    patch_set = manifest.check(out, crop.MANIFEST, ["patches.npy", "patches.csv"], "crop")
    patches = np.load(out / "patches.npy", mmap_mode="r")
    rows = read_csv(out / "patches.csv")
    if len(rows) != len(patches):
        raise LidcError(out / "patches.csv", f"{len(rows)} rows for {len(patches)} patches: "
                                             "run the crop stage again")
    if not rows:
        raise LidcError(out / "patches.csv", "no patches to split")
    return patches, rows, manifest.digest(patch_set)


def choose_sides(options, patient_ids):
    """The side (train, val or test) of every patch."""
    if options.split == "random":
        return dataset.split_random(len(patient_ids), options.test_share, options.val_share,
                                    options.seed)
    sides = dataset.split_by_patient(patient_ids, options.test_share, options.val_share,
                                     options.seed)
    missing = [s for s in dataset.SIDES if not (sides == s).any()]
    if missing:
        raise LidcError(None, f"{len(set(patient_ids))} patients are too few for a patient "
                              f"split (empty: {', '.join(missing)}); add patients or use "
                              "--split random")
    return sides


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
            for side in dataset.SIDES}


def run(work, options):
    """Splits WORK/patches/ into WORK/dataset/; returns the StageResult.

    Raises:
      LidcError: no patches, too few patients for a patient split, or too large a max_train.
    """
    patches, rows, patches_digest = load_patches(work)
    labels = np.array([int(r["label"]) for r in rows], np.int64)
    patient_ids = np.array([r["patient_id"] for r in rows])
    extra = {"lesion_id": np.array([int(r["lesion_id"]) for r in rows], np.int64),
             "mark_id": np.array([int(r["mark_id"]) for r in rows], np.int64)}
    sides = choose_sides(options, patient_ids)
    index = {s: np.flatnonzero(sides == s) for s in dataset.SIDES}
    index["train"] = train_rows(options, index["train"], labels)
    out = work / "dataset"
    table = {}
    with manifest.file_set(out, MANIFEST, "dataset", {"patches": patches_digest}) as files:
        for side in dataset.SIDES:
            save_npz(out / f"{side}.npz", **dataset.arrays(patches, index[side], labels,
                                                           patient_ids, **extra))
            table[side] = np.bincount(labels[index[side]], minlength=NUM_CLASSES).tolist()
        write_csv(out / "split.csv",
                  [{"patient_id": p, "side": sides[patient_ids == p][0],
                    "patches": int((patient_ids == p).sum())} for p in np.unique(patient_ids)],
                  ["patient_id", "side", "patches"])
        recorded = {k: str(v) for k, v in {**asdict(options), "work": work}.items()}
        write_json(out / "summary.json", {"options": recorded, "class_names": CLASS_NAMES,
                                          "counts": table,
                                          "hu_window": (TRAINING.low, TRAINING.high)})
        # summary.json describes the set for people (and names WORK); no stage reads it.
        files.extend([*(f"{side}.npz" for side in dataset.SIDES), "split.csv"])
    counts = _side_counts(table, index, patient_ids)
    counts["patches not used"] = len(rows) - sum(len(i) for i in index.values())
    return StageResult(f"dataset ({options.split} split): {out}/{{train,val,test}}.npz", counts)
