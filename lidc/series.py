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
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import AllTransferSyntaxes

from lidc.errors import LidcError
from lidc.records import Series, SliceHeader

AIR_HU = -1000
_HEADER_TAGS = ["Modality", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                "PatientID", "ImagePositionPatient", "InstanceNumber", "PixelSpacing",
                "SliceThickness", "Rows", "Columns", "SliceLocation"]


def read_header(path):
    """Reads one file's header; raises LidcError naming the file when it is not a usable image."""
    try:
        # PixelData is listed but deferred: its length and offset are read, never its bytes.
        ds = pydicom.dcmread(path, defer_size=1024, specific_tags=_HEADER_TAGS + [
            "BitsAllocated", "SamplesPerPixel", "NumberOfFrames", "PixelData"])
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as e:
        raise LidcError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "SeriesInstanceUID" not in ds or "SOPInstanceUID" not in ds:
        raise LidcError(path, "DICOM file without series or SOP instance UID")
    if "Rows" not in ds or "Columns" not in ds:
        raise LidcError(path, "DICOM file without an image (no Rows/Columns)")
    _check_pixel_data(path, ds)
    position = ds.get("ImagePositionPatient")
    spacing = ds.get("PixelSpacing")
    return SliceHeader(
        path=str(path), modality=str(ds.get("Modality", "")),
        patient_id=str(ds.get("PatientID", "")), study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.SeriesInstanceUID), sop_uid=str(ds.SOPInstanceUID),
        z=float(position[2]) if position is not None and len(position) == 3 else None,
        instance_number=int(ds.get("InstanceNumber") or 0),
        spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
        thickness=float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else None,
        shape=(int(ds.Rows), int(ds.Columns)))


def _check_pixel_data(path, ds):
    """Refuses, at the index, a slice whose pixels the crop stage could not read: none at all,
    fewer bytes than its header describes, a file that ends before them, or a compression that
    no installed decoder reads."""
    if "PixelData" not in ds:
        raise LidcError(path, "DICOM file without pixel data")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        missing = _missing_decoder(syntax)
        if missing:
            raise LidcError(path, f"compressed as {syntax.name}, which no installed decoder "
                                  f"reads ({missing}); install one and run the index again")
        return  # encapsulated frames have no fixed size to check
    element = ds.get_item("PixelData", keep_deferred=True)
    length = getattr(element, "length", None)
    length = len(element.value or b"") if length is None else length
    frames = int(ds.get("NumberOfFrames") or 1)
    need = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * frames
            * int(ds.get("BitsAllocated") or 16) // 8)
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
                  folders=sorted({str(Path(h.path).parent) for h in headers}),
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
    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception as e:  # pydicom raises many types for bad or undecodable pixel data
        detail = " ".join(str(e).split())  # plugin errors span lines; a report row should not
        raise LidcError(path, f"cannot decode the pixel data ({type(e).__name__}: {detail})") \
            from None
    if stored.ndim != 2:
        raise LidcError(path, f"expected one 2-D frame, found pixel array of shape {stored.shape}")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1:  # the usual case: integer arithmetic, no float pass over the pixels
        hu = stored.astype(np.int32) + int(round(intercept))
    else:
        hu = np.rint(stored.astype(np.float32) * slope + intercept)
    hu = np.clip(hu, -32768, 32767).astype(np.int16)
    padding = ds.get("PixelPaddingValue")
    if padding is not None:
        hu[stored == padding] = AIR_HU
    return hu
