"""lidc.dataset and lidc.splits: units, consensus, splits, subsets, windowing."""
import numpy as np
import pytest

from lidc import dataset as ds, splits
from lidc.records import NODULE, NON_NODULE, SMALL_NODULE
from lidc.windows import TRAINING


def patients(n=15, seed=0):
    counts = np.random.default_rng(seed).integers(5, 60, n)
    return np.repeat([f"LIDC-IDRI-{i:04d}" for i in range(n)], counts)


def labels_of(ids, seed=0):
    """Imbalanced classes (54/17/29%, the real collection's shares) drawn per patch."""
    return np.random.default_rng(seed).choice(3, size=len(ids), p=[0.54, 0.17, 0.29])


@pytest.mark.parametrize("seed", range(5))
def test_patient_split_never_shares_a_patient(seed):
    ids = patients(seed=seed)
    sides, warning = splits.by_patient(ids, labels_of(ids, seed), 0.3, 0.15, seed)
    owners = {}
    for pid, side in zip(ids, sides):
        assert owners.setdefault(pid, side) == side
    assert set(sides) == set(splits.SIDES) and warning is None
    assert 0.15 < np.mean(sides == "test") < 0.45


@pytest.mark.parametrize("seed", range(3))
def test_patient_split_gives_each_side_its_share_of_every_class(seed):
    ids = patients(n=40, seed=seed)
    labels = labels_of(ids, seed)
    sides, _ = splits.by_patient(ids, labels, 0.3, 0.15, seed)
    for c in range(3):
        test_share = np.mean(sides[labels == c] == "test")
        assert 0.2 < test_share < 0.4, (c, test_share)
    val_patients = len(set(ids[sides == "val"]))
    assert val_patients >= max(2, np.ceil(0.15 * 40))


def test_a_cohort_of_ten_patients_validates_on_at_least_two():
    ids = patients(n=10, seed=1)
    sides, warning = splits.by_patient(ids, labels_of(ids), 0.3, 0.15, 0)
    assert warning is None
    assert len(set(ids[sides == "val"])) >= 2 and len(set(ids[sides == "test"])) >= 2


def test_a_small_cohort_keeps_the_simple_split_and_says_so():
    ids = patients(n=6, seed=2)
    sides, warning = splits.by_patient(ids, labels_of(ids), 0.3, 0.15, 0)
    assert "6 patients are fewer than 10" in warning
    assert set(sides) == set(splits.SIDES)


def test_patient_split_is_fixed_by_the_seed():
    ids = patients()
    labels = labels_of(ids)
    first, _ = splits.by_patient(ids, labels, 0.3, 0.15, 3)
    np.testing.assert_array_equal(first, splits.by_patient(ids, labels, 0.3, 0.15, 3)[0])
    assert (first != splits.by_patient(ids, labels, 0.3, 0.15, 4)[0]).any()


def test_slice_units_merge_the_readers_of_a_lesion_on_a_slice():
    # Lesion 7 on slice 3: readers a, b say nodule >= 3 mm, c says non-nodule; on slice 4 a and
    # c split evenly (nodule >= 3 mm wins the tie). Lesion 8: one reader's point.
    table = {"lesion_id": np.array([7, 7, 7, 7, 7, 8]),
             "slice_index": np.array([3, 3, 3, 4, 4, 3]),
             "label": np.array([NODULE, NODULE, NON_NODULE, NON_NODULE, NODULE, SMALL_NODULE]),
             "reader": np.array(["a", "b", "c", "c", "a", "d"]),
             "row": np.array([10.0, 12.0, 11.0, 20.0, 30.0, 5.0]),
             "col": np.array([10.0, 10.0, 13.0, 20.0, 30.0, 5.0])}
    rows, labels, readers = ds.slice_units(table)
    # Slice 3's centre is (11, 11): patch 1 (12, 10) and patch 0 (10, 10) are equally near; the
    # first wins. Slice 4's only nodule patch is 4.
    assert rows.tolist() == [0, 4, 5]
    assert labels.tolist() == [NODULE, NODULE, SMALL_NODULE]
    assert readers.tolist() == [3, 2, 1]


def test_min_readers_counts_readers_per_class_not_per_lesion():
    lesions = np.array([1, 1, 1, 1, 2, 2])
    labels = np.array([NODULE, NODULE, NODULE, NON_NODULE, NODULE, NODULE])
    readers = np.array(["a", "b", "c", "d", "a", "a"])  # lesion 2: one reader, two slices
    assert ds.marked_by(lesions, labels, readers, 3).tolist() == [True, True, True, False,
                                                                  False, False]
    assert ds.marked_by(lesions, labels, readers, 1).all()


def test_random_split_shares():
    sides = splits.by_patch(1000, 0.3, 0.1, 0)
    assert (sides == "test").sum() == 300 and (sides == "val").sum() == 70


def test_stratified_subset_keeps_proportions_and_size():
    labels = np.array([0] * 700 + [1] * 200 + [2] * 100)
    idx = ds.stratified_indices(labels, 100, seed=1)
    assert len(idx) == len(set(idx)) == 100
    assert np.bincount(labels[idx]).tolist() == [70, 20, 10]


def test_undersample_equalises_classes():
    labels = np.array([0] * 50 + [1] * 7 + [2] * 20)
    assert np.bincount(labels[ds.undersample(labels, 0)]).tolist() == [7, 7, 7]


def test_window_and_arrays():
    hu = np.array([[-2000, -1000], [-300, 1000]], np.int16)
    np.testing.assert_allclose(TRAINING.to_unit(hu), [[0, 0], [0.5, 1]])
    patches = np.stack([hu, hu + 100])
    units = {"patch_index": np.array([1, 0]), "label": np.array([2, 0]),
             "patient_id": np.array(["a", "b"])}
    out = ds.arrays(patches, units, [1, 0])
    assert out["x"].shape == (2, 2, 2, 1) and out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"][0, ..., 0], TRAINING.to_unit(hu + 100))
    assert out["y"].tolist() == [[0, 0, 1], [1, 0, 0]]
    assert out["patch_index"].tolist() == [1, 0] and out["patient_id"].tolist() == ["a", "b"]
