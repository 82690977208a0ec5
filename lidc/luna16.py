"""Where the lesions are in the patient, in LUNA16's convention, and LUNA16's CSV files.

World coordinates are millimetres in the DICOM patient frame, from each slice's
ImagePositionPatient and the series' ImageOrientationPatient and PixelSpacing
(lidc.records.pixel_to_world): LUNA16's coordX, coordY, coordZ (Setio et al., "Validation,
comparison, and combination of algorithms for automatic detection of pulmonary nodules in
computed tomography images: the LUNA16 challenge", Medical Image Analysis 42, 2017).

WORK/lesions.csv (written by the annotations stage) has one row per lesion and class:

- a reader's centre is the centroid of the regions it drew, in world mm, each region's area
  centroid weighted by its area (holes count negative); a single-point mark's centre is its
  point (the mean of its points over slices);
- coordX, coordY, coordZ: the mean of the centres of the readers who marked the lesion as that
  class (LUNA16 averaged the readers' positions);
- diameter_mm of a nodule >= 3 mm: the mean over those readers of the diameter of the sphere
  with the reader's volume (LUNA16 averaged the readers' diameters). A reader's volume is the
  number of pixels strictly inside its outlines (LIDC's outlines run on the pixels just around
  the nodule, so the outline pixels are not counted; holes subtract theirs) times the pixel area
  times the distance between slices. A nodule < 3 mm and a non-nodule are single points with no
  size: their diameter_mm is -1, as in LUNA16's annotations_excluded.csv.

LUNA16's evaluation counts a point as hitting a nodule when its distance to the centre is less
than half the diameter, a diameter below 0 counting as 10 mm: `label` applies that rule.

    rows = lesion_rows(marks, read_geometry(work))          # what lesions.csv holds
    export(work, min_readers=3, out=path)                   # LUNA16's annotations.csv
    label(work, annotations_csv, candidates_csv, out=path)  # patches labelled by position
"""
import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass

import cv2
import numpy as np

from lidc.errors import LidcError
from lidc.io import read_csv, write_csv
from lidc.lesions import TYPICAL_THICKNESS_MM
from lidc.records import NODULE, STRAY, pixel_to_world
from lidc.stages.index import read_index

LUNA16_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
CANDIDATE_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "class"]
# New columns go at the end. readers: how many readers marked the lesion as this class;
# reader_names: which (a JSON array); slice_first/slice_last: the slice indices it spans;
# z_first/z_last: their z in mm (without images: the XML's imageZposition).
LESION_COLUMNS = LUNA16_COLUMNS + ["patient_id", "lesion_id", "label", "readers",
                                   "reader_names", "slice_first", "slice_last", "z_first",
                                   "z_last"]
# One row per patch of patches.csv; see `label`.
LABEL_COLUMNS = ["patch_index", "seriesuid", "world_x", "world_y", "world_z", "label",
                 "in_nodule", "nodule_row", "nodule_distance_mm", "candidate_class",
                 "candidate_distance_mm"]
NO_DIAMETER = -1  # LUNA16's value for a finding without a size (annotations_excluded.csv)
# LUNA16's evaluation script reads a diameter below 0 as this many mm.
UNSIZED_DIAMETER_MM = 10.0


def number(value):
    """A float as LUNA16's CSV files write it: 10 significant digits ('-190.4589276')."""
    return f"{value:.10g}"


@dataclass(frozen=True)
class SeriesGeometry:
    """What places a series' pixels in the world: each slice's ImagePositionPatient (by slice
    index, z ascending), the series' orientation and pixel spacing (between rows, between
    columns), and the distance between slices in mm (the volume of one pixel's slab)."""
    positions: tuple
    orientation: tuple
    spacing: tuple
    step: float

    def world(self, slice_index, row, col):
        """(x, y, z) in mm of the pixel (row, col) of slice `slice_index`."""
        return pixel_to_world(self.positions[slice_index], self.orientation, self.spacing,
                              row, col)


def read_geometry(work, slice_rows=None):
    """The SeriesGeometry of every indexed series, from WORK/index.csv and WORK/slices.csv.

    Args:
      work: the WORK folder.
      slice_rows: slices.csv's rows when the caller has read them already.
    Returns:
      a dict series UID -> SeriesGeometry.
    Raises:
      LidcError: no index, or one written before slices.csv held positions.
    """
    rows = read_csv(work / "slices.csv") if slice_rows is None else slice_rows
    positions = defaultdict(list)
    try:
        for r in rows:
            positions[r["series_uid"]].append(
                (int(r["slice_index"]), (float(r["position_x"]), float(r["position_y"]),
                                         float(r["z"]))))
    except (KeyError, ValueError) as e:
        raise LidcError(work / "slices.csv", f"not a slice table this version writes ({e}): "
                                             "run the index stage again") from None
    geometry = {}
    for row in read_index(work):
        slices = tuple(p for _, p in sorted(positions.get(row.series_uid, [])))
        steps = np.diff([p[2] for p in slices])
        step = float(np.median(steps)) if len(steps) else row.thickness or TYPICAL_THICKNESS_MM
        geometry[row.series_uid] = SeriesGeometry(slices, row.orientation, row.spacing, step)
    return geometry


