"""The index stage: every CT series under a LIDC root and the XML reads that belong to it.

Series are found by their DICOM headers (SeriesInstanceUID, Modality), never by folder names;
an XML read is matched to its series by the SeriesInstanceUid in its header, never by folder.
Writes WORK/index.csv (one row per CT series), WORK/slices.csv (one row per slice, in z order:
the slice table every later stage uses) and WORK/skipped/index.csv (what was not used, and why).

Discovery loses nothing without a word: folders are followed through symbolic links (a folder
reached twice, e.g. through a link to an ancestor, is read once and the other path reported),
and a folder that cannot be listed or a file that cannot be opened is reported. Any file name
works: index.csv holds its lists of folders and XML files as JSON arrays (read them back with
`read_index`), so no character in a name can split or merge them.

    result = run(Path("data/LIDC-IDRI"), Path("data/work"), workers=2)
    rows = read_index(Path("data/work"))   # IndexRow records
"""
import json
import os
import shutil
import stat
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass

from lidc import manifest
from lidc.errors import LidcError
from lidc.io import atomic_folder, read_csv, write_csv, write_png
from lidc.reads import header_uids
from lidc.resume import Parts, file_stat, fingerprint
from lidc.series import (HEADER_VERSION, PixelLayout, decoders_key, group_series, read_header,
                         read_hu)
from lidc.stages import StageResult, write_skipped
from lidc.windows import LUNG
from lidc.workers import Unit, parallel_map, run_units

# New columns go at the end, so that readers by position keep working. `folder` and `xml` are
# JSON arrays of paths; `pixel_spacing` is the distance between rows (PixelSpacing[0]) and
# `pixel_spacing_col` between columns (PixelSpacing[1]), in mm; `orientation` is the series'
# ImageOrientationPatient as a JSON array of 6 numbers (row direction, then column direction).
INDEX_COLUMNS = ["patient_id", "study_uid", "series_uid", "folder", "xml", "slices", "rows",
                 "cols", "pixel_spacing", "slice_thickness", "z_min", "z_max", "dropped_slices",
                 "gaps", "orientation", "pixel_spacing_col"]
# position_x, position_y and z are the slice's ImagePositionPatient (mm): the centre of its
# pixel (0, 0) in the DICOM patient frame.
# pixel_layout: where the pixels lie in the file (lidc.series.PixelLayout, as JSON), for the
# crop to read them without parsing the header again; empty where they cannot be read in place.
SLICE_COLUMNS = ["series_uid", "slice_index", "z", "sop_uid", "instance_number", "path",
                 "position_x", "position_y", "pixel_layout"]
# index.csv and slices.csv are read together: committed as one set (lidc.manifest).
MANIFEST = "index.manifest.json"
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
            _check_file(path)
            if name.lower().endswith(".xml"):
                xml.append((path, *header_uids(path)))
            else:
                headers.append(read_header(path))
        except LidcError as e:
            skipped.append((e.path, e.reason))
    return {"headers": headers, "xml": xml, "skipped": skipped}


_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
          stat.S_IFBLK: "a device", stat.S_IFDIR: "a folder"}


