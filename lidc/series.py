"""DICOM CT series: find them by header, order their slices by z, read them as HU volumes.

Rules (pylidc's, written our own way): a series is found by its SeriesInstanceUID and Modality,
never by folder name; slices are sorted by the z of ImagePositionPatient (ties: the lower
InstanceNumber is kept, the other reported as a duplicate); HU = stored x RescaleSlope +
RescaleIntercept.

    headers, skipped = read_headers(folder)
    for series in group_series(headers): ...
    hu = read_hu(path)           # one slice, int16 HU
"""
import functools
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import AllTransferSyntaxes
from pydicom.values import convert_value

from lidc.errors import LidcError
from lidc.records import Series, SliceHeader

AIR_HU = -1000
# The header elements the index needs, by tag, and their VR for files written with implicit VR.
_HEADER_TAGS = {keyword: tag_for_keyword(keyword) for keyword in [
    "Modality", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID",
    "ImagePositionPatient", "InstanceNumber", "PixelSpacing", "SliceThickness", "Rows", "Columns",
    "BitsAllocated", "SamplesPerPixel", "NumberOfFrames"]}
_HU_TAGS = {keyword: tag_for_keyword(keyword)
            for keyword in ["RescaleSlope", "RescaleIntercept", "PixelPaddingValue"]}
_PIXEL_DATA = tag_for_keyword("PixelData")


def read_header(path):
    """Reads one file's header; raises LidcError naming the file when it is not a usable image."""
    try:
        # PixelData is listed but deferred: its length and offset are read, never its bytes.
        ds = pydicom.dcmread(path, defer_size=1024,
                             specific_tags=[*_HEADER_TAGS.values(), _PIXEL_DATA])
        values = _values(ds, _HEADER_TAGS)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as e:
        raise LidcError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    if not values.get("SeriesInstanceUID") or not values.get("SOPInstanceUID"):
        raise LidcError(path, "DICOM file without series or SOP instance UID")
    if values.get("Rows") is None or values.get("Columns") is None:
        raise LidcError(path, "DICOM file without an image (no Rows/Columns)")
    _check_pixel_data(path, ds, values)
    try:
        return _slice_header(path, values)
    except (ValueError, TypeError, IndexError) as e:
        raise LidcError(path, f"unreadable header value ({type(e).__name__}: {e})") from None


def _values(ds, tags):
    """keyword -> value of the `tags` (keyword -> tag) present in `ds`, converted straight from
    the raw elements: pydicom's attribute access builds and validates a DataElement each time,
    which costs as much as parsing the file (bench/README.md)."""
    values = {}
    for keyword, tag in tags.items():
        raw = ds.get_item(tag)
        if raw is not None:
            # Implicit-VR files leave the VR to the dictionary; 'US or SS' elements (the padding
            # value) have the sign of the pixels.
            vr = raw.VR or dictionary_VR(tag)
            if vr == "US or SS":
                vr = "SS" if ds.get("PixelRepresentation") == 1 else "US"
            value = convert_value(vr, raw)
            if value is not None and value != "":
                values[keyword] = value
    return values


def _slice_header(path, values):
    position = values.get("ImagePositionPatient")
    spacing = values.get("PixelSpacing")
    thickness = values.get("SliceThickness")
    return SliceHeader(
        path=str(path), modality=str(values.get("Modality", "")),
        patient_id=str(values.get("PatientID", "")),
        study_uid=str(values.get("StudyInstanceUID", "")),
        series_uid=str(values["SeriesInstanceUID"]), sop_uid=str(values["SOPInstanceUID"]),
        z=float(position[2]) if _multiple(position, 3) else None,
        instance_number=int(values.get("InstanceNumber") or 0),
        spacing=(float(spacing[0]), float(spacing[1])) if _multiple(spacing, 2) else None,
        thickness=float(thickness) if thickness is not None else None,
        shape=(int(values["Rows"]), int(values["Columns"])))


def _multiple(value, count):
    return value is not None and not isinstance(value, str) and len(value) == count