# The lesions table. -------------------------------------------------------------------------

def lesion_rows(marks, geometry=None):
    """lesions.csv's rows: one per lesion and class, in lesion order (see the module's text).

    Args:
      marks: Mark records with lesion ids (the annotations stage's).
      geometry: series UID -> SeriesGeometry; None without images (the XML-only archive): the
        coordinates, diameter and slice indices are then left empty, and z_first/z_last are
        the XML's imageZposition.
    Returns:
      a list of dicts keyed by LESION_COLUMNS.
    """
    groups = defaultdict(list)
    for m in marks:
        groups[(m.lesion_id, m.label)].append(m)
    return [_lesion_row(groups[key], geometry) for key in sorted(groups)]


def _lesion_row(group, geometry):
    first = group[0]
    readers = sorted({m.reader for m in group})
    row = {"seriesuid": first.series_uid, "patient_id": first.patient_id,
           "lesion_id": first.lesion_id, "label": first.label, "readers": len(readers),
           "reader_names": json.dumps(readers, ensure_ascii=False)}
    regions = [r for m in group for r in _outline(m) if r.inclusion]
    series = geometry.get(first.series_uid) if geometry is not None else None
    if series is None:
        zs = [r.z for r in regions]
        if zs:
            row.update(z_first=number(min(zs)), z_last=number(max(zs)))
        return row
    placed = [r.slice_index for r in regions if r.slice_index is not None]
    if placed:
        low, high = min(placed), max(placed)
        row.update(slice_first=low, slice_last=high, z_first=number(series.positions[low][2]),
                   z_last=number(series.positions[high][2]))
    measures = [reader_measure(m, series) for m in group]
    centres = [c for c, _ in measures if c is not None]
    if centres:
        row.update(zip(("coordX", "coordY", "coordZ"), map(number, np.mean(centres, axis=0))))
        diameters = [_sphere_diameter(v) for c, v in measures if c is not None]
        row["diameter_mm"] = number(np.mean(diameters)) if first.label == NODULE \
            else NO_DIAMETER
    return row


def _outline(mark):
    """The regions that outline a mark (holes included): all but stray clicks, which pylidc
    ignores too (all of them if nothing else is left)."""
    return [r for r in mark.rois if r.status != STRAY] or mark.rois


def reader_measure(mark, series):
    """One reader's centre and volume of a lesion.

    Args:
      mark: the reader's Mark.
      series: the SeriesGeometry of its series.
    Returns:
      (centre, volume): centre a (x, y, z) array in world mm, the regions' area centroids
      weighted by their areas (holes negative), or the mean of the regions' points when they
      enclose no area (a single-point mark); None when no region lies on a slice. volume in
      mm^3: the pixels strictly inside the outlines (less those inside holes) times the pixel
      area times the distance between slices.
    """
    points, signs, weights, pixels = [], [], [], 0
    for roi in _outline(mark):
        if roi.slice_index is None:
            continue
        signs.append(1 if roi.inclusion else -1)
        points.append(series.world(roi.slice_index, *roi.centroid))
        weights.append(signs[-1] * _polygon_area(roi.points))
        pixels += signs[-1] * _inside_pixels(roi.points)
    if not points:
        return None, 0.0
    points, weights, outlines = np.array(points), np.array(weights), np.array(signs) > 0
    if weights.sum() > 0:
        centre = weights @ points / weights.sum()
    else:  # points, or outlines enclosing nothing: where they are
        centre = points[outlines].mean(axis=0) if outlines.any() else points.mean(axis=0)
    volume = max(pixels, 0) * series.spacing[0] * series.spacing[1] * series.step
    return centre, volume


def _polygon_area(points):
    """The area in pixels enclosed by a region's outline (shoelace; 0 for a point or a line)."""
    if len(points) < 3:
        return 0.0
    r, c = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return abs(float((c * np.roll(r, -1) - np.roll(c, -1) * r).sum())) / 2.0


def _inside_pixels(points):
    """How many pixels lie inside a region's outline, the outline's own pixels not counted."""
    if len(points) < 3:
        return 0
    low = points.min(axis=0)
    rows, cols = points.max(axis=0) - low + 1
    mask = np.zeros((int(rows), int(cols)), np.uint8)
    outline = np.ascontiguousarray((points - low)[:, ::-1], np.int32)  # cv2 wants (x, y)
    cv2.fillPoly(mask, [outline], 1)
    cv2.polylines(mask, [outline], True, 0)
    return int(mask.sum())


