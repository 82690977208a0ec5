"""The demo cohort stays calibrated to the real LIDC-IDRI (lidc.synthetic.calibration.REAL).

One block of 12 patients (the demo's size) is drawn in memory at 192 x 192 x 48, a quarter of
the demo's pixels, and measured on its own ground truth: class shares of patches, marks per
series, texture and calcification ratings, reader agreement, and the HU of crops as wide in
millimetres as the demo's 64x64 ones. A change to lesions, readers or the plan that moves a
figure off the collection's fails here. The tolerances are the issue's (5 points for class
shares and texture) or, where the real figure is itself loose (three patients' HU), wider.
"""
import numpy as np
import pytest

from bench import cohort_stats
from lidc.records import CLASS_NAMES, NODULE, NON_NODULE, SMALL_NODULE
from lidc.synthetic import calibration, make_patient, truth_entry, write_cohort
from lidc.synthetic.calibration import REAL, REAL_CENTRE_EDGE_HU

SIZE, SLICES, PATIENTS = 192, 48, 12
CROP = 64 * SIZE // 384  # as many millimetres as the demo's 64 pixels at 384


@pytest.fixture(scope="module")
def patients():
    return [make_patient(0, k, SIZE, SLICES) for k in range(1, PATIENTS + 1)]


@pytest.fixture(scope="module")
def figures(patients):
    return calibration.truth_figures(truth_entry(p, {}) for p in patients)


@pytest.fixture(scope="module")
def crops(patients):
    per_patient = [calibration.mark_patches(p, CROP) for p in patients]
    return {label: np.concatenate([c[label] for c in per_patient]) for label in range(3)}


def test_class_shares_of_patches_are_the_collections(figures):
    np.testing.assert_allclose(figures.patch_shares, REAL.patch_shares, atol=0.05)


def test_marks_per_series_are_the_collections(figures):
    np.testing.assert_allclose(figures.marks_per_series, REAL.marks_per_series, rtol=0.25)


def test_texture_mix_is_the_collections(figures):
    for rating, share in REAL.texture.items():
        assert figures.texture[rating] == pytest.approx(share, abs=0.05), rating


def test_calcification_mix_is_the_collections(figures):
    for rating, share in REAL.calcification.items():
        assert figures.calcification[rating] == pytest.approx(share, abs=0.05), rating


def test_a_third_of_nodules_are_contoured_by_all_four_readers(figures):
    assert figures.nodule_lesions_per_series == pytest.approx(REAL.nodule_lesions_per_series,
                                                              rel=0.25)
    assert figures.all_four == pytest.approx(REAL.all_four, abs=0.12)


def test_readers_disagree_as_lidcs_did(patients):
    """Some lesion of each kind gets two different calls from two readers."""
    mixed = set()
    for patient in patients:
        calls = {}
        for read in patient.reads:
            for mark in read:
                calls.setdefault(mark.lesion_id, set()).add(mark.label)
        for i, labels in calls.items():
            kind = patient.lesions[i].kind
            mixed |= {(kind, label) for label in labels if label != kind and len(labels) > 1}
    assert {(NODULE, SMALL_NODULE), (NODULE, NON_NODULE), (SMALL_NODULE, NON_NODULE)} <= mixed


def test_nodule_crops_are_denser_at_the_centre_as_real_ones(crops):
    centre, edge = calibration.centre_and_edge(crops[NODULE])
    real_centre, real_edge = REAL_CENTRE_EDGE_HU[NODULE]
    assert centre == pytest.approx(real_centre, abs=100)
    assert centre - edge > 50  # real: 66 HU pooled, 161 in LIDC-IDRI-0003


def test_non_nodule_crops_are_as_dense_as_real_ones(crops):
    centre, edge = calibration.centre_and_edge(crops[NON_NODULE])
    real_centre, real_edge = REAL_CENTRE_EDGE_HU[NON_NODULE]
    assert centre == pytest.approx(real_centre, abs=100)
    assert edge == pytest.approx(real_edge, abs=100)


def test_small_nodules_barely_stand_out_from_lung(crops):
    centre, _ = calibration.centre_and_edge(crops[SMALL_NODULE])
    peak = crops[SMALL_NODULE][:, CROP // 2 - 1:CROP // 2 + 1, CROP // 2 - 1:CROP // 2 + 1]
    assert -850 < centre < -700
    assert np.median(peak) < -400  # a faint dot, not a nodule


def test_the_bench_prints_every_figure_beside_the_real_one(tmp_path, capsys):
    write_cohort(tmp_path, patients=2, size=64, slices=8)
    assert cohort_stats.main(["--root", str(tmp_path)]) == 0  # runs the pipeline itself
    out = capsys.readouterr().out
    for name in CLASS_NAMES:
        assert f"share of patches: {name}" in out and f"HU centre / edge: {name}" in out
    share = f"{100 * REAL.patch_shares[NODULE]:.1f}%"
    assert share in out and "contoured by all four readers" in out
