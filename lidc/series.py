"""DICOM CT series: find them by header, check them, order their slices by z, read them as HU.

Rules (pylidc's, written our own way): a series is found by its SeriesInstanceUID and Modality,
never by folder name; slices are sorted by the z of ImagePositionPatient (ties: the lower
InstanceNumber is kept, the other reported as a duplicate); HU = stored x RescaleSlope +
RescaleIntercept.

Every header value that decides HU, geometry or order is checked once, where the header is
read (`read_header`), and a CT slice whose value is missing, malformed or of a kind this pipeline
does not handle is refused with the attribute named, never read with a guess: no rescale (or a
Modality LUT, or a RescaleType other than HU), a position or spacing that is not finite, an
orientation that is not axial, a pixel format other than one grayscale frame. The crop stage
reads the pixels through `read_stored`, which applies the same rescale checks.

    headers, skipped = read_headers(paths)
    for series in group_series(headers): ...
    hu = read_hu(path)           # one slice, int16 HU
"""
import dataclasses
import functools
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.dataelem import DataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.filereader import read_file_meta_info
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.values import convert_value

from lidc.errors import LidcError
from lidc.records import Series, SliceHeader

AIR_HU = -1000
# How far a slice's normal (row direction x column direction) may lean from the z axis for the
# series to count as axial: gantry tilts beyond it are refused, not cropped as if axial.
AXIAL_TOLERANCE_DEGREES = 5.0
# Direction cosines must be unit vectors at right angles to within this.
_COSINE_TOLERANCE = 1e-3
# What read_header checks and records: part of the index's fingerprint, so that a new version
# re-reads the headers instead of reusing records of the old shape.
HEADER_VERSION = 3  # 3: the pixels' layout (PixelLayout)

# What turns stored values into HU; read with the header (to refuse at the index) and again
# with the pixels (by the crop stage), and checked the same way both times (`hu_rescale`).
_RESCALE_KEYWORDS = ["RescaleSlope", "RescaleIntercept", "RescaleType", "PixelPaddingValue",
                     "PixelPaddingRangeLimit", "PixelRepresentation", "BitsAllocated"]
# The header elements the index needs, by tag, and their VR for files written with implicit VR.
_HEADER_TAGS = {keyword: tag_for_keyword(keyword) for keyword in [
    "Modality", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID",
    "ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber", "PixelSpacing",
    "SliceThickness", "Rows", "Columns", "BitsStored", "SamplesPerPixel", "NumberOfFrames",
    "PhotometricInterpretation", *_RESCALE_KEYWORDS]}
_HU_TAGS = {keyword: tag_for_keyword(keyword) for keyword in _RESCALE_KEYWORDS}
_MODALITY_LUT = tag_for_keyword("ModalityLUTSequence")
_PIXEL_DATA = tag_for_keyword("PixelData")
_READ_TAGS = [*_HEADER_TAGS.values(), _MODALITY_LUT, _PIXEL_DATA]

# The pixel formats this pipeline decodes: (keyword, its value when absent, allowed values,
# what a valid value is). None as the value when absent means the attribute is required.
_PIXEL_FORMAT = [
    ("SamplesPerPixel", None, {1}, "1 (one grayscale sample per pixel)"),
    ("NumberOfFrames", 1, {1}, "1 (this pipeline reads one slice per file)"),
    ("BitsAllocated", None, {8, 16, 32}, "8, 16 or 32"),
    ("PixelRepresentation", None, {0, 1}, "0 (unsigned) or 1 (signed)"),
    ("PhotometricInterpretation", None, {"MONOCHROME1", "MONOCHROME2"},
     "MONOCHROME1 or MONOCHROME2 (a grayscale image)"),
]