def _sphere_diameter(volume):
    """The diameter in mm of the sphere of `volume` mm^3."""
    return (6.0 * volume / math.pi) ** (1.0 / 3.0)


# LUNA16's CSV files: read back, checked. -----------------------------------------------------

def read_table(path, columns, known_uids, what):
    """The rows of a LUNA16 CSV (annotations.csv, candidates.csv), typed and checked.

    Args:
      path: the CSV.
      columns: the columns it must have: "seriesuid", coordinates and diameter (finite
        numbers), "class" (an integer); others are ignored.
      known_uids: the series UIDs of the index; a row of another series is refused.
      what: what the file is, for messages ("LUNA16 annotations").
    Returns:
      a list of dicts with the columns: seriesuid a str, "class" an int, the others floats.
    Raises:
      LidcError: no such file, a missing column, a series not in the index, a value that is
        not a finite number (or not an integer class), naming the file and the line.
    """
    _require_columns(path, columns, what)
    return [_typed_row(path, line, row, columns, known_uids)
            for line, row in enumerate(read_csv(path), start=2)]


def _require_columns(path, columns, what):
    if not path.is_file():
        raise LidcError(path, f"no such {what} file")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in columns if c not in header]
    if missing:
        raise LidcError(path, f"no column {', '.join(missing)}: a {what} file has the "
                              f"columns {','.join(columns)}")


def _typed_row(path, line, row, columns, known_uids):
    typed = {}
    for column in columns:
        text = row.get(column)
        if text is None or not text.strip():
            raise LidcError(path, f"line {line}: no value in column {column}")
        if column == "seriesuid":
            if text not in known_uids:
                raise LidcError(path, f"line {line}: series {text} is not in the index "
                                      "(WORK/index.csv): index it first, or keep only the "
                                      "rows of indexed series")
            typed[column] = text
        elif column == "class":
            if not text.strip().lstrip("-").isdigit():
                raise LidcError(path, f"line {line}: class {text!r} is not an integer")
            typed[column] = int(text)
        else:
            typed[column] = _finite(path, line, column, text)
    return typed


def _finite(path, line, column, text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise LidcError(path, f"line {line}: {column} {text!r} is not a finite number")
    return value


def _checked_sets(work, names):
    """Checks that the annotations set holding `names` was placed on the current index (world
    coordinates need images); returns the index's series UIDs."""
    # Imported here: the annotations stage imports this module.
    from lidc import manifest
    from lidc.stages import annotations, index

    index_set = manifest.check(work, index.MANIFEST, ["index.csv", "slices.csv"], "index")
    made = manifest.check(work, annotations.MANIFEST, names, "annotations")
    if made["inputs"].get("index") is None:
        raise LidcError(work / names[0], "these annotations come from the XML-only archive: "
                                         "they have no world coordinates (run annotations "
                                         "without --xml)")
    manifest.check_inputs(made, work / names[0], {"index": manifest.digest(index_set)},
                          "annotations")
    return {row.series_uid for row in read_index(work)}


def export(work, min_readers, out):
    """Writes LUNA16's annotations.csv of WORK: the nodules >= 3 mm that at least `min_readers`
    readers marked as such (LUNA16: 3 of 4), from lesions.csv, numbers as LUNA16 writes them.

    Args:
      work: the WORK folder (after the annotations stage, run on images).
      min_readers: the fewest readers who marked the nodule as a nodule >= 3 mm.
      out: the CSV to write (its folder is made).
    Returns:
      the number of nodules written.
    Raises:
      LidcError: no lesions.csv of the current index, annotations from the XML-only archive,
        or a lesions.csv whose rows are not this version's (see read_table).
    """
    known = _checked_sets(work, ["lesions.csv"])
    path = work / "lesions.csv"
    _require_columns(path, LESION_COLUMNS, "lesions")
    chosen = []
    for line, row in enumerate(read_csv(path), start=2):
        # A lesion none of whose regions lies on a slice has no coordinates: not a LUNA16 row.
        if row["label"] != str(NODULE) or not row["coordX"]:
            continue
        typed = _typed_row(path, line, row, LUNA16_COLUMNS + ["readers"], known)
        if typed["readers"] >= min_readers:
            chosen.append({c: row[c] for c in LUNA16_COLUMNS})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, chosen, LUNA16_COLUMNS)
    return len(chosen)


