"""lidc.lesions (placing marks on slices, grouping readers' marks) and lidc.patches (cropping)."""
import numpy as np
import pytest

from lidc import lesions
from lidc.patches import crop
from lidc.records import (NODULE, NON_NODULE, OUTSIDE, SMALL_NODULE, STRAY, UNMATCHED,
                          Z_CONFLICT, Mark, Roi, region_shapes)


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
    by_uid, by_z, off, outside = (roi(6.2, "c", (5, 5)), roi(5.9, "zz", (5, 5)),
                                  roi(9.0, "zz", (5, 5)), roi(0.0, "a", (5, 500)))
    lesions.match_slices([mark("r:0", NODULE, [by_uid, by_z, off, outside])], SOPS, Z, 2.5,
                         shape=(128, 128))
    assert (by_uid.slice_index, by_uid.status, by_uid.note) == (2, "", "")
    assert (by_z.slice_index, by_z.status, by_z.note) == (2, "", "")
    assert (off.slice_index, off.status) == (None, UNMATCHED)
    assert outside.status == OUTSIDE


@pytest.mark.parametrize("z, sop, expected, note", [
    (7.5, "b", 3, "names the slice at z = 2.5, 5 mm from its imageZposition 7.5"),
    (0.3, "c", 0, "names the slice at z = 5, 4.7 mm from its imageZposition 0.3"),
    (99.0, "c", None, "no slice lies within half a slice thickness"),
    (2.5, "b", 1, ""),        # its own slice: no note
    (3.7, "b", 1, ""),        # 1.2 mm off, within half of 2.5 mm: still its UID's slice
])
def test_a_sop_uid_whose_slice_is_at_another_z_gives_way_to_the_z(z, sop, expected, note):
    region = roi(z, sop, (5, 5))
    lesions.match_slices([mark("r:0", NODULE, [region])], SOPS, Z, 2.5)
    assert region.slice_index == expected
    assert region.status == ("" if expected is not None else Z_CONFLICT)
    assert note in region.note and bool(note) == bool(region.note)


def test_a_sop_uid_two_slices_share_is_settled_by_z():
    sops = ["a", "b", "b", "d"]  # the index keeps both slices of a repeated UID
    on_third, on_none = roi(5.0, "b", (5, 5)), roi(7.5, "b", (5, 5))
    lesions.match_slices([mark("r:0", NODULE, [on_third, on_none])], sops, Z, 2.5)
    assert (on_third.slice_index, on_third.status) == (2, "")
    assert "names 2 slices (z = 2.5, 5)" in on_third.note and "placed by its z on slice 2" \
        in on_third.note
    # z 7.5 is slice 3's, but slice 3 has another UID: the UID names 1 and 2, z names 3.
    assert on_none.slice_index == 3 and "names 2 slices" in on_none.note
    far = roi(20.0, "b", (5, 5))
    lesions.match_slices([mark("r:0", NODULE, [far])], sops, Z, 2.5)
    assert (far.slice_index, far.status) == (None, Z_CONFLICT)


def test_a_stray_click_keeps_its_status_wherever_it_lies():
    stray = roi(2.5, "b", (5, 5))
    stray.status = STRAY
    lesions.match_slices([mark("r:0", NODULE, [stray])], SOPS, Z, 2.5, shape=(128, 128))
    assert (stray.slice_index, stray.status) == (1, STRAY)


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


def test_a_reader_in_between_never_chains_two_marks_of_another_reader():
    # Reader 0 marks two small nodules 4 mm apart; reader 1's mark lies between them, nearer the
    # second. Connected components would make one lesion of all three.
    marks = [mark("r:0", SMALL_NODULE, [roi(0.0, "a", (50, 50))]),
             mark("r:0", SMALL_NODULE, [roi(0.0, "a", (50, 56))]),
             mark("r:1", SMALL_NODULE, [roi(0.0, "a", (50, 54))])]
    assert lesions.cluster(marks, spacing=0.7, thickness=2.5) == [0, 1, 1]


