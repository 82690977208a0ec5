"""lidc.lesions (placing marks on slices, grouping readers' marks) and lidc.patches (cropping)."""
import numpy as np
import pytest

from lidc import lesions
from lidc.patches import crop
from lidc.records import NODULE, NON_NODULE, OUTSIDE, SMALL_NODULE, UNMATCHED, Mark, Roi


def mark(reader, label, rois):
    return Mark(patient_id="p", series_uid="s", xml_file="f.xml", reader=reader,
                radiologist_id="", label=label, nodule_id="n", rois=rois)


def roi(z, sop, center, half=0):
    r, c = center
    if half == 0:
        pts = [(r, c)]
    else:
        pts = [(r - half, c - half), (r - half, c + half), (r + half, c + half),
               (r + half, c - half)]
    return Roi(z=z, sop_uid=sop, inclusion=True, points=np.array(pts, np.int32))


SOPS, Z = ["a", "b", "c", "d"], [0.0, 2.5, 5.0, 7.5]


def test_slice_found_by_sop_uid_first_then_by_z_within_half_thickness():
    by_uid, by_z, off, outside = (roi(99.0, "c", (5, 5)), roi(5.9, "zz", (5, 5)),
                                  roi(9.0, "zz", (5, 5)), roi(0.0, "a", (5, 500)))
    lesions.match_slices([mark("r:0", NODULE, [by_uid, by_z, off, outside])], SOPS, Z, 2.5,
                         shape=(128, 128))
    assert (by_uid.slice_index, by_uid.status) == (2, "")
    assert (by_z.slice_index, by_z.status) == (2, "")
    assert (off.slice_index, off.status) == (None, UNMATCHED)
    assert outside.status == OUTSIDE


def test_readers_marks_of_one_lesion_are_grouped_and_others_not():
    marks = [mark("r:0", NODULE, [roi(0.0, "a", (50, 50), 5), roi(2.5, "b", (50, 50), 5)]),
             mark("r:1", NODULE, [roi(2.5, "b", (52, 51), 4)]),
             mark("r:2", NON_NODULE, [roi(5.0, "c", (49, 53))]),         # adjacent slice
             mark("r:3", SMALL_NODULE, [roi(2.5, "b", (90, 90))]),        # far away in-plane
             mark("r:1", NODULE, [roi(40.0, "x", (50, 50), 5)])]          # far away in z
    assert lesions.cluster(marks, spacing=0.7, thickness=2.5) == [0, 0, 0, 1, 2]


def test_one_readers_two_marks_are_never_merged():
    marks = [mark("r:0", SMALL_NODULE, [roi(0.0, "a", (50, 50))]),
             mark("r:0", SMALL_NODULE, [roi(0.0, "a", (51, 50))])]
    assert lesions.cluster(marks) == [0, 1]


def test_crop_is_centred_rows_then_columns():
    image = np.arange(100 * 120, dtype=np.int16).reshape(100, 120)
    patch = crop(image, (40.4, 70.6), size=8)
    assert patch.shape == (8, 8)
    assert patch[4, 4] == image[40, 71]  # centre pixel at [size // 2, size // 2]
    np.testing.assert_array_equal(patch, image[36:44, 67:75])


@pytest.mark.parametrize("center", [(0, 0), (99, 119), (-3, 50), (50, 130)])
def test_crop_pads_with_air_at_the_edge(center):
    image = np.full((100, 120), 40, np.int16)
    patch = crop(image, center, size=64)
    assert patch.shape == (64, 64)
    inside = np.zeros((100 + 128, 120 + 128), bool)
    inside[64:164, 64:184] = True
    r, c = center[0] + 64, center[1] + 64
    expected = np.where(inside[r - 32:r + 32, c - 32:c + 32], 40, -1000)
    np.testing.assert_array_equal(patch, expected)


@pytest.mark.parametrize("center", [(60, 60), (2, 125), (-40, 60), (200, 200)])
@pytest.mark.parametrize("slope, intercept, padding", [(1, -1024, None), (0.5, -1024, -2000),
                                                       (1, 0, 32000)])
def test_converting_only_the_patch_gives_the_patch_of_the_converted_slice(center, slope,
                                                                          intercept, padding):
    from lidc.series import Stored
    rng = np.random.default_rng(0)
    pixels = rng.integers(-2000, 32767, (128, 128)).astype(np.int16)
    pixels[:, :20] = -2000  # the second case's padding value
    pixels[:10] = 32000  # the third case's padding value
    stored = Stored(pixels, float(slope), float(intercept), padding)
    expected = crop(stored.hu(), center, size=32)
    patch = crop(pixels, center, size=32, convert=stored.hu)
    assert patch.dtype == np.int16
    np.testing.assert_array_equal(patch, expected)
