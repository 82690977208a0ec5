"""The corpus of DICOM headers, discovery and work folders (issue "No silently wrong result").

Every input either gives the right result or is refused with its file and reason; never a
plausible wrong output. Built on tests/test_corpus.py's cohort (4 patients, 6 slices each, one
XML read each) and its reference run:

- a CT slice whose HU, geometry or order cannot be established is refused at the index, with the
  attribute named in WORK/skipped/index.csv, and index.csv and slices.csv stay exactly those of
  the reference (the later stages read nothing else of the images, so their outputs follow);
- a valid variant (another storage, transfer syntax, orientation flip, folder reached through a
  link, odd file names) gives the reference's outputs, patch for patch;
- HU are checked against pydicom's own modality LUT, an independent reading;
- discovery reports every folder or file it could not read; a WORK that cannot be used stops
  the command with exit 1 and the cause.
"""
import copy
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid as uids
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.tag import Tag

from lidc import series as dicom
from lidc.errors import LidcError
from lidc.io import read_csv
from lidc.stages.index import read_index
from tests.helpers import make_deep_folder, save_encoded, sop_uid, store, write_slice
from tests.test_corpus import (Outputs, Z, assert_same_outputs, edit, extra_slice, extra_uid,
                               folder, good, patient_id, run_stages, series_uid)
from tools import annotations, cli, crop, index

__all__ = ["good"]  # the reference run: a fixture shared with tests/test_corpus.py

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "lidc-samples"


@pytest.fixture
def cohort(good, tmp_path):
    """A copy of the reference cohort (faster than writing it again) and a WORK for it."""
    root = tmp_path / "LIDC-IDRI"
    shutil.copytree(good.root, root)
    return root, tmp_path / "work"


class IndexOutputs(Outputs):
    """The index stage's files of a run (Outputs before the later stages ran)."""

    def __init__(self, root, work):  # noqa: super().__init__ would read the later stages
        self.root, self.work = root, work


def run_index(root, work):
    assert index.main(["--root", str(root), "--work", str(work), "--workers", "1"]) == 0
    return IndexOutputs(root, work)


def assert_index_unchanged(good, out):
    for name in ("index.csv", "slices.csv"):
        assert out._rows(name) == good._rows(name), name


def assert_only_skip(out, path, reason):
    """The skip report of the index is exactly one row: `path`, with `reason` in its reason."""
    [row] = out.skipped("index")
    assert row["path"] == str(path).replace(str(out.root), "ROOT")
    assert reason in row["reason"], row["reason"]


# Header values that decide HU, geometry or order, each made wrong on one added CT slice. ------

def header(change):
    """Adds a slice to patient 1's series above its others, with `change(ds)` made to it."""
    def add(root):
        with pydicom.config.disable_value_validation():
            return edit(extra_slice(root, "1-950.dcm"), change)
    return add


def setting(**values):
    def change(ds):
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    return change


def raw_text(keyword, text):
    """Sets `keyword` to `text` as written in the file, unchecked (pydicom would refuse to write
    a DS that is not a number)."""
    def change(ds):
        tag = Tag(tag_for_keyword(keyword))
        data = text.encode() + b" " * (len(text) % 2)
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(data), data, 0, False, True)
    return change


def removing(keyword):
    return lambda ds: delattr(ds, keyword)


def modality_lut(ds):
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "HU"
    item.add_new("LUTData", "OW", np.arange(4096, dtype="<u2").tobytes())
    ds.ModalityLUTSequence = [item]


TILT_20 = [1.0, 0.0, 0.0, 0.0, float(np.cos(np.radians(20))), float(-np.sin(np.radians(20)))]

