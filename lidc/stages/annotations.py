"""The annotations stage: every radiologist mark of every indexed series, placed on its slices.

Parses each series' XML reads with lxml (each reading session once, however many files carry it;
TCIA's correction instead of the file it corrects), places each region on a slice (by SOP UID
where its z agrees, else by z), groups the readers' marks into lesions, and writes
WORK/annotations.pkl (the Mark records), WORK/annotations.csv (one row per mark per slice),
WORK/lesions.csv (one row per lesion and class, in world mm: lidc.luna16) and
WORK/skipped/annotations.csv. Without images (the standalone XML archive, `xml_dir`), the marks
are read and grouped but not placed: slice indices stay empty.

    result = run(Path("data/work"), workers=2)                  # after the index stage
    result = run(Path("xml-work"), xml_dir=Path("tcia-lidc-xml"))
"""
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter

from lidc import luna16, manifest
from lidc.errors import LidcError
from lidc.io import read_csv, save_pickle, write_csv, write_csv_columns
from lidc.lesions import TYPICAL_SPACING_MM, TYPICAL_THICKNESS_MM, cluster, match_slices
from lidc.reads import header_uids, parse_read, replace_corrected, unique_sessions
from lidc.records import CLASS_NAMES, STRAY, Marks, region_shapes
from lidc.resume import Parts, file_stat, fingerprint
from lidc.stages import StageResult, index, write_skipped
from lidc.stages.index import read_index
from lidc.workers import Unit, collector_paused, parallel_map, run_units

# annotations.pkl (what crop reads) and annotations.csv are committed as one set, which records
# the index it was placed on (lidc.manifest).
MANIFEST = "annotations.manifest.json"
CSV_COLUMNS = ["mark_id", "patient_id", "series_uid", "reader", "radiologist_id", "label",
               "nodule_id", "slice_index", "z", "sop_uid", "row", "col", "row_min", "col_min",
               "row_max", "col_max", "points", "lesion_id", "lesion_readers", "malignancy",
               "status", "xml_file", "line", "note"]
# Changing how reads are read changes a unit's result from the same files: results stored by an
# earlier version (this number in their fingerprint) are redone, never reused. 3: a number split
# by a processing instruction is read whole; results list the files not read apart.
READ_RULES = 3
SESSIONS = "reading sessions"
REPEATED = "reading sessions repeated in another file (read once)"
CORRECTED = "XML files replaced by TCIA's correction"
MISSING = "no result for this series (see its error, if any): run the stage again"


@dataclass(frozen=True)
class SliceTable:
    """What placing marks needs of an indexed series: its slices' SOP UIDs and z (ascending),
    slice thickness and pixel spacing in mm, and the image shape (rows, cols)."""
    sop_uids: tuple
    z: tuple
    thickness: float
    spacing: float
    shape: tuple


@dataclass(frozen=True)
class SeriesReads:
    """One series' XML reads to parse; `slices` is None without images (the XML archive)."""
    patient_id: str
    series_uid: str
    xml: tuple
    slices: SliceTable | None


def read_series(series):
    """Marks of one series, placed on its slices and grouped into lesions (worker process).

    Each reading session is read once however many of the series' files carry it, and a TCIA
    correction instead of the file it corrects; the files, sessions and elements left out, and
    the regions whose SOP UID was overruled by their z, go to the skip report.

    Returns:
      a dict: "marks", "refused" [(path, reason)] of the files not read at all, "skipped"
      [(path, reason)] of everything else left out, and "tally" (a dict of the numbers of
      sessions read, sessions repeated and files corrected).
    """
    reads, refused = _reads(series)
    reads, corrected = replace_corrected(reads)
    sessions, repeats = unique_sessions([s for r in reads for s in r.sessions])
    marks = Marks(m for s in sessions for m in s.marks)
    skipped = corrected + [p for r in reads for p in r.misplaced] + repeats + \
        [p for s in sessions for p in s.problems]
    table = series.slices
    if table is not None:
        match_slices(marks, table.sop_uids, table.z, table.thickness, table.shape)
        skipped += [(m.xml_file, f"line {r.line}: region of {m.reader} {m.nodule_id!r} at "
                                 f"z={r.z:g}: {r.note}") for m in marks for r in m.rois if r.note]
    lesion_numbers = cluster(marks, table and table.spacing, table and table.thickness)
    for mark, number in zip(marks, lesion_numbers):
        mark.lesion_id = number
    # A plain dict: stored results may only hold builtins and records (lidc.io.load_pickle).
    tally = {SESSIONS: len(sessions), REPEATED: len(repeats), CORRECTED: len(corrected)}
    return {"marks": marks, "refused": refused, "skipped": skipped, "tally": tally}


