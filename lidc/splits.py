"""Splitting patches into train, val and test: by patient (stratified by class), or per patch.

A patient's patches all go to one side, so that no slice of a nodule is seen in training and
tested. Patients are assigned by iterative stratification (Sechidis, Tsoumakas and Vlahavas,
"On the Stratification of Multi-Label Data", ECML PKDD 2011): the rarest class still to place
goes first, each of its patients to the side that most lacks that class, so every side gets
its share of every class, not only of patches. Cohorts of MIN_STRATIFIED patients or more give
the validation side at least max(2, 15% of the patients) and the test side at least 2; smaller
cohorts are filled in a seeded order until each side holds its share of patches, with a warning.

    sides, warning = by_patient(patient_ids, labels, test_share=0.3, val_share=0.15, seed=0)
"""
import math

import numpy as np

SIDES = ("train", "val", "test")
MIN_STRATIFIED = 10


def by_patient(patient_ids, labels, test_share, val_share, seed):
    """Assigns every patch to a side so that no patient is on two.

    Args:
      patient_ids, labels: one per patch.
      test_share: the share of all patches to test.
      val_share: the share of the rest to validation.
      seed: fixes every choice.
    Returns:
      (sides, warning): an array of side names, one per patch; a sentence when the cohort is too
      small for the stratified split, else None.
    """
    patient_ids, labels = np.asarray(patient_ids), np.asarray(labels, np.int64)
    patients, owner = np.unique(patient_ids, return_inverse=True)
    counts = np.zeros((len(patients), int(labels.max()) + 1))
    np.add.at(counts, (owner, labels), 1)
    shares = {"test": test_share, "val": val_share * (1 - test_share)}
    shares["train"] = 1 - shares["test"] - shares["val"]
    rng = np.random.default_rng(seed)
    if len(patients) < MIN_STRATIFIED:
        side_of = _in_order(counts.sum(axis=1), shares, rng)
        warning = (f"{len(patients)} patients are fewer than {MIN_STRATIFIED}: the split is by "
                   "patches, not stratified by class, and validation may hold one patient")
    else:
        side_of = _stratified(counts, shares, rng)
        _ensure_patients(side_of, counts, {"val": max(2, math.ceil(0.15 * len(patients))),
                                           "test": 2})
        warning = None
    return np.array([side_of[i] for i in owner]), warning


def _stratified(counts, shares, rng):
    """Iterative stratification of patients (rows of `counts`, patches per class) into sides."""
    desire = {s: shares[s] * counts.sum(axis=0) for s in SIDES}
    side_of = {}
    order = rng.permutation(len(counts))
    while len(side_of) < len(counts):
        left = [i for i in order if i not in side_of]
        remaining = counts[left].sum(axis=0)
        rarest = min((c for c in range(counts.shape[1]) if remaining[c] > 0),
                     key=lambda c: remaining[c])
        for i in (i for i in left if counts[i, rarest] > 0):
            side = max(SIDES, key=lambda s: (desire[s][rarest], desire[s].sum()))
            side_of[i] = side
            desire[side] -= counts[i]
    return side_of


def _ensure_patients(side_of, counts, minimum):
    """Moves the patients with fewest patches from train until each side has its minimum."""
    for side, needed in minimum.items():
        while sum(1 for s in side_of.values() if s == side) < needed:
            train = [i for i, s in side_of.items() if s == "train"]
            if len(train) <= 1:
                return
            side_of[min(train, key=lambda i: (counts[i].sum(), i))] = side


def _in_order(sizes, shares, rng):
    """Patients in a seeded order into test, then val, until each holds its share of patches
    (a patient goes where it overshoots by at most half its own patches; an empty side takes
    anyone); the others train."""
    total = sizes.sum()
    filled, side_of = {"test": 0, "val": 0}, {}
    for i in rng.permutation(len(sizes)):
        side_of[i] = "train"
        for side in ("test", "val"):
            target = shares[side] * total
            fits = filled[side] == 0 or filled[side] + sizes[i] / 2 <= target
            if filled[side] < target and fits:
                side_of[i] = side
                filled[side] += sizes[i]
                break
    return side_of


def by_patch(n, test_share, val_share, seed):
    """The paper's per-crop split: every patch drawn independently of its patient."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = int(round(test_share * n))
    n_val = int(round(val_share * (n - n_test)))
    sides = np.full(n, "train", dtype=object)
    sides[order[:n_test]] = "test"
    sides[order[n_test:n_test + n_val]] = "val"
    return sides.astype(str)
