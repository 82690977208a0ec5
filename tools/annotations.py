"""Stage 2, annotations: every radiologist mark of every indexed series, placed on its slices.

Parses each series' XML reads with lxml (every reading session of every file), places each
region on a slice (by SOP UID, else by z), groups the readers' marks into lesions, and writes
WORK/annotations.pkl (the Mark records), WORK/annotations.csv (one row per mark per slice) and
WORK/skipped/annotations.csv.

    python -m tools.annotations --work data/work            # after the index stage
    python -m tools.annotations --xml tcia-lidc-xml/        # the XML-only archive, no images
"""
from collections import Counter, defaultdict
from pathlib import Path

from lidc import lesions, reads
from lidc.errors import LidcError
from lidc.io import read_csv, save_pickle, write_csv
from lidc.records import CLASS_NAMES
from lidc.resume import Parts, file_stat, fingerprint
from tools import cli

CSV_COLUMNS = ["mark_id", "patient_id", "series_uid", "reader", "radiologist_id", "label",
               "nodule_id", "slice_index", "z", "sop_uid", "row", "col", "row_min", "col_min",
               "row_max", "col_max", "points", "lesion_id", "lesion_readers", "malignancy",
               "status", "xml_file"]


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "work", "workers", "force")
    p.add_argument("--xml", type=Path, metavar="DIR",
                   help="read the standalone LIDC XML archive under DIR instead of the index "
                        "(no images: slice indices are left empty)")
    return p


def read_series(item):
    """Marks of one series, placed on its slices and grouped into lesions (worker process)."""
    marks, skipped, sessions = [], [], 0
    for path in item["xml"]:
        try:
            read = reads.parse_read(path, item["patient_id"])
        except LidcError as e:
            skipped.append((e.path, e.reason))
            continue
        if read.series_uid != item["series_uid"]:
            skipped.append((path, f"read of series {read.series_uid}, not {item['series_uid']}"))
            continue
        sessions += read.sessions
        marks.extend(read.marks)
    if item.get("sop_uids") is not None:
        lesions.match_slices(marks, item["sop_uids"], item["z"], item["thickness"],
                             item["shape"])
    for mark, number in zip(marks, lesions.cluster(marks, item["spacing"], item["thickness"])):
        mark.lesion_id = number
    return {"marks": marks, "skipped": skipped, "sessions": sessions}


def index_units(work):
    """One unit per indexed series with XML, carrying its slice table."""
    index_path, slices_path = work / "index.csv", work / "slices.csv"
    if not index_path.exists() or not slices_path.exists():
        raise LidcError(index_path, "no index here: run the index stage first "
                                    "(tools/index.sh), or use --xml DIR")
    table = defaultdict(list)
    for r in read_csv(slices_path):
        table[r["series_uid"]].append(r)
    units, skipped = [], []
    for row in read_csv(index_path):
        if not row["xml"]:
            skipped.append((row["folder"], f"series {row['series_uid']} has no XML read"))
            continue
        slices = table[row["series_uid"]]
        item = {"patient_id": row["patient_id"], "series_uid": row["series_uid"],
                "xml": row["xml"].split(";"), "sop_uids": [s["sop_uid"] for s in slices],
                "z": [float(s["z"]) for s in slices],
                "thickness": float(row["slice_thickness"] or lesions.TYPICAL_THICKNESS_MM),
                "spacing": float(row["pixel_spacing"] or lesions.TYPICAL_SPACING_MM),
                "shape": (int(row["rows"]), int(row["cols"]))}
        units.append((row["series_uid"], _fingerprint(item), item))
    return units, skipped


def xml_units(folder, workers):
    """One unit per series found in an XML-only archive (files grouped by SeriesInstanceUid)."""
    if not folder.is_dir():
        raise LidcError(folder, "no such folder")
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() == ".xml")
    if not files:
        raise LidcError(folder, "no .xml files under this folder")
    by_series, skipped = defaultdict(list), []
    for path, uid in cli.parallel_map(_series_of, files, workers, "xml headers", unit="file"):
        if isinstance(uid, LidcError):
            skipped.append((uid.path, uid.reason))
        else:
            by_series[uid].append(path)
    units = []
    for uid, paths in sorted(by_series.items()):
        item = {"patient_id": "", "series_uid": uid, "xml": paths, "sop_uids": None,
                "z": None, "thickness": None, "spacing": None, "shape": None}
        units.append((uid, _fingerprint(item), item))
    return units, skipped