# (change to the slice, what the reason must say)
REFUSED_SLICES = [
    pytest.param(removing("RescaleIntercept"), "no RescaleIntercept: the slice's HU cannot be "
                 "established", id="no-intercept"),
    pytest.param(removing("RescaleSlope"), "no RescaleSlope", id="no-slope"),
    pytest.param(setting(RescaleSlope="0"), "RescaleSlope '0' is not one positive finite",
                 id="slope-zero"),
    pytest.param(setting(RescaleSlope="-1"), "RescaleSlope '-1' is not one positive finite",
                 id="slope-negative"),
    pytest.param(setting(RescaleSlope="nan"), "RescaleSlope 'nan' is not one positive finite",
                 id="slope-nan"),
    pytest.param(setting(RescaleIntercept="inf"), "RescaleIntercept 'inf' is not one finite",
                 id="intercept-infinite"),
    pytest.param(raw_text("RescaleIntercept", "minus1024"), "RescaleIntercept 'minus1024' is not "
                 "one finite number", id="intercept-not-a-number"),
    pytest.param(setting(RescaleType="US"), "RescaleType 'US' is not HU", id="rescale-type-us"),
    pytest.param(modality_lut, "has a Modality LUT Sequence", id="modality-lut"),
    pytest.param(removing("ImageOrientationPatient"), "no ImageOrientationPatient",
                 id="no-orientation"),
    pytest.param(raw_text("ImageOrientationPatient", "1\\0\\0\\0\\1"),
                 "ImageOrientationPatient '1\\0\\0\\0\\1' is not 6 finite numbers",
                 id="orientation-5-values"),
    pytest.param(raw_text("ImageOrientationPatient", "1\\0\\0\\0\\1\\nan"),
                 "is not 6 finite numbers", id="orientation-nan"),
    pytest.param(setting(ImageOrientationPatient=[1, 0, 0, 1, 0, 0]),
                 "is not two unit vectors at right angles", id="orientation-parallel"),
    pytest.param(setting(ImageOrientationPatient=[2, 0, 0, 0, 1, 0]),
                 "is not two unit vectors at right angles", id="orientation-not-unit"),
    pytest.param(setting(ImageOrientationPatient=[0, 1, 0, 0, 0, -1]),
                 "is not axial: the slice normal is 90.0 degrees from the z axis",
                 id="orientation-sagittal"),
    pytest.param(setting(ImageOrientationPatient=TILT_20),
                 "is not axial: the slice normal is 20.0 degrees from the z axis",
                 id="orientation-gantry-tilt"),
    pytest.param(raw_text("ImagePositionPatient", "-80\\-80\\nan"),
                 "ImagePositionPatient '-80\\-80\\nan' is not 3 finite numbers",
                 id="position-nan"),
    pytest.param(raw_text("ImagePositionPatient", "-80\\-inf\\40"), "is not 3 finite numbers",
                 id="position-infinite"),
    pytest.param(setting(ImagePositionPatient=[-80, -80]), "is not 3 finite numbers",
                 id="position-2-values"),
    pytest.param(removing("ImagePositionPatient"), "no ImagePositionPatient: cannot place the "
                 "slice in z", id="no-position"),
    pytest.param(raw_text("PixelSpacing", "0\\0.66"), "PixelSpacing '0\\0.66' is not 2 positive "
                 "finite numbers", id="spacing-zero"),
    pytest.param(raw_text("PixelSpacing", "nan\\nan"), "is not 2 positive finite numbers",
                 id="spacing-nan"),
    pytest.param(setting(PixelSpacing=[0.66]), "is not 2 positive finite numbers",
                 id="spacing-1-value"),
    pytest.param(removing("PixelSpacing"), "no PixelSpacing", id="no-spacing"),
    pytest.param(setting(SliceThickness="-5"), "SliceThickness '-5' is not one positive finite",
                 id="thickness-negative"),
    pytest.param(setting(SliceThickness="inf"), "SliceThickness 'inf' is not one positive",
                 id="thickness-infinite"),
    pytest.param(setting(Rows=0), "Rows x Columns 0 x 128 is not an image", id="rows-zero"),
    pytest.param(setting(SamplesPerPixel=3), "SamplesPerPixel 3 is not 1", id="rgb-samples"),
    pytest.param(setting(NumberOfFrames=2), "NumberOfFrames 2 is not 1", id="multi-frame"),
    pytest.param(setting(BitsAllocated=12), "BitsAllocated 12 is not 8, 16 or 32",
                 id="bits-allocated-12"),
    pytest.param(setting(BitsStored=17), "BitsStored 17 does not fit BitsAllocated 16",
                 id="bits-stored-17"),
    pytest.param(setting(PixelRepresentation=2), "PixelRepresentation 2 is not 0 (unsigned) "
                 "or 1 (signed)", id="pixel-representation-2"),
    pytest.param(removing("PixelRepresentation"), "no PixelRepresentation",
                 id="no-pixel-representation"),
    pytest.param(setting(PhotometricInterpretation="PALETTE COLOR"), "PhotometricInterpretation"
                 " PALETTE COLOR is not MONOCHROME1 or MONOCHROME2", id="palette-color"),
    pytest.param(removing("Modality"), "no Modality", id="no-modality"),
    pytest.param(raw_text("InstanceNumber", "first"), "InstanceNumber 'first' is not an integer",
                 id="instance-number-not-integer"),
]


