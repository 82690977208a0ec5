"""Stage 1, index: find every CT series under a LIDC root and the XML reads that belong to it.

Series are found by their DICOM headers (SeriesInstanceUID, Modality), never by folder names;
an XML read is matched to its series by the SeriesInstanceUid in its header, never by folder.
Writes WORK/index.csv (one row per CT series), WORK/slices.csv (one row per slice, in z order:
the slice table every later stage uses) and WORK/skipped/index.csv (what was not used, and why).

    python -m tools.index --root data/LIDC-IDRI --work data/work [--png]
"""
import os
from collections import defaultdict
from pathlib import Path

import cv2

from lidc import reads, series as dicom
from lidc.errors import LidcError
from lidc.io import write_csv
from lidc.patches import lung_window_u8
from lidc.resume import Parts, file_stat, fingerprint
from tools import cli

INDEX_COLUMNS = ["patient_id", "study_uid", "series_uid", "folder", "xml", "slices", "rows",
                 "cols", "pixel_spacing", "slice_thickness", "z_min", "z_max", "dropped_slices",
                 "gaps"]
# Files that travel with downloads (licences, manifests, our cohort.json) and are never images.
DOCUMENTS = (".json", ".md", ".txt", ".csv", ".tsv", ".pdf", ".html")
SLICE_COLUMNS = ["series_uid", "slice_index", "z", "sop_uid", "instance_number", "path"]


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "root", "work", "workers", "force")
    p.add_argument("--png", action="store_true",
                   help="also export every CT slice as a lossless 8-bit PNG in a lung window "
                        "(-600 HU centre, 1500 HU width) under WORK/png/PATIENT/SERIES/")
    return p


def read_folder(item):
    """One folder's DICOM headers and XML series UIDs (runs in a worker process)."""
    folder, names = item
    headers, xml, skipped = [], [], []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):  # opening a named pipe would wait forever for a writer
            skipped.append((path, "not a regular file (a pipe, socket or device)"))
        elif name.lower().endswith(".xml"):
            try:
                xml.append((path, *reads.header_uids(path)))
            except LidcError as e:
                skipped.append((e.path, e.reason))
        else:
            try:
                headers.append(dicom.read_header(path))
            except LidcError as e:
                skipped.append((e.path, e.reason))
    return {"headers": headers, "xml": xml, "skipped": skipped}


def folder_units(root):
    """(key, fingerprint, (folder, names)) for each folder holding files, in a stable order."""
    units = []
    decoders = dicom.decoders_key()
    for folder, dirs, files in os.walk(root):
        # Hidden folders are unfinished writes (ours or a downloader's), not data.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = sorted(f for f in files if not f.startswith(".")
                       and not f.lower().endswith(DOCUMENTS))
        if not names:
            continue
        stats = [(n, *file_stat(os.path.join(folder, n))) for n in names]
        units.append((folder, fingerprint(stats, decoders), (folder, names)))
    return units



def collect(parts, units):
    """Merges the folders' results: (CT series, xml by series uid, skipped)."""
    headers, xml, skipped = [], defaultdict(list), []
    for key, fp, _ in units:
        result = parts.load(key, fp)
        if result is None:
            continue
        headers.extend(result["headers"])
        skipped.extend(result["skipped"])
        for path, series_uid, _study in result["xml"]:
            xml[series_uid].append(path)
    ct = []
    for s in dicom.group_series(headers):
        skipped.extend(s.problems)
        if s.modality != "CT":
            skipped.append((";".join(s.folders), f"series {s.series_uid} has modality "
                                                 f"{s.modality or 'none'}, not CT"))
        elif not s.slices:
            skipped.append((";".join(s.folders), f"series {s.series_uid} has no usable slice"))
        else:
            ct.append(s)
    known = {s.series_uid for s in ct}
    for uid, paths in xml.items():
        if uid not in known:
            skipped.extend((p, f"no CT series with SeriesInstanceUid {uid} under the root")
                           for p in paths)
    return ct, xml, skipped


def index_row(s, xml_paths):
    return {
        "patient_id": s.patient_id, "study_uid": s.study_uid, "series_uid": s.series_uid,
        "folder": ";".join(s.folders), "xml": ";".join(sorted(xml_paths)),
        "slices": len(s.slices), "rows": s.shape[0], "cols": s.shape[1],
        "pixel_spacing": f"{s.spacing[0]:g}" if s.spacing else "",
        "slice_thickness": f"{s.thickness:g}" if s.thickness else "",
        "z_min": f"{s.slices[0].z:g}", "z_max": f"{s.slices[-1].z:g}",
        "dropped_slices": len(s.problems), "gaps": len(s.warnings)}


def slice_rows(s):
    return ({"series_uid": s.series_uid, "slice_index": i, "z": f"{h.z:g}", "sop_uid": h.sop_uid,
             "instance_number": h.instance_number, "path": h.path}
            for i, h in enumerate(s.slices))


def export_png(item):
    """Writes one series' slices as lossless PNG (runs in a worker process)."""
    out, paths = item
    written = 0
    for i, path in enumerate(paths):
        target = Path(out) / f"{i:04d}.png"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.part.png")
        cv2.imwrite(str(tmp), lung_window_u8(dicom.read_hu(path)))
        os.replace(tmp, target)
        written += 1
    return written


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.work_lock(args.work):
        return run(args)


def run(args):
    root = args.root.resolve()
    if not root.is_dir():
        raise LidcError(root, "the LIDC root does not exist (run tools/synthesize.sh for the "
                              "demo cohort, or point --root at a LIDC-IDRI download)")
    units = folder_units(root)
    if not units:
        raise LidcError(root, "the LIDC root holds no files")
    parts = Parts(args.work, "index", force=args.force)
    reused, done, failed = cli.run_units(parts, units, read_folder, args.workers,
                                         "index folders", unit="folder",
                                         cost=lambda item: len(item[1]))
    ct, xml, skipped = collect(parts, units)
    skipped = failed + skipped
    write_csv(args.work / "index.csv", [index_row(s, xml.get(s.series_uid, [])) for s in ct],
              INDEX_COLUMNS)
    write_csv(args.work / "slices.csv", (r for s in ct for r in slice_rows(s)), SLICE_COLUMNS)
    report = cli.write_skipped(args.work, "index", skipped)
    counts = {"folders read": done, "folders reused from an earlier run": reused,
              "CT series": len(ct), "slices": sum(len(s.slices) for s in ct),
              "series with XML": sum(1 for s in ct if s.series_uid in xml),
              "series without XML": sum(1 for s in ct if s.series_uid not in xml),
              "series with gaps in z": sum(1 for s in ct if s.warnings)}
    if args.png:
        jobs = [(str(args.work / "png" / s.patient_id / s.series_uid), [h.path for h in s.slices])
                for s in ct]
        counts["PNG slices written"] = sum(cli.parallel_map(export_png, jobs, args.workers,
                                                            "png"))
    cli.summary(f"index: {args.work / 'index.csv'}, {args.work / 'slices.csv'}", counts, skipped)
    print(f"  skip report: {report}")
    return 0


if __name__ == "__main__":
    cli.run(main)