def _check_file(path):
    """Refuses what is not a regular file that can be reached, naming the real cause (opening
    a named pipe would wait forever for a writer)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise LidcError(path, f"a symbolic link to {os.readlink(path)}, which does not "
                                  "exist") from None
        raise LidcError(path, "the file disappeared while the index ran") from None
    except OSError as e:  # a loop of links, a folder on the way that cannot be searched
        raise LidcError(path, f"cannot reach the file ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
        raise LidcError(path, f"not a regular file ({kind})")


def find_folders(root):
    """Every folder under `root` with files to read, following symbolic links.

    Hidden files and folders (names starting with '.': unfinished writes, ours or a
    downloader's) and documents (DOCUMENTS) are not read.

    Args:
      root: the LIDC root.
    Returns:
      (folders, skipped): Folder records in a stable depth-first order (sorted names), and
      (path, reason) for each folder that could not be listed or was reached a second time.
    Raises:
      LidcError: the root itself cannot be listed.
    """
    folders, skipped, seen = [], [], {}
    pending = [str(root)]
    while pending:
        path = pending.pop()
        try:
            subfolders, names = _listing(path, seen)
        except LidcError as e:
            if path == str(root):
                raise
            skipped.append((e.path, e.reason))
            continue
        if names:
            folders.append(Folder(path, tuple(names)))
        pending.extend(reversed(subfolders))
    return folders, skipped


def _listing(path, seen):
    """(sub-folder paths, file names) of the folder `path`, recorded in `seen` ((device, inode)
    -> first path), so that no folder is read twice and a link to an ancestor ends here."""
    try:
        status = os.stat(path)
        identity = (status.st_dev, status.st_ino)
        if identity in seen:
            raise LidcError(path, f"the same folder as {seen[identity]} (reached again through "
                                  "a symbolic link): read once, there")
        seen[identity] = path
        with os.scandir(path) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")),
                             key=lambda e: e.name)
    except OSError as e:
        raise LidcError(path, f"cannot list the folder ({e.strerror}): its files are not "
                              "indexed; make it readable and run the index again") from None
    is_folder = [_is_folder(e) for e in entries]
    subfolders = [e.path for e, folder in zip(entries, is_folder) if folder]
    names = [e.name for e, folder in zip(entries, is_folder)
             if not folder and not e.name.lower().endswith(DOCUMENTS)]
    return subfolders, names


def _is_folder(entry):
    # Follows links. A link to nothing, or in a loop of links, is no folder: read_folder then
    # reports it as a file it cannot reach.
    try:
        return entry.is_dir()
    except OSError:
        return False


def folder_units(root):
    """A Unit for each folder holding files, in a stable order; and the folders skipped.

    Returns:
      (units, skipped) with skipped = [(path, reason)] (see find_folders).
    """
    folders, skipped = find_folders(root)
    decoders = decoders_key()
    units = []
    for folder in folders:
        stats = [(n, *file_stat(os.path.join(folder.path, n))) for n in folder.names]
        units.append(Unit(folder.path, fingerprint(stats, decoders, HEADER_VERSION), folder))
    return units, skipped


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
            reason = f"series {found.series_uid} has modality {found.modality}, not CT"
        elif not found.slices:
            reason = f"series {found.series_uid} has no usable slice"
        else:
            ct.append(found)
            continue
        skipped.extend((folder, reason) for folder in found.folders)
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


def _paths(paths):
    """A list of paths as one CSV cell: a JSON array (any character in a name survives)."""
    return json.dumps(sorted(paths), ensure_ascii=False)


def index_row(series, xml_paths):
    """The index.csv row of one CT series."""
    return {
        "patient_id": series.patient_id, "study_uid": series.study_uid,
        "series_uid": series.series_uid, "folder": _paths(series.folders),
        "xml": _paths(xml_paths), "slices": len(series.slices),
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
             "position_x": _exact(h.position[0]), "position_y": _exact(h.position[1]),
             "pixel_layout": PixelLayout(*h.pixel_layout).to_text() if h.pixel_layout else ""}
            for i, h in enumerate(series.slices))


@dataclass(frozen=True)
class IndexRow:
    """One row of WORK/index.csv, typed: folders and xml as tuples of paths, shape (rows, cols),
    spacing (between rows, between columns) in mm, thickness in mm (None when unknown), z_min
    and z_max in mm, orientation the 6 direction cosines of ImageOrientationPatient."""
    patient_id: str
    study_uid: str
    series_uid: str
    folders: tuple
    xml: tuple
    slices: int
    shape: tuple
    spacing: tuple
    thickness: float | None
    z_min: float
    z_max: float
    dropped_slices: int
    gaps: int
    orientation: tuple


def read_index(work):
    """The rows of WORK/index.csv as IndexRow records, in file order.

    Raises:
      LidcError: there is no index.csv, or it is not one this version of the index stage
        writes (an older format, or edited by hand): run the index stage again.
    """
    path = work / "index.csv"
    if not path.exists():
        raise LidcError(path, "no index here: run the index stage first (tools/index.sh)")
    rows = read_csv(path)
    try:
        return [_typed(row) for row in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise LidcError(path, f"not an index this version writes ({type(e).__name__}: {e}): "
                              "run the index stage again") from None


def _typed(row):
    folders, xml = json.loads(row["folder"]), json.loads(row["xml"])
    orientation = tuple(float(v) for v in json.loads(row["orientation"]))
    if not (isinstance(folders, list) and isinstance(xml, list) and len(orientation) == 6):
        raise ValueError("folder and xml must be JSON arrays, orientation 6 numbers")
    return IndexRow(
        patient_id=row["patient_id"], study_uid=row["study_uid"], series_uid=row["series_uid"],
        folders=tuple(folders), xml=tuple(xml), slices=int(row["slices"]),
        shape=(int(row["rows"]), int(row["cols"])),
        spacing=(float(row["pixel_spacing"]), float(row["pixel_spacing_col"])),
        thickness=float(row["slice_thickness"]) if row["slice_thickness"] else None,
        z_min=float(row["z_min"]), z_max=float(row["z_max"]),
        dropped_slices=int(row["dropped_slices"]), gaps=int(row["gaps"]),
        orientation=orientation)


def _folder_name(text):
    """A header value (PatientID, SeriesInstanceUID) as one folder name that stays inside its
    parent: '/' and every other character a name cannot hold are percent-encoded (so two values
    never share a name), '.' and '..' become %2E and %2E%2E, and an empty value '%'."""
    name = urllib.parse.quote(text, safe=" -_.,;@+=()[]{}~", errors="surrogateescape")
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return name or "%"


def export_png(job):
    """Writes one series' slices as lossless 8-bit lung-window PNGs, NNNN.png in z order (runs
    in a worker process); job is (folder, slice paths in z order, force).

    The folder is rebuilt as a whole when its slices changed (or with force), so it never holds
    an image of an earlier index; FOLDER/.made-from records which files it shows. Returns how
    many were written (0 when it was up to date).
    """
    out, paths, force = job
    made_from = fingerprint([(p, *file_stat(p)) for p in paths])
    marker = os.path.join(out, ".made-from")
    if not force and os.path.isfile(marker) and open(marker).read() == made_from:
        return 0
    with atomic_folder(out) as folder:
        for i, path in enumerate(paths):
            write_png(folder / f"{i:04d}.png", LUNG.to_u8(read_hu(path)))
        (folder / ".made-from").write_text(made_from)
    return len(paths)


def export_pngs(work, series, workers, force):
    """Exports every series' slices under WORK/png/PATIENT/SERIES/ (see export_png) and removes
    the folders of series no longer indexed; returns how many PNGs were written."""
    folders = {work / "png" / _folder_name(s.patient_id) / _folder_name(s.series_uid):
               [h.path for h in s.slices] for s in series}
    jobs = [(str(folder), paths, force) for folder, paths in folders.items()]
    written = sum(parallel_map(export_png, jobs, workers, "png"))
    for stale in (work / "png").glob("*/*"):
        if stale.is_dir() and stale not in folders:
            shutil.rmtree(stale)
    return written


def _units(root):
    """folder_units of the root, refusing a root that gives nothing to read."""
    units, skipped = folder_units(root)
    if not units:
        detail = f"; {len(skipped)} folders could not be read: {skipped[0][0]}: " \
                 f"{skipped[0][1]}" if skipped else ""
        raise LidcError(root, "the LIDC root holds no files to index (hidden files and "
                              f"documents such as .txt or .json are not read){detail}")
    return units, skipped


def run(root, work, workers=1, force=False, png=False):
    """Indexes the LIDC root `root` into WORK; returns the StageResult.

    Raises:
      LidcError: the root does not exist, cannot be listed or holds no files.
    """
    root = root.resolve()
    if not root.is_dir():
        raise LidcError(root, "the LIDC root does not exist (run tools/synthesize.sh for the "
                              "demo cohort, or point --root at a LIDC-IDRI download)")
    units, unread = _units(root)
    parts = Parts(work, "index", force=force)
    reused, done, failed = run_units(parts, units, read_folder, workers, unit="folder",
                                     cost=lambda folder: len(folder.names))
    ct, xml, skipped = collect(parts, units)
    folder_of = {u.key: u.item.path for u in units}
    skipped = unread + [(folder_of[key], reason) for key, reason in failed] + skipped
    with manifest.file_set(work, MANIFEST, "index") as files:
        write_csv(work / "index.csv", [index_row(s, xml.get(s.series_uid, [])) for s in ct],
                  INDEX_COLUMNS)
        write_csv(work / "slices.csv", (r for s in ct for r in slice_rows(s)), SLICE_COLUMNS)
        files.extend(["index.csv", "slices.csv"])
    counts = {"folders read": done, "folders reused from an earlier run": reused,
              "CT series": len(ct), "slices": sum(len(s.slices) for s in ct),
              "series with XML": sum(1 for s in ct if s.series_uid in xml),
              "series without XML": sum(1 for s in ct if s.series_uid not in xml),
              "series with gaps in z": sum(1 for s in ct if s.gaps)}
    if png:
        counts["PNG slices written"] = export_pngs(work, ct, workers, force)
    return StageResult(f"index: {work / 'index.csv'}, {work / 'slices.csv'}", counts, skipped,
                       write_skipped(work, "index", skipped))