@pytest.mark.parametrize("change,reason", REFUSED_SLICES)
def test_a_ct_slice_whose_hu_geometry_or_order_is_unknown_is_refused_at_the_index(
        good, cohort, change, reason):
    root, work = cohort
    bad = header(change)(root)
    out = run_index(root, work)
    assert_only_skip(out, bad, reason)
    assert_index_unchanged(good, out)


def test_a_series_that_is_not_axial_is_refused_slice_by_slice_saying_so(good, cohort):
    root, work = cohort
    target = root / "LIDC-IDRI-0096" / "study" / "sagittal"
    target.mkdir(parents=True)
    for k in range(3):
        path = write_slice(target / f"{k}.dcm", 5.0 * k, k, extra_uid(6),
                           patient="LIDC-IDRI-0096")
        edit(path, setting(ImageOrientationPatient=[0, 1, 0, 0, 0, -1]))
    out = run_index(root, work)
    assert [r["path"] for r in out.skipped("index")] == \
        [f"ROOT/LIDC-IDRI-0096/study/sagittal/{k}.dcm" for k in range(3)]
    assert all("is not axial" in r["reason"] for r in out.skipped("index"))
    assert_index_unchanged(good, out)


def test_a_slice_whose_orientation_differs_from_its_series_is_dropped(good, cohort):
    root, work = cohort
    odd = header(setting(ImageOrientationPatient=[-1, 0, 0, 0, 1, 0]))(root)
    out = run_index(root, work)
    assert_only_skip(out, odd, "ImageOrientationPatient (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0) "
                               "differs from the series' (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)")
    rows, reference = out._rows("index.csv"), good._rows("index.csv")
    assert rows[0]["dropped_slices"] == "1"
    assert [dict(r, dropped_slices="0") for r in rows] == reference
    assert out._rows("slices.csv") == good._rows("slices.csv")


def test_two_slices_with_one_sop_uid_are_kept_and_reported(good, cohort):
    """The same SOPInstanceUID at two z: both images are kept (one row each in slices.csv), the
    skip report warns about both, and the marks (on other slices) are unchanged."""
    root, work = cohort
    twin = edit(extra_slice(root, "1-951.dcm"),
                setting(SOPInstanceUID=sop_uid(series_uid(1), 0)))
    run_stages(root, work)
    out = Outputs(root, work)
    first = folder(root, 1) / "1-001.dcm"
    assert {r["path"] for r in out.skipped("index")} == {
        str(p).replace(str(root), "ROOT") for p in (first, twin)}
    assert all(f"SOPInstanceUID {sop_uid(series_uid(1), 0)} is shared by 2 slices" in r["reason"]
               and r["reason"].startswith("kept") for r in out.skipped("index"))
    same = [r for r in read_csv(work / "slices.csv") if r["sop_uid"] == sop_uid(series_uid(1), 0)]
    assert [(r["z"], r["path"]) for r in same] == [("-10", str(first)), ("40", str(twin))]
    assert_same_outputs(good, out)


# HU: what the project reads equals pydicom's own modality LUT, for every storage. ------------

def expected_hu(path):
    """pydicom's reading: the modality LUT on its own decoded pixels, padding as air, rounded
    and clipped to int16 like the project's volumes."""
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if "PixelPaddingValue" in ds:
        low = high = ds.PixelPaddingValue
        if "PixelPaddingRangeLimit" in ds:
            low, high = sorted((low, ds.PixelPaddingRangeLimit))
        hu[(ds.pixel_array >= low) & (ds.pixel_array <= high)] = dicom.AIR_HU
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


HU = (np.add.outer(np.arange(128), 3 * np.arange(128)) % 1400 - 1000).astype(np.int16)


def stored_as(dtype, slope, intercept, padding=None, limit=None):
    def change(ds):
        stored = np.rint((HU.astype(np.float64) - intercept) / slope).astype(dtype)
        if padding is not None:
            stored[:, :7] = padding
            stored[:3] = limit if limit is not None else padding
        store(ds, stored, slope, intercept)
        vr = "SS" if np.dtype(dtype).kind == "i" else "US"
        if padding is not None:  # store() drops CT_small's padding value: set it again
            ds.add_new("PixelPaddingValue", vr, padding)
        if limit is not None:
            ds.add_new("PixelPaddingRangeLimit", vr, limit)
    return change


