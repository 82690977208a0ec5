"""The parts of lidc.synthetic one by one: geometry, plan, lesions, readers, the writers.

Each test builds its own small input (a few patients of 64-192 pixels, or a hand-made read)
and checks one property that the cohort relies on.
"""
import numpy as np
import pytest

from lidc import reads
from lidc.records import NODULE, NON_NODULE, SMALL_NODULE, Mark, Roi
from lidc.synthetic import STORAGE, calibration, make_patient, stored_values, truth_entry
from lidc.synthetic.geometry import Geometry, Segment, tube
from lidc.synthetic.lesions import Room
from lidc.synthetic.plan import (NODULE_FORMS, NODULES_PER_PATIENT, PATIENTS_PER_BLOCK,
                                 balanced, diameter_mm, lesion_plan)
from lidc.synthetic.readers import Ratings, rating_at
from lidc.synthetic.xml_writer import (ReadHeader, ReadingSession, ReadMessage,
                                       lidc_read_message)


def geometry(size=64, slices=8, spacing=1.0, thickness=2.5):
    return Geometry(size=size, spacing=spacing, thickness=thickness,
                    z=-100.0 + thickness * np.arange(slices), origin=(0.0, 0.0))


# ---------------------------------------------------------------------------- geometry


def test_a_tube_thinner_than_a_pixel_is_fainter():
    """Partial volume: a vessel half a pixel wide fills its pixels only in part."""
    geo = geometry(spacing=1.0)
    peaks = []
    for radius in (0.25, 2.0):
        field = np.zeros(geo.shape, np.float32)
        tube(field, geo, Segment(np.array([10.0, 20.0, 10.0]), np.array([10.0, 20.0, 50.0]),
                                 radius))
        peaks.append(field.max())
    assert peaks[0] < 0.6 < peaks[1] == pytest.approx(1.0)


def test_a_tube_outside_the_volume_draws_nothing():
    geo = geometry()
    field = np.zeros(geo.shape, np.float32)
    tube(field, geo, Segment(np.array([500.0, 500.0, 500.0]), np.array([600.0, 600.0, 600.0]),
                             2.0))
    assert not field.any()


# ---------------------------------------------------------------------------- plan


def test_a_block_of_patients_has_the_planned_mix_of_nodules():
    specs = [s for k in range(1, PATIENTS_PER_BLOCK + 1) for s in lesion_plan(0, k).nodules]
    assert len(specs) == sum(NODULES_PER_PATIENT)
    forms = [s.form for s in specs]
    assert sorted(forms) == sorted(balanced(NODULE_FORMS, len(specs)))
    assert all(3.0 <= s.diameter_mm <= 35.0 for s in specs)


def test_a_patients_plan_depends_only_on_seed_and_number():
    assert lesion_plan(3, 5) == lesion_plan(3, 5)
    assert lesion_plan(3, 5) != lesion_plan(4, 5)
    assert lesion_plan(3, 5) != lesion_plan(3, 17)  # same place, next block


def test_balanced_rounds_by_largest_remainder():
    assert balanced({"a": 0.5, "b": 0.3, "c": 0.2}, 4) == ["a", "a", "b", "c"]
    assert len(balanced(NODULE_FORMS, 26)) == 26


def test_diameters_rise_with_the_quantile_from_small_solid_nodules():
    diameters = [diameter_mm("solid", q) for q in np.linspace(0.01, 0.99, 30)]
    assert diameters == sorted(diameters)
    assert diameters[0] < 5.0 and diameters[-1] > 20.0


# ---------------------------------------------------------------------------- lesions


def test_a_lesion_site_keeps_its_distance_from_the_wall_and_other_lesions():
    geo = geometry(size=64, slices=12)
    lung = np.zeros(geo.shape, bool)
    lung[:, 8:56, 8:56] = True
    room = Room.of(geo, lung)
    room.free[:, :, :32] = False  # taken by an earlier lesion
    rng = np.random.default_rng(0)
    for _ in range(20):
        z, y, x = room.pick(rng, 6.0, z_mm=5.0)
        assert x >= 32 and room.wall_mm[z, y, x] >= 6.0 and 2 <= z <= 9
    assert room.pick(rng, 30.0) is None  # no voxel lies 30 mm inside a 48 mm square


@pytest.mark.parametrize("size,slices", [(64, 8), (128, 16)])
def test_small_cohorts_have_all_three_classes(size, slices):
    entries = [truth_entry(make_patient(0, k, size, slices), {}) for k in range(1, 5)]
    for label in range(3):
        assert sum(e["patches_expected"][str(label)] for e in entries) > 0, label


