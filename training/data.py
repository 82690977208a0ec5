"""The dataset stage's arrays, read for training and evaluation.

`WORK/dataset/{train,val,test}.npz` hold `x` (N, 64, 64, 1) float32 in [0, 1], `y` (N, 3)
one-hot float32, `label` (N,) int, and per-patch columns (`patient_id`, `patch_index`,
`lesion_id`, `mark_id`, `readers`); see lidc/stages/dataset.py.
"""
import zipfile
from pathlib import Path

import numpy as np

from lidc import manifest
from lidc.dataset import stratified_indices
from lidc.errors import LidcError
from lidc.stages.dataset import MANIFEST as DATASET_MANIFEST


class Split:
    """One split's arrays: x (images), y (one-hot), label (int classes), the other per-patch
    columns the dataset stage wrote (patient_id, lesion_id, patch_index, ... by name), and the
    file it came from."""

    def __init__(self, x, y, label, path, columns=None):
        self.x = x
        self.y = y
        self.label = label
        self.path = path
        self.columns = columns or {}

    def __len__(self):
        return len(self.x)

    def subset(self, rows):
        """The Split of the given rows."""
        return Split(self.x[rows], self.y[rows], self.label[rows], self.path,
                     {name: values[rows] for name, values in self.columns.items()})


def load(dataset_dir, split):
    """Reads `dataset_dir/split.npz`.

    Raises:
      LidcError: the file is missing, unreadable, empty, not part of the dataset stage's set,
        lacks x/y, or holds numbers that are not finite.
    """
    path = Path(dataset_dir) / f"{split}.npz"
    if not path.is_file():
        raise LidcError(path, "missing; run the dataset stage first (python -m tools.dataset)")
    manifest.check(dataset_dir, DATASET_MANIFEST, [path.name], "dataset")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x = np.asarray(arrays["x"], np.float32)
            y = np.asarray(arrays["y"], np.float32)
            label = np.asarray(arrays["label"] if "label" in arrays else y.argmax(1), np.int64)
            columns = {name: arrays[name] for name in arrays.files
                       if name not in ("x", "y", "label")}
    except KeyError as e:
        raise LidcError(path, f"has no array {e}; run the dataset stage again") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise LidcError(path, f"unreadable ({e}); run the dataset stage again") from None
    if x.ndim != 4 or len(x) != len(y) or len(x) != len(label):
        raise LidcError(path, f"x {x.shape}, y {y.shape} do not describe NHWC images and "
                              "their one-hot labels")
    if len(x) == 0:
        raise LidcError(path, "holds no patches")
    if not np.isfinite(x).all():
        raise LidcError(path, "holds values that are not finite numbers; run the dataset stage "
                              "again")
    return Split(x, y, label, path, columns)


def dataset_digest(dataset_dir):
    """The digest of the dataset stage's set of files (lidc.manifest): a run records it, so
    that a run is never resumed or reused on another dataset."""
    content = manifest.read(dataset_dir, DATASET_MANIFEST)
    return manifest.digest(content) if content is not None else None


def stratified_subset(split, size, seed):
    """`size` rows of `split` with its class proportions (lidc.dataset.stratified_indices).

    Raises:
      LidcError: size is not between 1 and the number of rows.
    """
    if not 0 < size <= len(split):
        raise LidcError(split.path, f"--train-size {size} is not between 1 and the "
                                    f"{len(split)} patches of the training set")
    return split.subset(stratified_indices(split.label, size, seed))