STORAGES = [
    pytest.param(stored_as(np.int16, 1, -1024), uids.ExplicitVRLittleEndian, id="int16"),
    pytest.param(stored_as(np.uint16, 1, -1024), uids.ExplicitVRLittleEndian, id="uint16"),
    pytest.param(stored_as(np.int16, 1, 0), uids.ExplicitVRLittleEndian, id="intercept-0"),
    pytest.param(stored_as(np.int16, 0.5, -1024), uids.ExplicitVRLittleEndian, id="slope-0.5"),
    pytest.param(stored_as(np.int32, 1, -1024), uids.ExplicitVRLittleEndian, id="int32"),
    pytest.param(stored_as(np.int16, 1, -1024, padding=-2000), uids.ExplicitVRLittleEndian,
                 id="int16-padding"),
    pytest.param(stored_as(np.uint16, 1, -1024, padding=0), uids.ExplicitVRLittleEndian,
                 id="uint16-padding"),
    pytest.param(stored_as(np.int16, 1, -1024, padding=-2000, limit=-1990),
                 uids.ExplicitVRLittleEndian, id="padding-range"),
    pytest.param(stored_as(np.int16, 1, -1024, padding=-2000), uids.ImplicitVRLittleEndian,
                 id="implicit-vr-padding"),
    pytest.param(stored_as(np.int16, 1, -1024), uids.ExplicitVRBigEndian, id="big-endian"),
    pytest.param(stored_as(np.uint16, 1, -1024, padding=0), uids.DeflatedExplicitVRLittleEndian,
                 id="deflated"),
]


@pytest.mark.parametrize("change,syntax", STORAGES)
def test_hu_equal_pydicoms_modality_lut_for_every_storage(tmp_path, change, syntax):
    ds = pydicom.dcmread(write_slice(tmp_path / "plain.dcm", 0.0, 0))
    change(ds)
    path = save_encoded(ds, tmp_path / "a.dcm", syntax)
    expected = expected_hu(path)
    np.testing.assert_array_equal(dicom.read_hu(path), expected)
    np.testing.assert_array_equal(dicom.read_stored(path).hu(), expected)
    stored = dicom.read_stored(path)
    np.testing.assert_array_equal(stored.hu(stored.pixels[40:72, 10:42]), expected[40:72, 10:42])
    h = dicom.read_header(path)  # the index reads the same rescale from the header alone
    assert (h.slope, h.intercept) == (float(ds.RescaleSlope), float(ds.RescaleIntercept))
    # The crop's read at the pixels' offset, where the syntax stores them in place.
    in_place = syntax in (uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian)
    assert (h.pixel_layout is not None) == in_place
    if in_place:
        at = dicom.read_stored_at(path, dicom.PixelLayout(*h.pixel_layout))
        np.testing.assert_array_equal(at.pixels, stored.pixels)
        assert at.pixels.dtype == stored.pixels.dtype
        np.testing.assert_array_equal(at.hu(), expected)


def stored_bits(dtype, bits_stored, seed):
    """Pixels of `dtype` whose bits above `bits_stored` hold noise (an overlay, as some
    scanners write), with BitsStored and HighBit saying so."""
    def change(ds):
        rng = np.random.default_rng(seed)
        info = np.iinfo(dtype)
        stored = rng.integers(info.min, info.max, (64, 64), endpoint=True).astype(dtype)
        store(ds, stored, 1, -1024)
        ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    return change


@pytest.mark.parametrize("dtype,bits_stored", [(np.int16, 12), (np.uint16, 12), (np.int16, 1),
                                               (np.uint8, 7), (np.int8, 5), (np.int32, 20),
                                               (np.uint32, 31)])
@pytest.mark.parametrize("syntax", [uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian])
def test_pixels_read_at_their_offset_are_pydicoms_unused_bits_and_all(tmp_path, dtype,
                                                                       bits_stored, syntax):
    ds = pydicom.dcmread(write_slice(tmp_path / "plain.dcm", 0.0, 0))
    stored_bits(dtype, bits_stored, seed=bits_stored)(ds)
    path = save_encoded(ds, tmp_path / "a.dcm", syntax)
    layout = dicom.PixelLayout(*dicom.read_header(path).pixel_layout)
    expected = pydicom.dcmread(path).pixel_array
    assert not np.array_equal(expected, np.frombuffer(ds.PixelData, expected.dtype).reshape(
        expected.shape))  # the noise is there to clear
    at = dicom.read_stored_at(path, layout)
    np.testing.assert_array_equal(at.pixels, expected)
    np.testing.assert_array_equal(at.hu(), dicom.read_stored(path).hu())
    assert dicom.PixelLayout.from_text(layout.to_text()) == layout