# ---------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def patient():
    return make_patient(1, 2, 128, 24)


def test_marks_lie_on_their_slices_and_name_their_lesion(patient):
    sops = patient.uids.sop
    for j, read in enumerate(patient.reads):
        labels = [m.label for m in read]
        assert labels == sorted(labels, key=lambda label: label == NON_NODULE), "nodules first"
        for mark in read:
            assert mark.reader == f"{patient.xml_name[:-4]}:{j}"
            assert 0 <= mark.lesion_id < len(patient.lesions)
            for roi in mark.rois:
                assert roi.sop_uid == sops[roi.slice_index]
                assert roi.z == patient.geometry.z[roi.slice_index]
    marked = {m.lesion_id for read in patient.reads for m in read}
    assert marked == set(range(len(patient.lesions))), "every lesion has a reader"


def test_ratings_spread_evenly_over_their_distribution():
    shares = {5: 0.85, 4: 0.15}
    ratings = Ratings(start=0.37)
    drawn = [rating_at(shares, ratings.next("solid")) for _ in range(40)]
    assert drawn.count(4) in (5, 6, 7)  # 15% of 40, give or take one
    assert ratings.taken == {"solid": 40}


# ---------------------------------------------------------------------------- writers


def test_stored_values_give_back_the_hu_in_every_storage():
    hu = np.array([-1024.0, -850.3, 0.0, 40.0, 1500.0])
    for storage in STORAGE:
        back = stored_values(hu, storage) * storage.slope + storage.intercept
        np.testing.assert_allclose(back, hu, atol=storage.slope / 2 + 1e-6)


def marks():
    contour = np.array([[30, 40], [30, 41], [31, 41], [31, 40], [30, 40]])
    return [Mark(patient_id="", series_uid="s", xml_file="", reader="", radiologist_id="r",
                 label=NODULE, nodule_id="Nodule 001",
                 rois=[Roi(z=-10.5, sop_uid="1.2.3", inclusion=True, points=contour),
                       Roi(z=-10.5, sop_uid="1.2.3", inclusion=False, points=contour[:3])],
                 characteristics={"texture": 5, "malignancy": 3}),
            Mark(patient_id="", series_uid="s", xml_file="", reader="", radiologist_id="r",
                 label=SMALL_NODULE, nodule_id="7", characteristics={},
                 rois=[Roi(z=-13.0, sop_uid="1.2.4", inclusion=True, points=np.array([[5, 6]]))]),
            Mark(patient_id="", series_uid="s", xml_file="", reader="", radiologist_id="r",
                 label=NON_NODULE, nodule_id="_Non-nodule 001", characteristics={},
                 rois=[Roi(z=-15.5, sop_uid="1.2.5", inclusion=True, points=np.array([[9, 8]]))])]


@pytest.mark.parametrize("namespace", [True, False])
@pytest.mark.parametrize("z_format", ["fixed", "fixed space", "short"])
def test_what_the_xml_writer_writes_lidc_reads_reads_back(tmp_path, namespace, z_format):
    message = ReadMessage(uid="1.2.3.0", header=ReadHeader("s", "t"), namespace=namespace,
                          schema_location=namespace,
                          sessions=[ReadingSession("r", marks(), z_format),
                                    ReadingSession("q", [])])
    path = tmp_path / "001.xml"
    path.write_bytes(lidc_read_message(message))
    read = reads.parse_read(path)
    assert (read.series_uid, read.study_uid, len(read.sessions)) == ("s", "t", 2)
    for written, parsed in zip(marks(), read.marks):
        assert (parsed.label, parsed.nodule_id, parsed.characteristics) == \
            (written.label, written.nodule_id, written.characteristics)
        for a, b in zip(written.rois, parsed.rois):
            assert (b.z, b.sop_uid, b.inclusion) == (a.z, a.sop_uid, a.inclusion)
            np.testing.assert_array_equal(b.points, a.points)


def test_crops_of_an_in_memory_patient_are_the_marks_patches(patient):
    crops = calibration.mark_patches(patient, size=32)
    expected = truth_entry(patient, {})["patches_expected"]
    assert {label: len(c) for label, c in crops.items()} == \
        {label: expected[str(label)] for label in range(3)}
    assert all(c.shape[1:] == (32, 32) for c in crops.values())
