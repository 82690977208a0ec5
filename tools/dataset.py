"""Stage 4, dataset: train/val/test sets of windowed, one-hot labelled patches, split by patient.

Reads WORK/patches/, splits by patient (no patient's slices on two sides; `--split random` is the
paper's per-crop split, which leaks slices of one nodule across sides), windows HU to [0, 1]
over [-1000, 400] HU, adds the channel axis, one-hots the labels, and writes
WORK/dataset/{train,val,test}.npz (x, y, label, patient_id, patch_index, lesion_id, mark_id),
WORK/dataset/split.csv (each patient's side) and WORK/dataset/summary.json.

    python -m tools.dataset --work data/work [--split patient|random] [--max-train N]
"""
import numpy as np

from lidc import dataset as ds
from lidc.errors import LidcError
from lidc.io import read_csv, save_npz, write_csv, write_json
from lidc.records import CLASS_NAMES, NUM_CLASSES
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "work", "seed")
    p.add_argument("--split", choices=["patient", "random"], default="patient",
                   help="patient: no patient on two sides; random: the paper's per-crop split")
    p.add_argument("--test-share", type=float, default=0.3,
                   help="share of all patches in test (the paper's 70/30)")
    p.add_argument("--val-share", type=float, default=0.15,
                   help="share of the training side carved out for validation")
    p.add_argument("--max-train", type=int, metavar="N",
                   help="keep a stratified subset of N training patches (comparison by size)")
    p.add_argument("--balance", choices=["none", "undersample"], default="none",
                   help="undersample: equalise the classes in train (val and test untouched)")
    return p


def load_patches(work):
    out = work / "patches"
    if not (out / "patches.npy").exists() or not (out / "patches.csv").exists():
        raise LidcError(out, "no patches here: run the crop stage first (tools/crop.sh)")
    patches = np.load(out / "patches.npy", mmap_mode="r")
    rows = read_csv(out / "patches.csv")
    if len(rows) != len(patches):
        raise LidcError(out / "patches.csv", f"{len(rows)} rows for {len(patches)} patches: "
                                             "run the crop stage again")
    if not rows:
        raise LidcError(out / "patches.csv", "no patches to split")
    return patches, rows


def choose_sides(args, patient_ids):
    if args.split == "random":
        return ds.split_random(len(patient_ids), args.test_share, args.val_share, args.seed)
    sides = ds.split_by_patient(patient_ids, args.test_share, args.val_share, args.seed)
    missing = [s for s in ds.SIDES if not (sides == s).any()]
    if missing:
        raise LidcError(None, f"{len(set(patient_ids))} patients are too few for a patient "
                              f"split (empty: {', '.join(missing)}); add patients or use "
                              "--split random")
    return sides


def train_rows(args, train, labels):
    """The training side after --balance and --max-train."""
    if args.balance == "undersample":
        train = train[ds.undersample(labels[train], args.seed)]
    if args.max_train:
        if args.max_train > len(train):
            raise LidcError(None, f"--max-train {args.max_train} exceeds the {len(train)} "
                                  "training patches")
        train = train[ds.stratified_indices(labels[train], args.max_train, args.seed)]
    return train


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.work_lock(args.work):
        return run(args)


def run(args):
    patches, rows = load_patches(args.work)
    labels = np.array([int(r["label"]) for r in rows], np.int64)
    patient_ids = np.array([r["patient_id"] for r in rows])
    extra = {"lesion_id": np.array([int(r["lesion_id"]) for r in rows], np.int64),
             "mark_id": np.array([int(r["mark_id"]) for r in rows], np.int64)}
    sides = choose_sides(args, patient_ids)
    index = {s: np.flatnonzero(sides == s) for s in ds.SIDES}
    index["train"] = train_rows(args, index["train"], labels)
    out = args.work / "dataset"
    table = {}
    for side in ds.SIDES:
        save_npz(out / f"{side}.npz", **ds.arrays(patches, index[side], labels, patient_ids,
                                                  **extra))
        table[side] = np.bincount(labels[index[side]], minlength=NUM_CLASSES).tolist()
    write_csv(out / "split.csv",
              [{"patient_id": p, "side": sides[patient_ids == p][0],
                "patches": int((patient_ids == p).sum())} for p in np.unique(patient_ids)],
              ["patient_id", "side", "patches"])
    write_json(out / "summary.json", {"options": {k: str(v) for k, v in vars(args).items()},
                                      "class_names": CLASS_NAMES, "counts": table,
                                      "hu_window": ds.HU_WINDOW})
    counts = {f"{side} ({len(set(patient_ids[index[side]]))} patients)":
              f"{len(index[side])} patches: " + ", ".join(
                  f"{n} {CLASS_NAMES[k]}" for k, n in enumerate(table[side]))
              for side in ds.SIDES}
    counts["patches not used"] = len(rows) - sum(len(i) for i in index.values())
    cli.summary(f"dataset ({args.split} split): {out}/{{train,val,test}}.npz", counts)
    return 0


if __name__ == "__main__":
    cli.run(main)