@pytest.mark.parametrize("comment", ["a longer header moves the pixels " * 4, None])
def test_a_file_changed_since_the_index_is_read_through_its_header(tmp_path, comment):
    path = write_slice(tmp_path / "a.dcm", 0.0, 0)
    layout = dicom.PixelLayout(*dicom.read_header(path).pixel_layout)
    ds = pydicom.dcmread(path)
    if comment:  # a longer header: the pixels move
        ds.add_new("ImageComments", "LT", comment)
        stored_as(np.int16, 1, -1000)(ds)
    else:  # another intercept of the same length: the pixels stay where they were
        ds.RescaleIntercept = -1000
        ds.PixelData = (ds.pixel_array + 24).astype("<i2").tobytes()
    ds.save_as(path)
    assert (dicom.read_header(path).pixel_layout[0] == layout.offset) == (comment is None)
    now = dicom.read_stored_at(path, layout)
    np.testing.assert_array_equal(now.pixels, dicom.read_stored(path).pixels)
    assert now.intercept == -1000
    path.unlink()
    with pytest.raises(LidcError, match="cannot decode|No such file"):
        dicom.read_stored_at(path, layout)


@pytest.mark.filterwarnings("ignore:Invalid value")  # pydicom's, about the very value tested
def test_a_padding_value_signed_as_us_pads_like_the_pixels(tmp_path):
    """A padding value of -2000 written as US 63536 beside signed pixels means -2000."""
    ds = pydicom.dcmread(write_slice(tmp_path / "plain.dcm", 0.0, 0))
    stored_as(np.int16, 1, -1024, padding=-2000)(ds)
    ds.PixelPaddingValue = 63536
    ds["PixelPaddingValue"].VR = "US"
    ds.save_as(tmp_path / "a.dcm")
    expected = HU.copy()
    expected[:, :7] = expected[:3] = dicom.AIR_HU
    np.testing.assert_array_equal(dicom.read_hu(tmp_path / "a.dcm"), expected)


def test_the_crop_stage_refuses_a_slice_the_index_would_refuse(good, cohort):
    """A marked slice loses its RescaleIntercept after the index: the crop stage reads its
    pixels with the same checks and reports it, and every other patch is unchanged."""
    root, work = cohort
    common = ["--work", str(work), "--workers", "1"]
    assert index.main(["--root", str(root), *common]) == 0
    assert annotations.main(common) == 0
    marked = folder(root, 4) / "1-004.dcm"  # Z[3]: patient 4's single-point nodule
    edit(marked, removing("RescaleIntercept"))
    assert crop.main(common) == 0
    [row] = IndexOutputs(root, work).skipped("crop")
    assert row["path"] == str(marked).replace(str(root), "ROOT")
    assert row["reason"].startswith("no RescaleIntercept: the slice's HU cannot be established")
    kept = [r for r in good.patch_rows if not (r["patient_id"] == patient_id(4)
                                               and r["slice_index"] == str(len(Z) - 1 - 3))]
    assert len(kept) == len(good.patch_rows) - 1
    patches = np.load(work / "patches" / "patches.npy")
    rows = read_csv(work / "patches" / "patches.csv")
    mine = {(r["mark_id"], r["row"], r["col"]): patches[i].tobytes() for i, r in enumerate(rows)}
    theirs = good.patch_by_key()
    assert mine == {(r["mark_id"], r["row"], r["col"]): theirs[(r["mark_id"], r["row"],
                                                                r["col"])][1] for r in kept}


# Valid variants: the reference's outputs, patch for patch. ------------------------------------

def patient4_slices(change, syntax=uids.ExplicitVRLittleEndian):
    """Rewrites every slice of patient 4 with `change(ds)` in the transfer syntax `syntax`."""
    def rewrite(root):
        for path in sorted(folder(root, 4).glob("*.dcm")):
            ds = pydicom.dcmread(path)
            change(ds)
            save_encoded(ds, path, syntax)
    return rewrite


def same_hu_stored_as(dtype, slope, intercept):
    def change(ds):
        hu = apply_modality_lut(ds.pixel_array, ds)
        store(ds, np.rint((hu - intercept) / slope).astype(dtype), slope, intercept)
    return change


def keep(ds):
    """No change: only the transfer syntax differs."""


