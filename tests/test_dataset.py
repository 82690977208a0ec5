"""lidc.dataset: splits, subsets, windowing."""
import numpy as np
import pytest

from lidc import dataset as ds
from lidc.windows import TRAINING


def patients(n=15, seed=0):
    counts = np.random.default_rng(seed).integers(5, 60, n)
    return np.repeat([f"LIDC-IDRI-{i:04d}" for i in range(n)], counts)


@pytest.mark.parametrize("seed", range(5))
def test_patient_split_never_shares_a_patient(seed):
    ids = patients(seed=seed)
    sides = ds.split_by_patient(ids, 0.3, 0.15, seed)
    owners = {}
    for pid, side in zip(ids, sides):
        assert owners.setdefault(pid, side) == side
    assert set(sides) == set(ds.SIDES)
    assert 0.15 < np.mean(sides == "test") < 0.45


def test_patient_split_is_fixed_by_the_seed():
    ids = patients()
    np.testing.assert_array_equal(ds.split_by_patient(ids, 0.3, 0.15, 3),
                                  ds.split_by_patient(ids, 0.3, 0.15, 3))
    assert (ds.split_by_patient(ids, 0.3, 0.15, 3) != ds.split_by_patient(ids, 0.3, 0.15, 4)).any()


def test_random_split_shares():
    sides = ds.split_random(1000, 0.3, 0.1, 0)
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
    out = ds.arrays(patches, [1, 0], np.array([2, 0]), np.array(["a", "b"]))
    assert out["x"].shape == (2, 2, 2, 1) and out["x"].dtype == np.float32
    assert out["y"].tolist() == [[0, 0, 1], [1, 0, 0]]
    assert out["patch_index"].tolist() == [0, 1] and out["patient_id"].tolist() == ["a", "b"]