def read_header(path):
    """Reads one file's header (never its pixels) and checks it.

    Args:
      path: a file that should hold one DICOM image.
    Returns:
      a SliceHeader. A CT slice's position, orientation, spacing, thickness and rescale are
      checked and recorded; a slice of another modality is only identified.
    Raises:
      LidcError: naming the file and the reason it cannot be used.
    """
    ds, values = _read_tags(path)
    if not values.get("SeriesInstanceUID") or not values.get("SOPInstanceUID"):
        raise LidcError(path, "DICOM file without series or SOP instance UID")
    if values.get("Rows") is None or values.get("Columns") is None:
        raise LidcError(path, "DICOM file without an image (no Rows/Columns)")
    modality = str(values.get("Modality", "")).strip()
    if not modality:
        raise LidcError(path, "no Modality: cannot tell whether it is a CT image")
    identity = dict(path=str(path), modality=modality,
                    patient_id=str(values.get("PatientID", "")),
                    study_uid=str(values.get("StudyInstanceUID", "")),
                    series_uid=str(values["SeriesInstanceUID"]),
                    sop_uid=str(values["SOPInstanceUID"]))
    if modality != "CT":  # refused with its whole series (lidc.stages.index): nothing to check
        return SliceHeader(**identity, position=None, instance_number=0, spacing=None,
                           thickness=None, shape=(values["Rows"], values["Columns"]))
    shape = _pixel_format(path, values)
    _check_pixel_data(path, ds, values)
    rescale = hu_rescale(path, values, modality_lut=ds.get_item(_MODALITY_LUT) is not None)
    layout = _layout(path, ds, values, rescale)
    return SliceHeader(**identity, **_geometry(path, values), shape=shape,
                       slope=rescale.slope, intercept=rescale.intercept,
                       pixel_layout=layout and dataclasses.astuple(layout))


def _read_tags(path):
    """The deferred dataset of `path` and the values of _HEADER_TAGS in it."""
    try:
        # PixelData is listed but deferred: its length and offset are read, never its bytes.
        ds = pydicom.dcmread(path, defer_size=1024, specific_tags=_READ_TAGS)
        return ds, _values(ds, _HEADER_TAGS)
    except PermissionError as e:
        raise LidcError(path, f"cannot open the file ({e.strerror}): make it readable and run "
                              "the index again") from None
    except Exception as e:  # pydicom raises many types for a file that is not DICOM
        detail = " ".join(str(e).split())
        raise LidcError(path, f"not a readable DICOM file ({type(e).__name__}: {detail})") \
            from None


def _values(ds, tags):
    """keyword -> value of the `tags` (keyword -> tag) present in `ds`, converted straight from
    the raw elements: pydicom's attribute access builds and validates a DataElement each time,
    which costs as much as parsing the file (bench/README.md)."""
    values = {}
    for keyword, tag in tags.items():
        raw = ds.get_item(tag)
        if raw is None:
            continue
        if isinstance(raw, DataElement):  # already converted (pixel_array reads group 0028)
            value = raw.value
        else:
            value = _raw_value(ds, tag, raw)
        if value is not None and value != "":
            values[keyword] = value
    return values


def _raw_value(ds, tag, raw):
    # Implicit-VR files leave the VR to the dictionary; 'US or SS' elements (the padding
    # value) have the sign of the pixels.
    vr = raw.VR or dictionary_VR(tag)
    if vr == "US or SS":
        vr = "SS" if ds.get("PixelRepresentation") == 1 else "US"
    if vr in ("DS", "IS") and isinstance(raw.value, bytes):
        return _number_strings(raw.value)
    return convert_value(vr, raw)


def _number_strings(data):
    """A DS or IS element's text, unconverted: one string, or a list of them. The callers parse
    and check it (`_numbers`, `_integer`); pydicom's DSfloat would cost as much again."""
    items = [item.strip(" \0") for item in data.decode("ascii", "replace").split("\\")]
    return items[0] if len(items) == 1 else items


