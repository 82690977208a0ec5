"""Train/val/test sets of labelled patches, split by patient, windowed to [0, 1].

The dataset stage's arrays: `x` float32 NHWC in [0, 1] (HU through lidc.windows.TRAINING),
`y` one-hot float32 in the label order
of ARCHITECTURE.md, `label` int, `patient_id` str, `patch_index` int (the row in patches.npy).
"""
import numpy as np

from lidc.records import NODULE, NON_NODULE, NUM_CLASSES, SMALL_NODULE
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


# When the readers of one lesion on one slice split evenly between classes, the patch takes the
# larger finding: a nodule >= 3 mm before a non-nodule >= 3 mm before a nodule < 3 mm.
TIE_ORDER = (NODULE, NON_NODULE, SMALL_NODULE)


def marked_by(lesion_ids, labels, readers, minimum):
    """Which patches belong to a (lesion, class) that at least `minimum` readers marked as that
    class (pylidc's consensus level; LUNA16 used 3 of 4 for nodules >= 3 mm): a bool per patch.
    Readers are counted per class, not per lesion."""
    keys = list(zip(lesion_ids.tolist(), labels.tolist()))
    marked = {}
    for key, reader in zip(keys, readers):
        marked.setdefault(key, set()).add(reader)
    return np.array([len(marked[key]) >= minimum for key in keys], bool)


def slice_units(table):
    """One patch per lesion per slice: the readers' marks of one lesion on one slice become one
    unit, labelled by the readers' majority (ties: TIE_ORDER), shown by the patch of that class
    whose centre is nearest the readers' mean centre on the slice.

    Args:
      table: dict of per-patch arrays: lesion_id, slice_index, label, reader, row, col.
    Returns:
      (rows, labels, readers): the chosen patch of each unit (indices into the table, sorted),
      the unit's label, and how many readers marked the lesion on that slice.
    """
    groups = {}
    for i, key in enumerate(zip(table["lesion_id"].tolist(), table["slice_index"].tolist())):
        groups.setdefault(key, []).append(i)
    chosen = []
    for members in groups.values():
        members = np.array(members)
        votes = {}
        for i in members:
            votes.setdefault(int(table["label"][i]), set()).add(table["reader"][i])
        label = max(votes, key=lambda c: (len(votes[c]), -TIE_ORDER.index(c)))
        centre = np.array([table["row"][members].mean(), table["col"][members].mean()])
        of_label = members[table["label"][members] == label]
        distance = np.hypot(table["row"][of_label] - centre[0], table["col"][of_label] - centre[1])
        readers = len(set(table["reader"][members].tolist()))
        chosen.append((int(of_label[np.argmin(distance)]), label, readers))
    chosen.sort()
    rows, labels, readers = (np.array(column, np.int64) for column in zip(*chosen))
    return rows, labels, readers


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


def arrays(patches, units, rows):
    """The arrays of one side: windowed patches with a channel axis, one-hot labels, and every
    per-unit column.

    Args:
      patches: the crop stage's (N, S, S) int16 HU array (may be memory-mapped).
      units: dict of per-unit arrays, among them `patch_index` (the unit's row of `patches`),
        `label` and `patient_id`.
      rows: the units of this side.
    """
    rows = np.sort(np.asarray(rows, np.int64))
    columns = {name: values[rows] for name, values in units.items()}
    return {"x": TRAINING.to_unit(patches[columns["patch_index"]])[..., None],
            "y": one_hot(columns["label"]), **columns,
            "label": columns["label"].astype(np.int64),
            "patient_id": columns["patient_id"].astype(str)}