def _reads(series):
    """The usable CT reads of one series, and the files refused whole."""
    reads, skipped = [], []
    for path in series.xml:
        try:
            read = parse_read(path, series.patient_id)
        except LidcError as e:
            skipped.append((e.path, e.reason))
            continue
        if read.series_uid != series.series_uid:
            skipped.append((path, f"its SeriesInstanceUid is now {read.series_uid}, not "
                                  f"{series.series_uid} as when it was indexed: run the index "
                                  "stage again"))
            continue
        reads.append(read)
    return reads, skipped


def index_units(work):
    """A Unit per indexed series with XML, carrying its slice table; and the series skipped."""
    index_path, slices_path = work / "index.csv", work / "slices.csv"
    if not index_path.exists():
        raise LidcError(index_path, "no index here: run the index stage first "
                                    "(tools/index.sh), or use --xml DIR")
    by_series = defaultdict(list)
    for r in read_csv(slices_path):
        by_series[r["series_uid"]].append(r)
    units, skipped = [], []
    for row in read_index(work):
        if not row.xml:
            skipped.extend((folder, f"series {row.series_uid} has no XML read")
                           for folder in row.folders)
            continue
        slices = by_series[row.series_uid]
        table = SliceTable(
            sop_uids=tuple(s["sop_uid"] for s in slices), z=tuple(float(s["z"]) for s in slices),
            thickness=row.thickness or TYPICAL_THICKNESS_MM,
            spacing=row.spacing[0] or TYPICAL_SPACING_MM, shape=row.shape)
        series = SeriesReads(row.patient_id, row.series_uid, row.xml, table)
        units.append(Unit(series.series_uid, _fingerprint(series), series))
    return units, skipped


def xml_units(folder):
    """A Unit per series found in an XML-only archive (files grouped by SeriesInstanceUid)."""
    if not folder.is_dir():
        raise LidcError(folder, "no such folder")
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() == ".xml")
    if not files:
        raise LidcError(folder, "no .xml files under this folder")
    by_series, skipped = defaultdict(list), []
    # In this process: a header is read from the start of its file (lidc.reads.header_uids),
    # which takes less than handing the file to a worker (bench/README.md).
    for path, uid in parallel_map(_series_of, files, 1, "xml headers", unit="file"):
        if isinstance(uid, LidcError):
            skipped.append((uid.path, uid.reason))
        else:
            by_series[uid].append(path)
    units = []
    for uid, paths in sorted(by_series.items()):
        series = SeriesReads("", uid, tuple(paths), None)
        units.append(Unit(uid, _fingerprint(series), series))
    return units, skipped


def _series_of(path):
    try:
        return path, header_uids(path)[0]
    except LidcError as e:
        return path, e


def _xml_bytes(series):
    """What parsing a unit costs: the size of its XML files."""
    return sum(file_stat(p)[0] or 0 for p in series.xml)


def _fingerprint(series):
    stats = [(p, *file_stat(p)) for p in series.xml]
    return fingerprint(READ_RULES, stats, series.patient_id, series.series_uid, series.slices)


def assemble(parts, units, refused=None):
    """All marks in unit order, with run-wide mark and lesion ids; plus skipped, and the units'
    tallies (sessions read, repeated, files corrected) summed. The files a unit did not read are
    first among its skipped, or, given a list `refused`, added to that instead."""
    marks, skipped, tally = Marks(), [], Counter()
    next_lesion = 0
    for unit in units:
        result = parts.load(unit.key, unit.fingerprint)
        if result is None:
            # Never a series quietly missing from the outputs: say so (a unit that failed is
            # reported by run_units already).
            skipped.append((unit.key, MISSING))
            continue
        (skipped if refused is None else refused).extend(result["refused"])
        skipped.extend(result["skipped"])
        tally.update(result["tally"])
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
    return marks, skipped, tally


def csv_columns(marks):
    """annotations.csv's columns, in CSV_COLUMNS' order: a row per mark per included region
    (slice). Built a column at a time: a row at a time took twice as long for the archive's
    76,000 regions."""
    included = [m.included for m in marks]
    counts = list(map(len, included))
    rois = list(chain.from_iterable(included))
    boxes = region_shapes(rois).T.tolist()  # and every centroid, at once

    def each_region(values):
        """Each mark's value (of `values`, one a mark) once for each of its included regions."""
        return list(chain.from_iterable(map(repeat, values, counts)))

    def of_regions(field):
        return list(map(attrgetter(field), rois))

    centroids = of_regions("centroid")
    columns = {name: each_region(map(attrgetter(name), marks)) for name in (
        "patient_id", "series_uid", "reader", "radiologist_id", "nodule_id", "xml_file")}
    # Numbers written once a mark, not once a region.
    columns.update({name: each_region(map(str, map(attrgetter(name), marks))) for name in (
        "mark_id", "label", "lesion_id", "lesion_readers")})
    columns["malignancy"] = each_region(m.characteristics.get("malignancy") for m in marks)
    columns.update({name: of_regions(name) for name in ("slice_index", "sop_uid", "status",
                                                        "line", "note")})
    columns["z"] = list(map("{:g}".format, of_regions("z")))
    columns["row"] = [f"{row:.2f}" for row, _ in centroids]
    columns["col"] = [f"{col:.2f}" for _, col in centroids]
    columns.update(zip(("row_min", "col_min", "row_max", "col_max"), boxes))
    columns["points"] = [len(r.points) for r in rois]
    return [columns[name] for name in CSV_COLUMNS]