VALID_VARIANTS = [
    pytest.param(patient4_slices(keep, uids.ImplicitVRLittleEndian), id="implicit-vr"),
    pytest.param(patient4_slices(keep, uids.ExplicitVRBigEndian), id="big-endian"),
    pytest.param(patient4_slices(keep, uids.DeflatedExplicitVRLittleEndian), id="deflated"),
    pytest.param(patient4_slices(same_hu_stored_as(np.uint16, 1, -1024)), id="uint16"),
    pytest.param(patient4_slices(same_hu_stored_as(np.int16, 1, 0)), id="intercept-0"),
    pytest.param(patient4_slices(same_hu_stored_as(np.int16, 0.5, -1024)), id="slope-0.5"),
    pytest.param(patient4_slices(setting(ImageOrientationPatient=[-1, 0, 0, 0, 1, 0])),
                 id="rows-flipped"),
    pytest.param(patient4_slices(setting(ImageOrientationPatient=[0, 1, 0, 1, 0, 0])),
                 id="transposed"),
    pytest.param(patient4_slices(setting(ImageOrientationPatient=[
        1, 0, 0, 0, float(np.cos(np.radians(3))), float(-np.sin(np.radians(3)))])),
        id="tilt-3-degrees"),
    pytest.param(patient4_slices(setting(ImageOrientationPatient=[
        "1.000000", "0.000000", "-0.000000", "0.0", "1.0000001", "0.0"])),
        id="orientation-other-rounding"),
]


WORLD = ("world_x", "world_y", "world_z")


def split_world(outputs):
    """A copy of `outputs` whose patch rows lack the world columns; and those columns."""
    plain = copy.copy(outputs)
    plain.patch_rows = [{k: v for k, v in r.items() if k not in WORLD}
                        for r in outputs.patch_rows]
    return plain, [tuple(r[k] for k in WORLD) for r in outputs.patch_rows]


@pytest.mark.parametrize("rewrite", VALID_VARIANTS)
def test_a_valid_variant_gives_the_outputs_of_its_plain_form(good, cohort, rewrite):
    root, work = cohort
    rewrite(root)
    run_stages(root, work)
    (out, world), (reference, good_world) = split_world(Outputs(root, work)), split_world(good)
    assert_same_outputs(reference, out)
    assert out.skipped("index") == good.skipped("index") == []
    # The patches' centres in the world move with the orientation (tests/test_world.py checks
    # where they go); a variant that keeps the orientation keeps them.
    if out._rows("index.csv") == good._rows("index.csv"):
        assert world == good_world


def test_orientation_and_positions_are_recorded_for_world_coordinates(cohort):
    """A flipped series keeps its crops (pixel grid) and records what world coordinates need:
    index.csv's orientation, slices.csv's position, and SliceHeader.world places each pixel."""
    root, work = cohort
    flipped = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    patient4_slices(setting(ImageOrientationPatient=flipped))(root)
    run_index(root, work)
    [row] = [r for r in read_index(work) if r.series_uid == series_uid(4)]
    assert row.orientation == tuple(flipped)
    raw = [r for r in read_csv(work / "index.csv") if r["series_uid"] == series_uid(4)][0]
    assert json.loads(raw["orientation"]) == flipped
    slices = [r for r in read_csv(work / "slices.csv") if r["series_uid"] == series_uid(4)]
    assert [(r["position_x"], r["position_y"], r["z"]) for r in slices] == \
        [("-80", "-80", f"{z:g}") for z in sorted(Z)]
    h = dicom.read_header(slices[0]["path"])
    spacing = pydicom.dcmread(slices[0]["path"]).PixelSpacing
    # Pixel (row 10, col 20): 20 columns along -x and 10 rows along -y from the first pixel.
    assert h.world(10, 20) == pytest.approx((-80 - 20 * spacing[1], -80 - 10 * spacing[0],
                                             sorted(Z)[0]))


# Discovery: followed links, names of any kind, and a word for everything not read. ------------

def test_a_patient_folder_that_is_a_symbolic_link_is_indexed(good, cohort, tmp_path):
    root, work = cohort
    elsewhere = tmp_path / "elsewhere"
    shutil.move(root / patient_id(4), elsewhere)
    (root / patient_id(4)).symlink_to(elsewhere, target_is_directory=True)
    run_stages(root, work)
    out = Outputs(root, work)
    assert_same_outputs(good, out)
    assert out.skipped("index") == []


def test_a_link_to_an_ancestor_is_read_once_and_reported(good, cohort):
    root, work = cohort
    loop = folder(root, 1) / "loop"
    loop.symlink_to(root, target_is_directory=True)
    out = run_index(root, work)
    assert_only_skip(out, loop, "the same folder as ROOT (reached again through a symbolic "
                                "link): read once, there")
    assert_index_unchanged(good, out)


def test_a_folder_reached_twice_is_read_once_and_the_second_path_reported(good, cohort):
    root, work = cohort
    second = root / "ZZ-copy-of-patient-2"  # sorts after the real folder, which is read
    second.symlink_to(root / patient_id(2), target_is_directory=True)
    out = run_index(root, work)
    assert_only_skip(out, second, f"the same folder as ROOT/{patient_id(2)} (reached again")
    assert_index_unchanged(good, out)