def test_groups_join_nearest_first_and_never_share_a_reader():
    rng = np.random.default_rng(0)
    for _ in range(30):
        marks = [mark(f"r:{rng.integers(4)}", SMALL_NODULE,
                      [roi(2.5 * rng.integers(3), "x", tuple(rng.integers(40, 60, 2)))])
                 for _ in range(12)]
        numbers = lesions.cluster(marks, spacing=0.7, thickness=2.5)
        pairs = {(n, m.reader) for n, m in zip(numbers, marks)}
        assert len(pairs) == len(marks)  # no lesion holds two marks of one reader
        assert numbers[0] == 0 and max(numbers) < len(marks)
        # The same marks in the same order give the same lesions.
        assert lesions.cluster(marks, spacing=0.7, thickness=2.5) == numbers


def test_stray_clicks_do_not_move_a_nodule_for_grouping():
    contour = [roi(0.0, "a", (50, 50), 5), roi(2.5, "b", (50, 50), 5)]
    far_click = roi(40.0, "q", (120, 120))
    far_click.status = STRAY
    marks = [mark("r:0", NODULE, contour + [far_click]),
             mark("r:1", NODULE, [roi(2.5, "b", (51, 50), 5)])]
    assert lesions.cluster(marks, spacing=0.7, thickness=2.5) == [0, 0]


def random_regions(rng, n):
    """Regions of 1 to 300 points: random polygons, lines (no area), repeated points."""
    out = []
    for k in range(n):
        size = int(rng.integers(1, 300))
        points = rng.integers(0, 512, (size, 2))
        if k % 7 == 0:
            points = np.repeat(points[:1], size, axis=0) + np.arange(size)[:, None]
        if k % 11 == 0:
            points = np.repeat(points[:1], size, axis=0)
        out.append(Roi(z=float(rng.integers(-40, 40)) * 2.5, sop_uid="", inclusion=True,
                       points=points.astype(np.int32)))
    return out


def test_region_shapes_at_once_are_each_regions_own_to_the_last_bit():
    rng = np.random.default_rng(5)
    regions = random_regions(rng, 600)
    alone = [Roi(r.z, r.sop_uid, r.inclusion, r.points.copy()) for r in regions]
    boxes = region_shapes(regions)
    assert [r.centroid for r in regions] == [r.centroid for r in alone]
    assert [tuple(b) for b in boxes.tolist()] == [r.bbox for r in alone]


def one_pair_at_a_time(marks, spacing, thickness):
    """The grouping as it was written before it was done in numpy: for each pair of marks."""
    def extent(m):
        rois = [r for r in m.included if r.status != STRAY] or m.included or m.rois
        centroids = np.array([r.centroid for r in rois]) * spacing
        radius = max(float((r.points.max(0) - r.points.min(0)).max()) / 2 for r in rois)
        zs = [r.z for r in rois]
        return centroids.mean(axis=0), radius * spacing, min(zs), max(zs)
    shapes = [extent(m) for m in marks]
    pairs = []
    for i in range(len(marks)):
        for j in range(i + 1, len(marks)):
            (ca, ra, lo_a, hi_a), (cb, rb, lo_b, hi_b) = shapes[i], shapes[j]
            if marks[i].reader == marks[j].reader or lo_a > hi_b + thickness + 1e-6 or \
                    lo_b > hi_a + thickness + 1e-6 or \
                    float(np.hypot(*(ca - cb))) > max(ra, rb) + lesions.CLUSTER_MARGIN_MM:
                continue
            d = float(np.hypot(np.hypot(*(ca - cb)), (lo_a + hi_a - lo_b - hi_b) / 2))
            pairs.append((d, i, j))
    return [(i, j) for _, i, j in sorted(pairs)]


@pytest.mark.parametrize("seed", range(4))
def test_the_pairs_that_may_be_one_lesion_are_those_one_pair_at_a_time_gives(seed):
    rng = np.random.default_rng(seed)
    marks = []
    for k in range(60):
        centre = rng.integers(100, 140, 2)
        regions = [roi(float(z) * 2.5, "", tuple(centre + rng.integers(-3, 4, 2)),
                       int(rng.integers(0, 6))) for z in range(*sorted(rng.integers(0, 8, 2)))]
        regions = regions or [roi(0.0, "", tuple(centre))]
        marks.append(mark(f"r:{k % 4}", NODULE, regions))
    expected = one_pair_at_a_time(marks, 0.7, 2.5)
    assert lesions._candidate_pairs(marks, 0.7, 2.5) == expected and len(expected) > 20


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