def _items(value):
    """The values of a header element as a list (one for a single value)."""
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _shown(value):
    """A header value as DICOM writes it (multiple values joined by backslashes), short."""
    value = "\\".join(str(v) for v in _items(value))
    text = " ".join(str(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _numbers(path, values, keyword, count, positive=False):
    """The `count` values of `keyword` as finite floats (positive ones when asked); None when
    absent.

    Raises:
      LidcError: the value is not `count` such numbers.
    """
    value = values.get(keyword)
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in _items(value))
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not all(math.isfinite(v) and (v > 0 or not positive)
                                        for v in numbers):
        kind = "positive finite number" if positive else "finite number"
        wanted = f"one {kind}" if count == 1 else f"{count} {kind}s"
        raise LidcError(path, f"{keyword} '{_shown(value)}' is not {wanted}")
    return numbers


def _integer(path, values, keyword, default=None):
    """`keyword`'s value as an int (`default` when absent); LidcError when it is not one."""
    value = values.get(keyword, default)
    if value is None or isinstance(value, int):
        return value if value is None else int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():
        raise LidcError(path, f"{keyword} '{_shown(value)}' is not an integer")
    return int(number)


def _pixel_format(path, values):
    """(rows, cols) of a CT slice whose pixel format this pipeline decodes: one frame of one
    grayscale sample per pixel; LidcError naming the attribute otherwise."""
    shape = (_integer(path, values, "Rows"), _integer(path, values, "Columns"))
    if min(shape) < 1:
        raise LidcError(path, f"Rows x Columns {shape[0]} x {shape[1]} is not an image")
    for keyword, default, allowed, valid in _PIXEL_FORMAT:
        value = values.get(keyword, default)
        if value is None:
            raise LidcError(path, f"no {keyword}: the pixels cannot be decoded")
        value = str(value).strip() if isinstance(value, str) else _integer(path, values,
                                                                           keyword, default)
        if value not in allowed:
            raise LidcError(path, f"{keyword} {_shown(value)} is not {valid}")
    bits = _integer(path, values, "BitsStored")
    if bits is None or not 1 <= bits <= values["BitsAllocated"]:
        raise LidcError(path, f"BitsStored {bits} does not fit BitsAllocated "
                              f"{values['BitsAllocated']}")
    return shape


def _geometry(path, values):
    """A CT slice's position, orientation, pixel spacing, thickness and InstanceNumber, checked
    (SliceHeader's fields); LidcError naming the attribute that is missing or malformed."""
    position = _numbers(path, values, "ImagePositionPatient", 3)
    if position is None:
        raise LidcError(path, "no ImagePositionPatient: cannot place the slice in z")
    spacing = _numbers(path, values, "PixelSpacing", 2, positive=True)
    if spacing is None:
        raise LidcError(path, "no PixelSpacing: the size of the pixels in mm is unknown")
    thickness = _numbers(path, values, "SliceThickness", 1, positive=True)
    return dict(position=position, orientation=_orientation(path, values), spacing=spacing,
                thickness=thickness[0] if thickness else None,
                instance_number=_integer(path, values, "InstanceNumber", 0))


def _orientation(path, values):
    """ImageOrientationPatient of an axial slice, as 6 floats.

    The row and column directions may point either way (a flipped or transposed image): the
    marks' pixel coordinates are in the stored grid, z comes from ImagePositionPatient, and
    world coordinates use the recorded cosines (SliceHeader.world).

    Raises:
      LidcError: absent, not 6 finite numbers, not two unit vectors at right angles, or a
        slice normal more than AXIAL_TOLERANCE_DEGREES from the z axis.
    """
    cosines = _numbers(path, values, "ImageOrientationPatient", 6)
    if cosines is None:
        raise LidcError(path, "no ImageOrientationPatient: the slice's orientation is unknown, "
                              "so it cannot be taken as axial")
    row, col = cosines[:3], cosines[3:]
    dot = sum(a * b for a, b in zip(row, col))
    if (abs(math.hypot(*row) - 1) > _COSINE_TOLERANCE
            or abs(math.hypot(*col) - 1) > _COSINE_TOLERANCE or abs(dot) > _COSINE_TOLERANCE):
        raise LidcError(path, f"ImageOrientationPatient {_shown(cosines)} is not two unit "
                              "vectors at right angles")
    normal_z = row[0] * col[1] - row[1] * col[0]
    tilt = math.degrees(math.acos(min(1.0, abs(normal_z))))
    if tilt > AXIAL_TOLERANCE_DEGREES:
        raise LidcError(path, f"ImageOrientationPatient {_shown(cosines)} is not axial: the "
                              f"slice normal is {tilt:.1f} degrees from the z axis (more than "
                              f"{AXIAL_TOLERANCE_DEGREES:g}); only axial series are indexed")
    return cosines


@dataclass(frozen=True)
class Rescale:
    """How one slice's stored values become HU: stored x slope + intercept; stored values from
    padding to padding_limit (both included; padding alone without a limit) lie outside the
    scanner's field of view and become air."""
    slope: float
    intercept: float
    padding: int | None = None
    padding_limit: int | None = None


def hu_rescale(path, values, modality_lut=False):
    """The checked Rescale of a CT slice, from its header values (keyword -> value).

    Args:
      path: the file, for the error.
      values: its RescaleSlope, RescaleIntercept, RescaleType, PixelPaddingValue,
        PixelPaddingRangeLimit, PixelRepresentation and BitsAllocated where present.
      modality_lut: whether it has a Modality LUT Sequence.
    Returns:
      a Rescale.
    Raises:
      LidcError: its HU cannot be established: a Modality LUT Sequence (pydicom would apply it
        instead of the rescale), a RescaleType other than HU, RescaleSlope or RescaleIntercept
        absent (no default is safe: intercept 0 instead of -1024 shifts every HU by 1024), a
        slope that is not a positive finite number or an intercept that is not finite.
    """
    if modality_lut:
        raise LidcError(path, "has a Modality LUT Sequence, which a CT image does not use: its "
                              "HU cannot be established from RescaleSlope/RescaleIntercept")
    kind = str(values.get("RescaleType", "HU")).strip()
    if kind != "HU":
        raise LidcError(path, f"RescaleType {kind!r} is not HU: its rescaled values are not "
                              "Hounsfield units")
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in values:
            raise LidcError(path, f"no {keyword}: the slice's HU cannot be established (a CT "
                                  "image states RescaleSlope and RescaleIntercept)")
    (slope,) = _numbers(path, values, "RescaleSlope", 1, positive=True)
    (intercept,) = _numbers(path, values, "RescaleIntercept", 1)
    return Rescale(slope, intercept, _padding(path, values, "PixelPaddingValue"),
                   _padding(path, values, "PixelPaddingRangeLimit"))


def _padding(path, values, keyword):
    """A padding value as the pixels are read: some files store a signed value as US (or an
    unsigned one as SS); the same bits, read with the pixels' sign and width, are meant."""
    value = _integer(path, values, keyword)
    if value is None:
        return None
    bits = _integer(path, values, "BitsAllocated", 16)
    value &= (1 << bits) - 1
    if values.get("PixelRepresentation") == 1 and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _check_pixel_data(path, ds, values):
    """Refuses, at the index, a slice whose pixels the crop stage could not read: none at all,
    fewer bytes than its header describes, a file that ends before them, or a compression that
    no installed decoder reads. `values` hold a checked pixel format (one frame, one sample)."""
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if element is None:
        raise LidcError(path, "DICOM file without pixel data")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        missing = _missing_decoder(syntax)
        if missing:
            raise LidcError(path, f"compressed as {syntax.name}, which no installed decoder "
                                  f"reads ({missing}); install one and run the index again")
        return  # encapsulated frames have no fixed size to check
    length = getattr(element, "length", None)
    length = len(element.value or b"") if length is None else length
    need = int(values["Rows"]) * int(values["Columns"]) * int(values["BitsAllocated"]) // 8
    if length < need:
        raise LidcError(path, f"pixel data of {length} bytes is shorter than the {need} bytes "
                              "its header describes")
    if syntax is not None and syntax.is_deflated:
        return  # offsets are in the inflated stream: the file's size cannot tell a truncation
    start = getattr(element, "value_tell", None)
    size = Path(path).stat().st_size
    if start is not None and start + need > size:
        raise LidcError(path, f"file of {size} bytes ends before its {need} bytes of pixel data "
                              "(truncated)")


# Transfer syntaxes whose pixel data lie in the file as the array holds them (little endian,
# neither compressed nor deflated): a slice's pixels are then one read at a known offset.
_IN_PLACE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)