def dangling_link(series):
    (series / "1-960.dcm").symlink_to(series / "gone.dcm")
    return [(series / "1-960.dcm", f"a symbolic link to {series / 'gone.dcm'}, which does not "
                                   "exist")]


def link_loop(series):
    (series / "1-961.dcm").symlink_to(series / "1-962.dcm")
    (series / "1-962.dcm").symlink_to(series / "1-961.dcm")
    return [(series / f"1-96{k}.dcm", "cannot reach the file (Too many levels of symbolic "
                                      "links)") for k in (1, 2)]


@pytest.mark.parametrize("make", [dangling_link, link_loop])
def test_a_file_that_cannot_be_reached_is_reported_with_its_cause(good, cohort, make):
    root, work = cohort
    expected = make(folder(root, 1))
    out = run_index(root, work)
    assert [(r["path"], r["reason"]) for r in out.skipped("index")] == \
        [(str(p).replace(str(root), "ROOT"), reason.replace(str(root), "ROOT"))
         for p, reason in expected]
    assert_index_unchanged(good, out)


def test_a_folder_past_the_path_limit_is_reported_not_lost(good, cohort):
    """A folder the system cannot open even as root: its path is longer than PATH_MAX."""
    root, work = cohort
    top = make_deep_folder(folder(root, 3), depth=18)
    out = run_index(root, work)
    [row] = out.skipped("index")
    assert row["path"].startswith(top.replace(str(root), "ROOT"))
    assert row["reason"] == ("cannot list the folder (File name too long): its files are not "
                             "indexed; make it readable and run the index again")
    assert_index_unchanged(good, out)


def test_a_folder_without_permission_is_reported(good, cohort):
    if os.geteuid() == 0:
        pytest.skip("root reads every folder: permissions cannot hide one")
    root, work = cohort
    locked = root / "LIDC-IDRI-0097"
    locked.mkdir()
    locked.chmod(0)
    try:
        out = run_index(root, work)
    finally:
        locked.chmod(0o755)
    assert_only_skip(out, locked, "cannot list the folder (Permission denied)")
    assert_index_unchanged(good, out)


def test_a_file_without_permission_is_reported(good, cohort):
    if os.geteuid() == 0:
        pytest.skip("root reads every file: permissions cannot hide one")
    root, work = cohort
    locked = extra_slice(root, "1-963.dcm")
    locked.chmod(0)
    out = run_index(root, work)
    assert_only_skip(out, locked, "cannot open the file (Permission denied)")
    assert_index_unchanged(good, out)


# Any character in a name: spaces, non-ASCII, ';', ',', quotes, a newline, bytes not UTF-8.
ODD_FOLDER = "st;udy, \"one\" 'two'\nnext é" + os.fsdecode(b"\xff\xfe")
ODD_XML = "read;1,\"x\" é" + os.fsdecode(b"\xfd") + ".xml"


def test_names_with_any_character_lose_nothing(good, cohort):
    root, work = cohort
    study = root / patient_id(3) / "study"
    study.rename(root / patient_id(3) / ODD_FOLDER)
    series = root / patient_id(3) / ODD_FOLDER / "series3"
    (series / "003.xml").rename(series / ODD_XML)
    (series / "1-002.dcm").rename(series / "slice 2;\n,é.dcm")
    run_stages(root, work)
    [row] = [r for r in read_index(work) if r.series_uid == series_uid(3)]
    assert (row.folders, row.xml) == ((str(series),), (str(series / ODD_XML),))
    slices = [r for r in read_csv(work / "slices.csv") if r["series_uid"] == series_uid(3)]
    assert len(slices) == len(Z) and all(os.path.isfile(r["path"]) for r in slices)
    out = Outputs(root, work)
    for r in out.annotations + out.patch_rows:  # readers are named after their XML file
        r["reader"] = r["reader"].replace(ODD_XML[:-4], "003")
    for r in out.annotations:
        r["xml_file"] = r["xml_file"].replace(f"{ODD_FOLDER}/series3/{ODD_XML}",
                                              "study/series3/003.xml")
    assert_same_outputs(good, out)
    assert out.skipped("index") == []


# A work folder that cannot be used: exit 1 and the cause, never a traceback. ------------------