def _series_of(path):
    try:
        return path, reads.header_uids(path)[0]
    except LidcError as e:
        return path, e


def _xml_bytes(item):
    """What parsing a unit costs: the size of its XML files."""
    return sum(file_stat(p)[0] or 0 for p in item["xml"])


def _fingerprint(item):
    stats = [(p, *file_stat(p)) for p in item["xml"]]
    return fingerprint(stats, sorted((k, v) for k, v in item.items() if k != "xml"))



def assemble(parts, units):
    """All marks in unit order, with run-wide mark and lesion ids; plus skipped and sessions."""
    marks, skipped, sessions = [], [], 0
    next_lesion = 0
    for key, fp, _ in units:
        result = parts.load(key, fp)
        if result is None:
            continue
        skipped.extend(result["skipped"])
        sessions += result["sessions"]
        series_marks = result["marks"]
        readers = defaultdict(set)
        for m in series_marks:
            readers[m.lesion_id].add(m.reader)
        for m in series_marks:
            m.lesion_readers = len(readers[m.lesion_id])
            m.lesion_id += next_lesion
            m.mark_id = len(marks)
            marks.append(m)
        next_lesion += len(readers)
    return marks, skipped, sessions


def csv_rows(marks):
    for m in marks:
        for roi in m.included:
            row, col = roi.centroid
            r0, c0, r1, c1 = roi.bbox
            yield {"mark_id": m.mark_id, "patient_id": m.patient_id, "series_uid": m.series_uid,
                   "reader": m.reader, "radiologist_id": m.radiologist_id, "label": m.label,
                   "nodule_id": m.nodule_id, "slice_index": roi.slice_index, "z": f"{roi.z:g}",
                   "sop_uid": roi.sop_uid, "row": f"{row:.2f}", "col": f"{col:.2f}",
                   "row_min": r0, "col_min": c0, "row_max": r1, "col_max": c1,
                   "points": len(roi.points), "lesion_id": m.lesion_id,
                   "lesion_readers": m.lesion_readers,
                   "malignancy": m.characteristics.get("malignancy"), "status": roi.status,
                   "xml_file": m.xml_file}


def report(marks, sessions, xml_only):
    kinds = Counter(m.label for m in marks)
    counts = {f"marks of {CLASS_NAMES[k]}": kinds.get(k, 0) for k in range(len(CLASS_NAMES))}
    counts["reading sessions"] = sessions
    counts["readers with marks"] = len({(m.series_uid, m.reader) for m in marks})
    counts["lesions"] = len({m.lesion_id for m in marks})
    regions = [r for m in marks for r in m.included]
    counts["regions (one per mark per slice)"] = len(regions)
    if not xml_only:
        status = Counter(r.status for r in regions)
        counts["regions placed on a slice"] = status.get("", 0)
        counts.update({f"regions with {s}": n for s, n in status.items() if s})
    return counts


def per_reader(marks, limit=12):
    by_reader = defaultdict(Counter)
    for m in marks:
        by_reader[m.reader][m.label] += 1
    lines = [f"    {r}: " + ", ".join(f"{c[k]} {CLASS_NAMES[k]}" for k in range(len(CLASS_NAMES)))
             for r, c in sorted(by_reader.items())]
    return lines[:limit] + ([f"    ... and {len(lines) - limit} more"] if len(lines) > limit
                            else [])


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.work_lock(args.work):
        return run(args)


def run(args):
    if args.xml:
        units, skipped = xml_units(args.xml, args.workers)
    else:
        units, skipped = index_units(args.work)
    parts = Parts(args.work, "annotations-xml" if args.xml else "annotations", force=args.force)
    reused, done, failed = cli.run_units(parts, units, read_series, args.workers, "annotations",
                                         cost=_xml_bytes)
    marks, unit_skipped, sessions = assemble(parts, units)
    skipped = skipped + failed + unit_skipped
    save_pickle(args.work / "annotations.pkl",
                {"source": str(args.xml) if args.xml else "index", "marks": marks})
    write_csv(args.work / "annotations.csv", csv_rows(marks), CSV_COLUMNS)
    path = cli.write_skipped(args.work, "annotations", skipped)
    counts = {"series read": done, "series reused from an earlier run": reused,
              **report(marks, sessions, bool(args.xml))}
    cli.summary(f"annotations: {args.work / 'annotations.pkl'}, "
                f"{args.work / 'annotations.csv'}", counts, skipped)
    print("  marks per reader:")
    print("\n".join(per_reader(marks)))
    print(f"  skip report: {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