@dataclass(frozen=True)
class PixelLayout:
    """Where a slice's stored pixels lie in its file and how to read them, with its checked
    rescale: what the crop needs to read them with one read (`read_stored_at`) instead of
    parsing the header the index parsed already. header_sha1 is the digest of the file's bytes
    before the pixels when the index read it: a file whose header changed since (another
    rescale, another offset) is read through its header again."""
    offset: int
    dtype: str  # little endian, as numpy spells it ("<i2")
    bits_stored: int
    rows: int
    cols: int
    header_sha1: str
    slope: float
    intercept: float
    padding: int | None
    padding_limit: int | None

    def to_text(self):
        """The layout as slices.csv holds it (JSON: every number round-trips exactly)."""
        return json.dumps(dataclasses.astuple(self))

    @classmethod
    def from_text(cls, text):
        """The layout `to_text` wrote; None for an empty cell (pixels read through the header)."""
        return cls(*json.loads(text)) if text else None


def _layout(path, ds, values, rescale):
    """The PixelLayout of a checked CT slice, or None where its pixels are not stored in place
    (compressed, deflated, big endian, no file meta) or their offset is unknown."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    start = getattr(ds.get_item(_PIXEL_DATA, keep_deferred=True), "value_tell", None)
    stored = values.get("BitsStored")
    bits = int(values["BitsAllocated"])
    if syntax not in _IN_PLACE or start is None or not isinstance(stored, int) or \
            not 0 < stored <= bits:
        return None  # the crop reads such a slice through its header, as pydicom decodes it
    kind = "i" if values.get("PixelRepresentation") == 1 else "u"
    with open(path, "rb") as f:
        header = f.read(int(start))
    return PixelLayout(int(start), np.dtype(f"<{kind}{bits // 8}").str, stored,
                       int(values["Rows"]), int(values["Columns"]),
                       hashlib.sha1(header).hexdigest(), rescale.slope, rescale.intercept,
                       rescale.padding, rescale.padding_limit)


@functools.cache
def _missing_decoder(syntax):
    """'' when pydicom has a working decoder for `syntax`, else what it would need."""
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError) as e:
        return str(e)
    if decoder.is_available:
        return ""
    missing = " or ".join(decoder.missing_dependencies)
    return f"needs {missing}" if missing else "no decoder is registered"


def decoders_key():
    """The compressed transfer syntaxes this installation decodes: part of the index's
    fingerprint, so that installing a decoder redoes the slices refused for lack of one."""
    return tuple(sorted(str(uid) for uid in AllTransferSyntaxes
                        if uid.is_compressed and not _missing_decoder(uid)))


def read_headers(paths):
    """Reads the headers of `paths`; returns (headers, skipped) with skipped = [(path, reason)]."""
    headers, skipped = [], []
    for path in paths:
        try:
            headers.append(read_header(path))
        except LidcError as e:
            skipped.append((e.path, e.reason))
    return headers, skipped


def group_series(headers):
    """Groups slice headers into Series by SeriesInstanceUID, each sorted and checked."""
    by_uid = defaultdict(list)
    for h in headers:
        by_uid[h.series_uid].append(h)
    return [order_slices(group) for _, group in sorted(by_uid.items())]


def order_slices(headers):
    """Checks one series' slices against each other and sorts them by z.

    Dropped (reported in `problems`): slices whose Modality, pixel spacing, matrix or
    orientation differs from the series' majority, and the second of two slices at the same z
    (the lower InstanceNumber is kept, as pylidc does). Kept but reported: gaps in z (`gaps`:
    patches are 2-D, so a missing slice loses only itself) and slices that share a
    SOPInstanceUID (`warnings`: a mark naming that UID is placed by its z instead).
    """
    first = headers[0]
    kept, problems = _agreeing(headers)
    gaps = []
    if kept[0].modality == "CT":  # other series are refused whole: no geometry to order by
        kept, duplicates = _unique_z(kept)
        problems.extend(duplicates)
        gaps = _gaps(kept)
    return Series(patient_id=first.patient_id, study_uid=first.study_uid,
                  series_uid=first.series_uid, modality=kept[0].modality, slices=kept,
                  folders=sorted({os.path.dirname(h.path) for h in headers}),
                  problems=problems, gaps=gaps, warnings=_shared_uids(kept))


# What every slice of a series must share, with the name a report gives it.
_SHARED = ("Modality", "pixel spacing/matrix", "ImageOrientationPatient")


def _shared_values(h):
    # Orientations agree to 1e-4: cosines written with other rounding are the same direction.
    orientation = h.orientation and tuple(round(v, 4) + 0.0 for v in h.orientation)
    return h.modality, (h.spacing, h.shape), orientation


def _agreeing(headers):
    """The slices that agree with the series' majority in _SHARED, and (path, reason) for the
    others."""
    shared = [_shared_values(h) for h in headers]
    majority = Counter(shared).most_common(1)[0][0]
    kept, problems = [], []
    for h, values in zip(headers, shared):
        if values == majority:
            kept.append(h)
            continue
        name, mine, theirs = next(d for d in zip(_SHARED, values, majority) if d[1] != d[2])
        if name == "pixel spacing/matrix":
            mine, theirs = (f"{spacing}/{shape}" for spacing, shape in (mine, theirs))
        problems.append((h.path, f"{name} {mine} differs from the series' {theirs}"))
    return kept, problems


def _unique_z(headers):
    """The slices sorted by z, without the second of two at the same z; and those dropped."""
    ordered = sorted(headers, key=lambda h: (h.z, h.instance_number))
    unique, dropped = [], []
    for h in ordered:
        if unique and abs(h.z - unique[-1].z) < 1e-3:
            dropped.append((h.path, f"duplicate slice at z={h.z:g} (kept {unique[-1].path})"))
        else:
            unique.append(h)
    return unique, dropped


def _shared_uids(slices):
    """(path, reason) of each kept slice whose SOPInstanceUID another kept slice also has."""
    by_uid = defaultdict(list)
    for h in slices:
        by_uid[h.sop_uid].append(h)
    return [(h.path, f"kept, but its SOPInstanceUID {uid} is shared by {len(group)} slices of "
                     f"series {h.series_uid} (at z="
                     f"{', '.join(f'{g.z:g}' for g in group)}): a mark naming it is placed by "
                     "its z")
            for uid, group in by_uid.items() if len(group) > 1 for h in group]


def _gaps(slices):
    if len(slices) < 3:
        return []
    z = np.array([s.z for s in slices])
    steps = np.diff(z)
    step = np.median(steps)
    return [(slices[i + 1].path, f"gap in z: {steps[i]:g} mm after z={z[i]:g} "
                                 f"(usual step {step:g} mm)")
            for i in np.flatnonzero(steps > 1.5 * step)]


def read_hu(path):
    """Reads one slice's pixels as int16 HU.

    Pixels equal to PixelPaddingValue (outside the scanner's field of view) become air, so a
    crop at the edge of the field of view sees air, not -3000 HU.

    Raises:
      LidcError: the pixels cannot be decoded, or the slice's HU cannot be established.
    """
    return read_stored(path).hu()


class Stored:
    """One slice's stored pixels and what turns them into HU; .hu(part) converts any part of
    them (so that a crop converts only the pixels under its patches)."""

    def __init__(self, pixels, slope, intercept, padding, padding_limit=None):
        self.pixels, self.slope, self.intercept = pixels, slope, intercept
        self.padding, self.padding_limit = padding, padding_limit

    def hu(self, part=None):
        """int16 HU of `part` (a view of self.pixels; all of them by default)."""
        stored = self.pixels if part is None else part
        hu = _to_hu(stored, self.slope, self.intercept)
        if self.padding is not None and self.padding_limit is None:
            hu[stored == self.padding] = AIR_HU
        elif self.padding is not None:
            low, high = sorted((self.padding, self.padding_limit))
            hu[(stored >= low) & (stored <= high)] = AIR_HU
        return hu


def read_stored(path):
    """Reads one slice's stored pixels and its rescale, checked as the index checks it.

    Returns:
      a Stored.
    Raises:
      LidcError: naming the file, when the pixels cannot be decoded or are not one 2-D frame,
        or the slice's HU cannot be established (see hu_rescale).
    """
    try:
        stored, ds = _decode(path)
    except Exception as e:  # pydicom raises many types for bad or undecodable pixel data
        detail = " ".join(str(e).split())  # plugin errors span lines; a report row should not
        raise LidcError(path, f"cannot decode the pixel data ({type(e).__name__}: {detail})") \
            from None
    if stored.ndim != 2:
        raise LidcError(path, f"expected one 2-D frame, found pixel array of shape {stored.shape}")
    rescale = hu_rescale(path, _values(ds, _HU_TAGS),
                         modality_lut=ds.get_item(_MODALITY_LUT) is not None)
    return Stored(stored, rescale.slope, rescale.intercept, rescale.padding,
                  rescale.padding_limit)


def read_stored_at(path, layout):
    """read_stored(path), read from the pixels' place in the file (`layout`, a PixelLayout from
    the index) while the bytes before them are those the index read; a file whose header
    changed, or one without a layout, is read through its header."""
    if layout is None:
        return read_stored(path)
    dtype = np.dtype(layout.dtype)
    end = layout.offset + layout.rows * layout.cols * dtype.itemsize
    try:
        with open(path, "rb") as f:
            data = f.read(end)
    except OSError:
        return read_stored(path)  # which names what is wrong with the file
    if len(data) != end or hashlib.sha1(data[:layout.offset]).hexdigest() != layout.header_sha1:
        return read_stored(path)
    pixels = np.frombuffer(bytearray(data), dtype, offset=layout.offset)
    pixels = _unused_bits_cleared(pixels.reshape(layout.rows, layout.cols), layout.bits_stored)
    return Stored(pixels, layout.slope, layout.intercept, layout.padding, layout.padding_limit)


def _unused_bits_cleared(pixels, bits_stored):
    """Stored values with the bits above BitsStored cleared (unsigned) or made copies of the
    sign bit (signed), as pydicom's decoding does: some scanners keep overlays there."""
    unused = pixels.dtype.itemsize * 8 - bits_stored
    if unused == 0:
        return pixels
    if pixels.dtype.kind == "u":
        return pixels & pixels.dtype.type((1 << bits_stored) - 1)
    return (pixels << unused) >> unused


