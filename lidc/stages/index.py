"""The index stage: every CT series under a LIDC root and the XML reads that belong to it.

Series are found by their DICOM headers (SeriesInstanceUID, Modality), never by folder names;
an XML read is matched to its series by the SeriesInstanceUid in its header, never by folder.
Writes WORK/index.csv (one row per CT series), WORK/slices.csv (one row per slice, in z order:
the slice table every later stage uses) and WORK/skipped/index.csv (what was not used, and why).

    result = run(Path("data/LIDC-IDRI"), Path("data/work"), workers=2)
"""
import json
import os
from collections import defaultdict
from dataclasses import dataclass

from lidc.errors import LidcError
from lidc.io import write_csv, write_png
from lidc.reads import header_uids
from lidc.resume import Parts, file_stat, fingerprint
from lidc.series import HEADER_VERSION, decoders_key, group_series, read_header, read_hu
from lidc.stages import StageResult, write_skipped
from lidc.windows import LUNG
from lidc.workers import Unit, parallel_map, run_units

# New columns go at the end, so that readers by position keep working. `pixel_spacing` is the distance between rows (PixelSpacing[0]) and
# `pixel_spacing_col` between columns (PixelSpacing[1]), in mm; `orientation` is the series'
# ImageOrientationPatient as a JSON array of 6 numbers (row direction, then column direction).
INDEX_COLUMNS = ["patient_id", "study_uid", "series_uid", "folder", "xml", "slices", "rows",
                 "cols", "pixel_spacing", "slice_thickness", "z_min", "z_max", "dropped_slices",
                 "gaps", "orientation", "pixel_spacing_col"]
# position_x, position_y and z are the slice's ImagePositionPatient (mm): the centre of its
# pixel (0, 0) in the DICOM patient frame.
SLICE_COLUMNS = ["series_uid", "slice_index", "z", "sop_uid", "instance_number", "path",
                 "position_x", "position_y"]
# Files that travel with downloads (licences, manifests, our cohort.json) and are never images.
DOCUMENTS = (".json", ".md", ".txt", ".csv", ".tsv", ".pdf", ".html")


@dataclass(frozen=True)
class Folder:
    """A folder to read, and the names of the files in it that may be DICOM or XML."""
    path: str
    names: tuple


def read_folder(folder):
    """One folder's DICOM headers, XML series UIDs and refusals (runs in a worker process)."""
    headers, xml, skipped = [], [], []
    for name in folder.names:
        path = os.path.join(folder.path, name)
        try:
            if not os.path.isfile(path):  # opening a named pipe would wait forever for a writer
                raise LidcError(path, "not a regular file (a pipe, socket or device)")
            if name.lower().endswith(".xml"):
                xml.append((path, *header_uids(path)))
            else:
                headers.append(read_header(path))
        except LidcError as e:
            skipped.append((e.path, e.reason))
    return {"headers": headers, "xml": xml, "skipped": skipped}


def folder_units(root):
    """A Unit for each folder holding files, in a stable order."""
    units = []
    decoders = decoders_key()
    for path, dirs, files in os.walk(root):
        # Hidden folders are unfinished writes (ours or a downloader's), not data.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = sorted(f for f in files if not f.startswith(".")
                       and not f.lower().endswith(DOCUMENTS))
        if not names:
            continue
        stats = [(n, *file_stat(os.path.join(path, n))) for n in names]
        units.append(Unit(path, fingerprint(stats, decoders, HEADER_VERSION),
                          Folder(path, tuple(names))))
    return units


def collect(parts, units):
    """Merges the folders' results: (CT series, xml paths by series uid, skipped)."""
    headers, xml, skipped = [], defaultdict(list), []
    for unit in units:
        result = parts.load(unit.key, unit.fingerprint)
        if result is None:
            continue
        headers.extend(result["headers"])
        skipped.extend(result["skipped"])
        for path, series_uid, _study in result["xml"]:
            xml[series_uid].append(path)
    ct = []
    for found in group_series(headers):
        skipped.extend(found.problems)
        skipped.extend(found.warnings)
        if found.modality != "CT":
            skipped.append((";".join(found.folders), f"series {found.series_uid} has modality "
                                                     f"{found.modality or 'none'}, not CT"))
        elif not found.slices:
            skipped.append((";".join(found.folders),
                            f"series {found.series_uid} has no usable slice"))
        else:
            ct.append(found)
    known = {s.series_uid for s in ct}
    for uid, paths in xml.items():
        if uid not in known:
            skipped.extend((p, f"no CT series with SeriesInstanceUid {uid} under the root")
                           for p in paths)
    return ct, xml, skipped


