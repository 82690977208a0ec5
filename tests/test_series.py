"""lidc.series: headers, slice order, HU, and what is dropped from a series and why."""
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from lidc import series as dicom
from lidc.errors import LidcError
from tests.helpers import sop_uid, write_series, write_slice


def test_hu_matches_pydicom_modality_lut_on_ct_small():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_array_equal(dicom.read_hu(path), expected)


@pytest.mark.parametrize("slope,intercept", [(1, -1024), (0.5, -1024), (2, 0), (1, -1000)])
def test_hu_from_any_rescale(tmp_path, slope, intercept):
    hu = np.full((128, 128), -850, np.int16)
    hu[10:20, 10:20] = 400
    write_slice(tmp_path / "a.dcm", 0.0, 0, hu=hu, slope=slope, intercept=intercept)
    np.testing.assert_array_equal(dicom.read_hu(tmp_path / "a.dcm"), hu)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.uint8])
@pytest.mark.parametrize("slope,intercept", [(1, -1024), (1, 0), (1, 40000), (1, -40000),
                                             (1, -1024.5), (2.5, -1024)])
def test_hu_arithmetic_is_exact_rounded_and_clipped(dtype, slope, intercept):
    # Full-range values push the int16 fast path out (to the clipping one); a narrow range keeps
    # it: both must equal float arithmetic rounded and clipped to int16.
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    for low, high in [(info.min, info.max), (max(info.min, -2000), min(info.max, 4000))]:
        stored = rng.integers(low, high, (40, 40), endpoint=True).astype(dtype)
        expected = np.clip(np.rint(stored.astype(np.float64) * slope + intercept), -32768, 32767)
        np.testing.assert_array_equal(dicom._to_hu(stored, slope, intercept), expected)
        assert dicom._to_hu(stored, slope, intercept).dtype == np.int16


def test_padding_value_becomes_air(tmp_path):
    path = write_slice(tmp_path / "a.dcm", 0.0, 0)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.copy()
    stored[:5] = -2000
    ds.PixelData = stored.tobytes()
    ds.PixelPaddingValue = -2000
    ds.save_as(path)
    assert (dicom.read_hu(path)[:5] == dicom.AIR_HU).all()


def test_slices_sorted_by_z_not_by_name_or_instance_number(tmp_path):
    z = [-10.0, -40.0, -20.0, -30.0, 0.0]
    write_series(tmp_path, z, instance=7)  # every InstanceNumber equal: it must not matter
    files = sorted(tmp_path.iterdir())
    np.random.default_rng(0).shuffle(files)
    headers, skipped = dicom.read_headers(files)
    (s,) = dicom.group_series(headers)
    assert skipped == []
    assert [h.z for h in s.slices] == sorted(z)
    assert [h.sop_uid for h in s.slices] == [sop_uid(s.series_uid, z.index(v)) for v in sorted(z)]


def test_duplicate_z_keeps_lower_instance_number(tmp_path):
    write_slice(tmp_path / "a.dcm", 0.0, 0, instance=9)
    write_slice(tmp_path / "b.dcm", 0.0, 1, instance=3)
    write_slice(tmp_path / "c.dcm", 2.5, 2, instance=1)
    (s,) = dicom.group_series(dicom.read_headers(sorted(tmp_path.iterdir()))[0])
    assert [h.instance_number for h in s.slices] == [3, 1]
    assert len(s.problems) == 1 and "duplicate slice" in s.problems[0][1]


def test_gap_in_z_is_reported_not_dropped(tmp_path):
    write_series(tmp_path, [0.0, 2.5, 5.0, 12.5, 15.0])
    (s,) = dicom.group_series(dicom.read_headers(sorted(tmp_path.iterdir()))[0])
    assert len(s.slices) == 5
    assert len(s.gaps) == 1 and "gap in z" in s.gaps[0][1]


def test_odd_pixel_spacing_slice_is_dropped(tmp_path):
    write_series(tmp_path, [0.0, 2.5, 5.0])
    write_slice(tmp_path / "odd.dcm", 7.5, 3, spacing=0.9)
    (s,) = dicom.group_series(dicom.read_headers(sorted(tmp_path.iterdir()))[0])
    assert len(s.slices) == 3
    assert s.problems[0][0].endswith("odd.dcm") and "differs" in s.problems[0][1]


def test_two_series_in_one_folder_are_told_apart(tmp_path):
    write_series(tmp_path, [0.0, 2.5], series_uid="1.2.3.4", names={0: "a.dcm", 1: "b.dcm"})
    write_series(tmp_path, [0.0, 2.5, 5.0], series_uid="1.2.3.5",
                 names={0: "c.dcm", 1: "d.dcm", 2: "e.dcm"})
    groups = dicom.group_series(dicom.read_headers(sorted(tmp_path.iterdir()))[0])
    assert {(g.series_uid, len(g.slices)) for g in groups} == {("1.2.3.4", 2), ("1.2.3.5", 3)}


def test_bad_files_raise_lidc_error_naming_the_file(tmp_path):
    (tmp_path / "notes.dcm").write_text("not dicom at all")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "cut.dcm")
    with open(tmp_path / "cut.dcm", "r+b") as f:
        f.truncate(5000)
    headers, skipped = dicom.read_headers([tmp_path / "notes.dcm", tmp_path / "cut.dcm"])
    assert headers == []
    assert [p for p, _ in skipped] == [str(tmp_path / "notes.dcm"), str(tmp_path / "cut.dcm")]
    with pytest.raises(LidcError, match="cut.dcm"):
        dicom.read_hu(tmp_path / "cut.dcm")