def index_fails(root, work, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.run(index.main, ["--root", str(root), "--work", str(work), "--workers", "1"])
    assert exit_.value.code == 1
    return capsys.readouterr().err


def work_is_a_file(work):
    work.write_text("x")
    return work, f"{work}: is a file, not a folder: choose another folder, or move the file away"


def work_under_a_file(work):
    work.write_text("x")
    return work / "sub", f"{work}/sub: cannot be created: part of its path is a file"


def lock_is_a_folder(work):
    (work / ".lock").mkdir(parents=True)
    return work, f"{work}: a folder named .lock stands where this project keeps its lock file"


@pytest.mark.parametrize("make", [work_is_a_file, work_under_a_file, lock_is_a_folder])
def test_a_work_folder_that_cannot_be_used_stops_with_its_cause(cohort, capsys, make):
    root, work = cohort
    work, message = make(work)
    err = index_fails(root, work, capsys)
    assert message in err and "Traceback" not in err


def test_a_read_only_work_folder_stops_with_its_cause(cohort, capsys, tmp_path):
    root, _ = cohort
    if os.geteuid() == 0:
        work = Path("/sys")  # a file system no one writes, root included
        try:
            open(work / ".lock", "a+").close()
            pytest.skip("/sys is writable here")
        except OSError:
            pass
    else:
        work = tmp_path / "read-only"
        work.mkdir()
        work.chmod(0o555)
    err = index_fails(root, work, capsys)
    assert f"{work}: cannot be written (Permission denied): make it writable or choose another " \
           "folder" in err


# The real series, when ../shared/lidc-samples is here: what is recorded equals pydicom's. ----

@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no ../shared/lidc-samples here")
def test_real_series_positions_and_orientation_are_pydicoms(tmp_path):
    run_index(SAMPLES / "LIDC-IDRI", tmp_path)
    [row] = read_index(tmp_path)
    assert row.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert row.spacing == (0.820312, 0.820312) and row.thickness == 2.5
    for r in read_csv(tmp_path / "slices.csv"):
        ds = pydicom.dcmread(r["path"], stop_before_pixels=True)
        assert tuple(float(r[k]) for k in ("position_x", "position_y", "z")) == \
            tuple(float(v) for v in ds.ImagePositionPatient)
    # LUNA16's nodule centres (world mm) lie inside the volume the records place in the world.
    luna = read_csv(SAMPLES / "luna16-annotations-0003.csv")
    first = dicom.read_header(read_csv(tmp_path / "slices.csv")[0]["path"])
    low, high = np.array(first.world(0, 0)), np.array(first.world(511, 511))
    for nodule in luna:
        centre = np.array([float(nodule[k]) for k in ("coordX", "coordY", "coordZ")])
        assert (low[:2] <= centre[:2]).all() and (centre[:2] <= high[:2]).all()
        assert row.z_min <= centre[2] <= row.z_max


def test_read_index_refuses_an_index_of_the_old_format(cohort):
    root, work = cohort
    run_index(root, work)
    rows = read_csv(work / "index.csv")
    rows[0]["xml"] = ";".join(json.loads(rows[0]["xml"]))
    from lidc.io import write_csv
    write_csv(work / "index.csv", rows, list(rows[0]))
    with pytest.raises(LidcError, match=re.escape("not an index this version writes")):
        read_index(work)


def test_a_file_that_cannot_be_opened_is_reported_as_such_even_as_root(tmp_path, monkeypatch):
    """What the permission test above shows where it can run, shown where it cannot: the open
    of the file fails (here made to), and the reason says so, not 'not DICOM'."""
    path = write_slice(tmp_path / "a.dcm", 0.0, 0)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(dicom.pydicom, "dcmread", refuse)
    with pytest.raises(LidcError) as e:
        dicom.read_header(path)
    assert (e.value.path, e.value.reason) == (str(path), "cannot open the file (Permission "
                                                         "denied): make it readable and run the "
                                                         "index again")


def test_png_export_keeps_a_header_named_folder_inside_work(cohort, tmp_path):
    """--png names its folders after PatientID and SeriesInstanceUID: a value with '/' or '..'
    stays one folder inside WORK/png."""
    root, work = cohort
    for path in folder(root, 1).glob("*.dcm"):
        edit(path, setting(PatientID="../../escape"))
    assert index.main(["--root", str(root), "--work", str(work), "--workers", "1",
                       "--png"]) == 0
    pngs = sorted((work / "png" / "..%2F..%2Fescape" / series_uid(1)).glob("*.png"))
    assert len(pngs) == len(Z)
    assert not (tmp_path / "escape").exists() and not (work / "escape").exists()
    assert len(list((work / "png").rglob("*.png"))) == len(Z) * 4