def _exact(number):
    """A float as the shortest text that reads back as the same float ('-379', '0.820312')."""
    text = repr(float(number))
    return text[:-2] if text.endswith(".0") else text


def index_row(series, xml_paths):
    """The index.csv row of one CT series."""
    return {
        "patient_id": series.patient_id, "study_uid": series.study_uid,
        "series_uid": series.series_uid, "folder": ";".join(series.folders),
        "xml": ";".join(sorted(xml_paths)), "slices": len(series.slices),
        "rows": series.shape[0], "cols": series.shape[1],
        "pixel_spacing": _exact(series.spacing[0]),
        "slice_thickness": _exact(series.thickness) if series.thickness else "",
        "z_min": _exact(series.slices[0].z), "z_max": _exact(series.slices[-1].z),
        "dropped_slices": len(series.problems), "gaps": len(series.gaps),
        "orientation": json.dumps([float(v) for v in series.orientation]),
        "pixel_spacing_col": _exact(series.spacing[1])}


def slice_rows(series):
    """The slices.csv rows of one CT series, in z order."""
    return ({"series_uid": series.series_uid, "slice_index": i, "z": _exact(h.z),
             "sop_uid": h.sop_uid, "instance_number": h.instance_number, "path": h.path,
             "position_x": _exact(h.position[0]), "position_y": _exact(h.position[1])}
            for i, h in enumerate(series.slices))


def export_png(job):
    """Writes one series' slices as lossless 8-bit lung-window PNGs (runs in a worker process);
    job is (folder, slice paths in z order). Returns how many were written."""
    out, paths = job
    written = 0
    for i, path in enumerate(paths):
        target = os.path.join(out, f"{i:04d}.png")
        if not os.path.exists(target):
            write_png(target, LUNG.to_u8(read_hu(path)))
            written += 1
    return written


def run(root, work, workers=1, force=False, png=False):
    """Indexes the LIDC root `root` into WORK; returns the StageResult.

    Raises:
      LidcError: the root does not exist or holds no files.
    """
    root = root.resolve()
    if not root.is_dir():
        raise LidcError(root, "the LIDC root does not exist (run tools/synthesize.sh for the "
                              "demo cohort, or point --root at a LIDC-IDRI download)")
    units = folder_units(root)
    if not units:
        raise LidcError(root, "the LIDC root holds no files")
    parts = Parts(work, "index", force=force)
    reused, done, failed = run_units(parts, units, read_folder, workers, unit="folder",
                                     cost=lambda folder: len(folder.names))
    ct, xml, skipped = collect(parts, units)
    skipped = failed + skipped
    write_csv(work / "index.csv", [index_row(s, xml.get(s.series_uid, [])) for s in ct],
              INDEX_COLUMNS)
    write_csv(work / "slices.csv", (r for s in ct for r in slice_rows(s)), SLICE_COLUMNS)
    counts = {"folders read": done, "folders reused from an earlier run": reused,
              "CT series": len(ct), "slices": sum(len(s.slices) for s in ct),
              "series with XML": sum(1 for s in ct if s.series_uid in xml),
              "series without XML": sum(1 for s in ct if s.series_uid not in xml),
              "series with gaps in z": sum(1 for s in ct if s.gaps)}
    if png:
        jobs = [(str(work / "png" / s.patient_id / s.series_uid), [h.path for h in s.slices])
                for s in ct]
        counts["PNG slices written"] = sum(parallel_map(export_png, jobs, workers, "png"))
    return StageResult(f"index: {work / 'index.csv'}, {work / 'slices.csv'}", counts, skipped,
                       write_skipped(work, "index", skipped))
