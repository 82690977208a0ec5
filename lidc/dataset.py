"""Train/val/test sets of labelled patches, split by patient, windowed to [0, 1].

The dataset stage's arrays: `x` float32 NHWC in [0, 1] (HU through lidc.windows.TRAINING),
`y` one-hot float32 in the label order
of ARCHITECTURE.md, `label` int, `patient_id` str, `patch_index` int (the row in patches.npy).
"""
import numpy as np

from lidc.records import NUM_CLASSES
from lidc.windows import TRAINING


def stratified_indices(labels, n, seed):
    """Draws `n` distinct indices of `labels`, keeping the class proportions.

    Each class gets its share of `n` by largest remainder, so the counts add up to exactly `n`
    and every class present keeps at least one row when n allows. Deterministic for a seed.

    Args:
      labels: 1-D int array of class indices.
      n: how many rows to draw; at most len(labels).
      seed: fixes the draw.
    Returns:
      sorted int64 array of `n` indices.
    """
    labels = np.asarray(labels)
    if not 0 < n <= len(labels):
        raise ValueError(f"cannot draw {n} of {len(labels)} rows")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    share = np.floor(exact).astype(int)
    if n >= len(classes):
        share = np.maximum(share, 1)
    while share.sum() > n:
        share[np.argmax(share)] -= 1
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    for i in order[: n - share.sum()]:
        share[i] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
             for c, k in zip(classes, share)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


SIDES = ("train", "val", "test")


def split_by_patient(patient_ids, test_share, val_share, seed):
    """Assigns every patch to train/val/test so that no patient is on two sides.

    Patients are shuffled by the seed and taken whole into test until it holds `test_share` of
    the patches, then into val until it holds `val_share` of the rest; the others train.
    Returns an array of side names, one per patch.
    """
    patient_ids = np.asarray(patient_ids)
    patients, counts = np.unique(patient_ids, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(patients))
    total = counts.sum()
    targets = {"test": test_share * total, "val": val_share * (1 - test_share) * total}
    side_of, filled = {}, {"test": 0, "val": 0}
    for i in order:
        side_of[patients[i]] = _side_for(counts[i], filled, targets)
        if side_of[patients[i]] != "train":
            filled[side_of[patients[i]]] += counts[i]
    return np.array([side_of[p] for p in patient_ids])


def _side_for(count, filled, targets):
    """The first of test, val still short of its target that this patient does not overshoot
    by more than half its own patches (an empty side takes anyone); else train."""
    for side in ("test", "val"):
        short = filled[side] < targets[side]
        fits = filled[side] == 0 or filled[side] + count / 2 <= targets[side]
        if short and fits:
            return side
    return "train"


def split_random(n, test_share, val_share, seed):
    """The paper's per-crop split: every patch drawn independently of its patient."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = int(round(test_share * n))
    n_val = int(round(val_share * (n - n_test)))
    sides = np.full(n, "train", dtype=object)
    sides[order[:n_test]] = "test"
    sides[order[n_test:n_test + n_val]] = "val"
    return sides.astype(str)


def undersample(labels, seed):
    """Indices keeping every class at the size of the rarest one (present classes only)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), size=counts.min(), replace=False)
            for c in classes]
    return np.sort(np.concatenate(keep))


def one_hot(labels, num_classes=NUM_CLASSES):
    """[N, num_classes] float32 one-hot rows of int labels."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]


def arrays(patches, index, labels, patient_ids, **extra):
    """The arrays of one side: windowed patches with a channel axis, one-hot labels, ids.

    Args:
      patches: the crop stage's (N, S, S) int16 HU array (may be memory-mapped).
      index: the rows of this side.
      labels, patient_ids, **extra: per-patch arrays of length N.
    """
    index = np.sort(np.asarray(index, np.int64))
    return {"x": TRAINING.to_unit(patches[index])[..., None], "y": one_hot(labels[index]),
            "label": labels[index].astype(np.int64),
            "patient_id": patient_ids[index].astype(str), "patch_index": index,
            **{k: v[index] for k, v in extra.items()}}