def _decode(path):
    """(stored pixels, the dataset holding the rescale elements) of one file."""
    ds = pydicom.Dataset()
    try:
        # Reads the pixels straight from the file into the array, with only the elements named
        # here: half the time of dcmread + Dataset.pixel_array (bench/README.md).
        stored = pydicom.pixels.pixel_array(str(path), ds_out=ds,
                                            specific_tags=list(_HU_TAGS.values()))
        return stored, ds
    except Exception:
        # A deflated file cannot be read in place (its elements are compressed as a whole):
        # only then is it read whole, so that the usual file pays nothing for it.
        if not read_file_meta_info(path).TransferSyntaxUID.is_deflated:
            raise
    ds = pydicom.dcmread(path)
    return ds.pixel_array, ds


_INT16 = np.iinfo(np.int16)


def _to_hu(stored, slope, intercept):
    """stored x slope + intercept as int16, rounded, clipped to int16's range."""
    shift = round(intercept)
    if slope == 1 and shift == intercept and stored.dtype.kind in "iu" and stored.size:
        # The usual case: when the stored values and their sums fit int16, one int16 addition
        # (a third of the time of widening, adding and clipping).
        low, high = int(stored.min()), int(stored.max())
        if (_INT16.min <= min(low, low + shift, shift)
                and max(high, high + shift, shift) <= _INT16.max):
            return np.add(stored, np.int16(shift), dtype=np.int16, casting="unsafe")
        hu = stored.astype(np.int32) + shift
    else:
        hu = np.rint(stored.astype(np.float32) * slope + intercept)
    return np.clip(hu, _INT16.min, _INT16.max).astype(np.int16)