def label(work, annotations_path, candidates_path, out):
    """Labels WORK's patches by where their centres are: inside a LUNA16 nodule or not, and the
    class of the nearest LUNA16 candidate. Writes `out` with LABEL_COLUMNS, one row per patch
    of patches.csv in its order:

    - world_x, world_y, world_z: the patch centre (patches.csv's);
    - label: the patch's class in this project (0, 1, 2);
    - in_nodule: 1 when the centre lies within a nodule of annotations.csv by LUNA16's rule
      (distance to its centre under half its diameter; a diameter below 0 counts as 10 mm);
    - nodule_row: that nodule's row in annotations.csv (1 = the first under the header; the
      nearest if several), empty when in_nodule is 0;
    - nodule_distance_mm: the distance to the nearest nodule centre of the series (empty when
      the series has none);
    - candidate_class, candidate_distance_mm: the class of the nearest candidate of the series
      and its distance (empty without candidates.csv, or when the series has none).

    Args:
      work: the WORK folder (after the crop stage).
      annotations_path: a LUNA16 annotations.csv (seriesuid,coordX,coordY,coordZ,diameter_mm).
      candidates_path: a LUNA16 candidates.csv (seriesuid,coordX,coordY,coordZ,class), or None.
      out: the CSV to write (its folder is made).
    Returns:
      a dict of counts: patches, patches in a nodule, patches labelled by a candidate.
    Raises:
      LidcError: no patches.csv of this version, or a CSV refused by read_table.
    """
    patches = _patch_rows(work)
    known = {row.series_uid for row in read_index(work)}
    nodules = read_table(annotations_path, LUNA16_COLUMNS, known, "LUNA16 annotations")
    candidates = read_table(candidates_path, CANDIDATE_COLUMNS, known, "LUNA16 candidates") \
        if candidates_path is not None else []
    nodules, candidates = _by_series(nodules, "diameter_mm"), _by_series(candidates, "class")
    rows = [_patch_label(p, nodules, candidates) for p in patches]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, rows, LABEL_COLUMNS)
    return {"patches": len(rows), "patches in a nodule": sum(r["in_nodule"] for r in rows),
            "patches with a nearest candidate": sum(r["candidate_class"] != "" for r in rows)}


def _patch_rows(work):
    """patches.csv's rows with their centres as arrays, after checking the crop set."""
    from lidc import manifest  # imported here: the stages import this module
    from lidc.stages import crop

    folder = work / "patches"
    if not (folder / "patches.csv").is_file():
        raise LidcError(folder / "patches.csv", "missing: run the crop stage first")
    manifest.check(folder, crop.MANIFEST, ["patches.csv"], "crop")
    rows = read_csv(folder / "patches.csv")
    if rows and not rows[0].get("world_x"):
        raise LidcError(folder / "patches.csv", "has no world coordinates (written by an "
                                                "older crop stage): run the crop stage again")
    for row in rows:
        row["centre"] = np.array([float(row[k]) for k in ("world_x", "world_y", "world_z")])
    return rows


def _by_series(findings, value):
    """series UID -> (row numbers from 1, positions N x 3, the column `value`) of findings."""
    groups = defaultdict(list)
    for number_, f in enumerate(findings, start=1):
        groups[f["seriesuid"]].append((number_, (f["coordX"], f["coordY"], f["coordZ"]),
                                       f[value]))
    return {uid: tuple(np.array(column) for column in zip(*group))
            for uid, group in groups.items()}


def _patch_label(patch, nodules, candidates):
    """The row of `label`'s output for one patch; nodules and candidates by series."""
    uid, centre = patch["series_uid"], patch["centre"]
    row = {"patch_index": patch["patch_index"], "seriesuid": uid, "world_x": patch["world_x"],
           "world_y": patch["world_y"], "world_z": patch["world_z"], "label": patch["label"],
           "in_nodule": 0, "nodule_row": "", "nodule_distance_mm": "", "candidate_class": "",
           "candidate_distance_mm": ""}
    if uid in nodules:
        numbers, points, diameters = nodules[uid]
        distance = np.linalg.norm(points - centre, axis=1)
        row["nodule_distance_mm"] = f"{distance.min():.3f}"
        # LUNA16's evaluation: strictly within half the diameter; an unsized finding is 10 mm.
        radius = np.where(diameters < 0, UNSIZED_DIAMETER_MM, diameters) / 2.0
        inside = np.flatnonzero(distance < radius)
        if len(inside):
            row.update(in_nodule=1, nodule_row=int(numbers[inside[np.argmin(distance[inside])]]))
    if uid in candidates:
        _, points, classes = candidates[uid]
        distance = np.linalg.norm(points - centre, axis=1)
        nearest = int(np.argmin(distance))
        row.update(candidate_class=int(classes[nearest]),
                   candidate_distance_mm=f"{distance[nearest]:.3f}")
    return row