def _check_pixel_data(path, ds, values):
    """Refuses, at the index, a slice whose pixels the crop stage could not read: none at all,
    fewer bytes than its header describes, a file that ends before them, or a compression that
    no installed decoder reads."""
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
    frames = int(values.get("NumberOfFrames") or 1)
    need = (int(values["Rows"]) * int(values["Columns"]) * int(values.get("SamplesPerPixel") or 1)
            * frames * int(values.get("BitsAllocated") or 16) // 8)
    if length < need:
        raise LidcError(path, f"pixel data of {length} bytes is shorter than the {need} bytes "
                              "its header describes")
    start = getattr(element, "value_tell", None)
    size = Path(path).stat().st_size
    if start is not None and start + need > size:
        raise LidcError(path, f"file of {size} bytes ends before its {need} bytes of pixel data "
                              "(truncated)")


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
    """Sorts one series' slices by z and drops what cannot belong to its volume.

    Dropped (reported in `problems`): slices without a position, slices whose pixel spacing or
    matrix differs from the series' majority, and the second of two slices at the same z (the
    lower InstanceNumber is kept). Gaps in z are kept but reported in `warnings`: patches are
    2-D, so a missing slice loses only itself.
    """
    first = headers[0]
    problems, warnings = [], []
    placed = []
    for h in headers:
        if h.z is None:
            problems.append((h.path, "no ImagePositionPatient: cannot place the slice in z"))
        else:
            placed.append(h)
    geometry = Counter((h.spacing, h.shape) for h in placed).most_common(1)
    kept = []
    for h in placed:
        if (h.spacing, h.shape) != geometry[0][0]:
            problems.append((h.path, f"pixel spacing/matrix {h.spacing}/{h.shape} differs from "
                                     f"the series' {geometry[0][0][0]}/{geometry[0][0][1]}"))
        else:
            kept.append(h)
    kept.sort(key=lambda h: (h.z, h.instance_number))
    unique = []
    for h in kept:
        if unique and abs(h.z - unique[-1].z) < 1e-3:
            problems.append((h.path, f"duplicate slice at z={h.z:g} (kept {unique[-1].path})"))
        else:
            unique.append(h)
    warnings.extend(_gaps(unique))
    return Series(patient_id=first.patient_id, study_uid=first.study_uid,
                  series_uid=first.series_uid, modality=first.modality, slices=unique,
                  folders=sorted({os.path.dirname(h.path) for h in headers}),
                  problems=problems, warnings=warnings)


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
    """
    return read_stored(path).hu()


class Stored:
    """One slice's stored pixels and what turns them into HU; .hu(part) converts any part of
    them (so that a crop converts only the pixels under its patches)."""

    def __init__(self, pixels, slope, intercept, padding):
        self.pixels, self.slope, self.intercept, self.padding = pixels, slope, intercept, padding

    def hu(self, part=None):
        """int16 HU of `part` (a view of self.pixels; all of them by default)."""
        stored = self.pixels if part is None else part
        hu = _to_hu(stored, self.slope, self.intercept)
        if self.padding is not None:
            hu[stored == self.padding] = AIR_HU
        return hu


def read_stored(path):
    """Reads one slice's stored pixels and rescale values (a Stored); raises LidcError naming the
    file when they cannot be decoded."""
    ds = pydicom.Dataset()
    try:
        # Reads the pixels straight from the file into the array, with only the elements named
        # here: half the time of dcmread + Dataset.pixel_array (bench/README.md).
        stored = pydicom.pixels.pixel_array(str(path), ds_out=ds,
                                            specific_tags=list(_HU_TAGS.values()))
        values = _values(ds, _HU_TAGS)
    except Exception as e:  # pydicom raises many types for bad or undecodable pixel data
        detail = " ".join(str(e).split())  # plugin errors span lines; a report row should not
        raise LidcError(path, f"cannot decode the pixel data ({type(e).__name__}: {detail})") \
            from None
    if stored.ndim != 2:
        raise LidcError(path, f"expected one 2-D frame, found pixel array of shape {stored.shape}")
    return Stored(stored, float(values.get("RescaleSlope", 1) or 1),
                  float(values.get("RescaleIntercept", 0) or 0), values.get("PixelPaddingValue"))


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