def mark_counts(marks, tally, placed):
    """The summary's counts of marks by class, sessions (read, repeated, corrected), readers,
    lesions and regions (and, when the marks were `placed` on slices, regions by status)."""
    kinds = Counter(m.label for m in marks)
    counts = {f"marks of {name}": kinds.get(k, 0) for k, name in enumerate(CLASS_NAMES)}
    counts.update({name: tally.get(name, 0) for name in (SESSIONS, REPEATED, CORRECTED)})
    counts["readers with marks"] = len({(m.series_uid, m.reader) for m in marks})
    counts["lesions"] = len({m.lesion_id for m in marks})
    regions = [r for m in marks for r in m.included]
    counts["regions (one per mark per slice)"] = len(regions)
    status = Counter(r.status for r in regions)
    if placed:
        counts["regions placed on a slice"] = status.get("", 0)
        counts["regions placed by z against their SOP UID"] = sum(
            1 for r in regions if r.note and r.slice_index is not None)
    counts.update({f"regions with {s}": n for s, n in status.items() if s and (placed or
                                                                           s == STRAY)})
    return counts


def per_reader(marks, limit=12):
    """Lines 'READER: N nodule >= 3 mm, ...' for the first `limit` readers."""
    by_reader = defaultdict(Counter)
    for m in marks:
        by_reader[m.reader][m.label] += 1
    lines = [f"  {r}: " + ", ".join(f"{c[k]} {name}" for k, name in enumerate(CLASS_NAMES))
             for r, c in sorted(by_reader.items())]
    return lines[:limit] + ([f"  ... and {len(lines) - limit} more"] if len(lines) > limit
                            else [])


def lesion_table(work, marks, placed):
    """lesions.csv's rows (lidc.luna16.lesion_rows): one per lesion and class, in world mm when
    the marks were `placed` on the indexed images of WORK; without images (the XML-only
    archive) the coordinates, diameters and slice indices are left empty and the z extent is
    the XML's."""
    return luna16.lesion_rows(marks, luna16.read_geometry(work) if placed else None)


def run(work, workers=1, force=False, xml_dir=None):
    """Reads the marks of every indexed series (or of the XML archive `xml_dir`) into WORK;
    returns the StageResult.

    Raises:
      LidcError: no index (and no xml_dir), or xml_dir holds no XML.
    """
    with collector_paused():
        return _run(work, workers, force, xml_dir)


def _run(work, workers, force, xml_dir):
    if xml_dir:
        units, skipped = xml_units(xml_dir)
        inputs = {}
    else:
        index_set = manifest.check(work, index.MANIFEST, ["index.csv", "slices.csv"], "index")
        units, skipped = index_units(work)
        inputs = {"index": manifest.digest(index_set)}
    parts = Parts(work, "annotations-xml" if xml_dir else "annotations", force=force,
                  keep=True)
    reused, done, failed = run_units(parts, units, read_series, workers, cost=_xml_bytes)
    refused = [] if xml_dir else None
    marks, unit_skipped, tally = assemble(parts, units, refused)
    if xml_dir:
        # A file whose header reads well but whose rest does not is refused by its unit: listed
        # with the files refused for their header, in file order, as a whole parse would have.
        skipped = sorted(skipped + refused, key=lambda s: s[0])
    failed_keys = {key for key, _ in failed}
    skipped = skipped + failed + [s for s in unit_skipped
                                  if not (s[1] == MISSING and s[0] in failed_keys)]
    lesions = lesion_table(work, marks, placed=not xml_dir)
    with manifest.file_set(work, MANIFEST, "annotations", inputs) as files:
        save_pickle(work / "annotations.pkl",
                    {"source": str(xml_dir) if xml_dir else "index", "marks": marks},
                    plain_arrays=True)
        write_csv_columns(work / "annotations.csv", csv_columns(marks), CSV_COLUMNS)
        write_csv(work / "lesions.csv", lesions, luna16.LESION_COLUMNS)
        files.extend(["annotations.pkl", "annotations.csv", "lesions.csv"])
    counts = {"series read": done, "series reused from an earlier run": reused,
              **mark_counts(marks, tally, placed=not xml_dir)}
    return StageResult(f"annotations: {work / 'annotations.pkl'}, {work / 'annotations.csv'}, "
                       f"{work / 'lesions.csv'}",
                       counts, skipped, write_skipped(work, "annotations", skipped),
                       notes=["marks per reader:", *per_reader(marks)])
