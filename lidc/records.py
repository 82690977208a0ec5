"""The records the stages pickle: DICOM slice headers and series, a radiologist's mark and its
per-slice regions.

Only the types here (with builtins and numpy arrays) may be loaded back from the project's
pickles (see lidc.io.load_pickle), so a tampered pickle cannot run code.
"""
from dataclasses import dataclass, field, fields
from functools import cached_property
from itertools import chain, repeat
from operator import attrgetter, itemgetter

import numpy as np

# Labels (ARCHITECTURE.md): one-hot vectors follow this order. The one place the classes are
# named: every module, report and test takes them from here.
NODULE, SMALL_NODULE, NON_NODULE = 0, 1, 2
CLASS_NAMES = ("nodule >= 3 mm", "nodule < 3 mm", "non-nodule >= 3 mm")
NUM_CLASSES = len(CLASS_NAMES)

# Why a region gives no patch (an empty status means it does).
UNMATCHED = "no slice with its SOP UID or within half a slice thickness of its z"
OUTSIDE = "centroid outside the image"
# The slice named by its SOP UID is not at its z (or the UID names several slices), and no slice
# lies within half a slice thickness of its z either: placing it anywhere would be a guess.
Z_CONFLICT = ("its SOP UID names no slice at its z (a slice elsewhere, or two slices), and no "
              "slice is within half a slice thickness of its z")
# pylidc drops these too: one click beside a nodule's contours is not an outline of any slice.
STRAY = "a single point inside a contoured nodule: a stray click, not a contour"


@dataclass
class Roi:
    """One slice of a mark: a contour (or a single point, or a non-nodule locus).

    points are (row, col) pixel coordinates, 0-based from the top-left (XML y, x).
    """
    z: float
    sop_uid: str
    inclusion: bool
    points: np.ndarray
    slice_index: int | None = None
    status: str = ""
    line: int = 0  # of the <roi> (or <nonNodule>) in its XML file
    note: str = ""  # how it was placed when its SOP UID and its z disagree

    # Kept once computed (the points never change after parsing), and pickled with the region:
    # the annotations workers compute it, and the stages after them read it for free.
    @cached_property
    def centroid(self):
        """(row, col) of the region: the area centroid of a contour, else the mean point."""
        pts = self.points.astype(np.float64)
        if len(pts) >= 3:
            r, c = pts[:, 0], pts[:, 1]
            r2, c2 = np.roll(r, -1), np.roll(c, -1)
            cross = c * r2 - c2 * r
            area = cross.sum() / 2.0
            if abs(area) > 1e-9:
                return (float(((r + r2) * cross).sum() / (6 * area)),
                        float(((c + c2) * cross).sum() / (6 * area)))
        return float(pts[:, 0].mean()), float(pts[:, 1].mean())

    @property
    def bbox(self):
        """(row_min, col_min, row_max, col_max), inclusive."""
        lo, hi = self.points.min(axis=0), self.points.max(axis=0)
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def region_shapes(rois):
    """The bounding boxes of `rois` as an (n, 4) int array of (row_min, col_min, row_max,
    col_max) rows, each Roi.bbox; and each region's centroid computed and kept as Roi.centroid
    would (the same sums in the same order), numpy working over all of their points at once,
    for tens of thousands of regions a hundred times faster than one at a time."""
    if not rois:
        return np.zeros((0, 4), np.int64)
    sizes = np.fromiter(map(len, (r.points for r in rois)), np.int64, len(rois))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    points = np.concatenate([r.points for r in rois])
    boxes = np.concatenate([np.minimum.reduceat(points, starts),
                            np.maximum.reduceat(points, starts)], axis=1).astype(np.int64)
    pts = points.astype(np.float64)
    r, c = pts[:, 0], pts[:, 1]
    after = np.arange(1, len(pts) + 1)
    after[starts + sizes - 1] = starts  # np.roll(-1) within each region
    r2, c2 = r[after], c[after]
    cross = c * r2 - c2 * r
    area = np.add.reduceat(cross, starts) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = np.add.reduceat((r + r2) * cross, starts) / (6 * area)
        cols = np.add.reduceat((c + c2) * cross, starts) / (6 * area)
    flat = (sizes < 3) | ~(np.abs(area) > 1e-9)
    rows[flat] = np.add.reduceat(r, starts)[flat] / sizes[flat]
    cols[flat] = np.add.reduceat(c, starts)[flat] / sizes[flat]
    for roi, row, col in zip(rois, rows.tolist(), cols.tolist()):
        roi.__dict__.setdefault("centroid", (row, col))
    return boxes


@dataclass
class Mark:
    """One reader's mark of one lesion: a nodule (with its regions) or a non-nodule locus.

    reader identifies the reading session: `<xml file stem>:<session position>` (most sessions
    are anonymous, so the session, not the radiologist id, is the reader).
    """
    patient_id: str
    series_uid: str
    xml_file: str
    reader: str
    radiologist_id: str
    label: int
    nodule_id: str
    rois: list
    characteristics: dict = field(default_factory=dict)
    mark_id: int = -1
    lesion_id: int = -1
    lesion_readers: int = 0
    line: int = 0  # of the <unblindedReadNodule> or <nonNodule> in its XML file

    @property
    def included(self):
        """The regions that give patches: holes (inclusion FALSE) are not slices of their own."""
        return [r for r in self.rois if r.inclusion]


class Marks(list):
    """A list of Mark records that pickles as columns: a list per field, and every region's
    points in one array. Pickling tens of thousands of marks and regions one object at a time
    took three times as long (the annotations stage writes them twice). Loading gives a Marks of
    records equal to the ones saved, computed centroids included."""

    def __reduce__(self):
        columns = _columns(self)
        return (marks_from_columns, (columns,)) if columns else (Marks, (list(self),))


_MARK_FIELDS = tuple(f.name for f in fields(Mark))
_ROI_FIELDS = tuple(f.name for f in fields(Roi))


def _columns(marks):
    """The columns of `marks`, or None where they are not plain records (a subclass, an
    attribute beyond the fields, points that do not stack): those are pickled one by one.
    Each check is one C loop over the records (map, set), for the archive's 37,000 marks."""
    rois = list(chain.from_iterable(map(attrgetter("rois"), marks)))
    if not set(map(type, marks)) <= {Mark} or not set(map(type, rois)) <= {Roi}:
        return None
    mark_states, roi_states = list(map(vars, marks)), list(map(vars, rois))
    centroids = list(map(dict.get, roi_states, repeat("centroid")))
    sizes = set(map(len, roi_states))
    computed = len(rois) - centroids.count(None)
    # Every region has its fields, and those with one more have their centroid kept.
    if not set(map(len, mark_states)) <= {len(_MARK_FIELDS)} or \
            not sizes <= {len(_ROI_FIELDS), len(_ROI_FIELDS) + 1} or \
            sum(map(len, roi_states)) - len(_ROI_FIELDS) * len(rois) != computed:
        return None
    points = list(map(attrgetter("points"), rois))
    if not set(map(type, points)) <= {np.ndarray} or \
            len(set(map(attrgetter("dtype"), points))) > 1:
        return None
    shapes = list(map(attrgetter("shape"), points))
    if not set(map(len, shapes)) <= {2} or not set(map(itemgetter(1), shapes)) <= {2}:
        return None
    try:
        mark_columns, roi_columns = _by_field(mark_states, _MARK_FIELDS), \
            _by_field(roi_states, _ROI_FIELDS)
    except KeyError:
        return None
    _one_object_per_string(mark_columns, roi_columns)
    mark_columns["rois"] = list(map(len, mark_columns["rois"]))
    roi_columns["points"] = list(map(len, points))
    return {"marks": mark_columns, "rois": roi_columns, "centroids": centroids,
            "points": np.concatenate(points) if points else np.zeros((0, 2), np.int64)}


def _one_object_per_string(*tables):
    """Equal strings in the columns of `tables` (and in their dicts) made one object, in place.

    Pickle writes an object it has seen before as a reference to it, by identity. Marks made
    in one process share some strings across series (a module's constant, a cached name)
    that marks loaded back from each series' stored result do not, so the same records would
    pickle to other bytes after a resumed run or from worker processes. With one object per
    value, the bytes depend on the values only."""
    one = {}

    def shared(value):
        return one.setdefault(value, value) if type(value) is str else value

    for columns in tables:
        for name, values in columns.items():
            kinds = set(map(type, values))
            if kinds == {str}:
                columns[name] = list(map(one.setdefault, values, values))
            elif kinds == {dict}:  # a new dict for each, as for the ones with strings
                columns[name] = [{shared(k): shared(v) for k, v in d.items()} if d else {}
                                 for d in values]


def _by_field(states, names):
    # {name: [each state's value]}: one C call a record (getattr a field took twice as long).
    if not states:
        return {name: [] for name in names}
    return dict(zip(names, map(list, zip(*map(itemgetter(*names), states)))))


def marks_from_columns(columns):
    """The Marks that Marks.__reduce__ wrote as `columns` (the records' state set as
    unpickling sets it, without __init__)."""
    mark_columns, roi_columns = columns["marks"], columns["rois"]
    if tuple(mark_columns) != _MARK_FIELDS or tuple(roi_columns) != _ROI_FIELDS:
        raise ValueError("columns of marks with other fields than this version's records")
    sizes, centroids = roi_columns["points"], columns["centroids"]
    regions, points = mark_columns["rois"], columns["points"]
    if sum(sizes) != len(points) or sum(regions) != len(sizes) or len(centroids) != len(sizes):
        raise ValueError("columns of marks that do not agree in length")
    split = iter(np.split(points, np.cumsum(sizes)[:-1]) if sizes else ())
    rois = [_record(Roi, _ROI_FIELDS, values, centroid=centroid) for values, centroid in zip(
        zip(*(split if n == "points" else c for n, c in roi_columns.items()), strict=True),
        centroids)]
    starts = np.cumsum([0] + regions).tolist()
    spans = (rois[a:b] for a, b in zip(starts, starts[1:]))
    return Marks(_record(Mark, _MARK_FIELDS, values) for values in zip(
        *(spans if n == "rois" else c for n, c in mark_columns.items()), strict=True))


def _record(cls, names, values, centroid=None):
    record = object.__new__(cls)
    state = dict(zip(names, values, strict=True))
    if centroid is not None:
        state["centroid"] = centroid
    record.__dict__.update(state)
    return record


@dataclass(frozen=True)
class PatchOrigin:
    """Where one patch is cut and what it shows: a mark's region on one slice, the region's
    centroid (row, col) and the mark's class, lesion and reader; and where that centroid is in
    the patient: world_x, world_y, world_z in mm (the DICOM patient frame, LUNA16's world
    coordinates; None where the geometry is unknown, as in records made before they existed)."""
    mark_id: int
    patient_id: str
    series_uid: str
    slice_index: int
    row: float
    col: float
    label: int
    lesion_id: int
    reader: str
    world_x: float | None = None
    world_y: float | None = None
    world_z: float | None = None


def pixel_to_world(position, orientation, spacing, row, col):
    """(x, y, z) in mm, in the DICOM patient frame (LUNA16's world coordinates), of the pixel at
    (row, col) of a slice (0-based, fractional allowed).

    ImagePositionPatient is the centre of pixel (0, 0); moving along a row (col + 1) goes
    PixelSpacing[1] mm along the row direction, moving down a column (row + 1) goes
    PixelSpacing[0] mm along the column direction. A flipped or transposed image is therefore
    placed right.

    Args:
      position: ImagePositionPatient (3 numbers, mm).
      orientation: ImageOrientationPatient (6 direction cosines: row direction, then column
        direction).
      spacing: PixelSpacing (mm between rows, mm between columns).
      row, col: the pixel.
    Returns:
      a tuple of 3 floats.
    """
    x_dir, y_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    point = (np.asarray(position, float) + col * float(spacing[1]) * x_dir
             + row * float(spacing[0]) * y_dir)
    return tuple(float(v) for v in point)


@dataclass
class SliceHeader:
    """What the index needs of one DICOM file, read without its pixels.

    For a CT slice every value that decides HU, geometry or order has been checked where the
    header was read (lidc.series.read_header): position is 3 finite numbers (DICOM
    ImagePositionPatient, mm), orientation the 6 direction cosines of an axial slice
    (ImageOrientationPatient: the row direction, then the column direction), spacing the 2
    positive finite PixelSpacing values (mm between rows, mm between columns), slope and
    intercept the rescale to HU. A slice of another modality is only identified (its series is
    refused as a whole): its geometry and rescale are None. pixel_layout is where its pixels lie
    in the file, for the crop to read them without the header (the fields of
    lidc.series.PixelLayout, as a tuple), or None where they cannot be read in place.
    """
    path: str
    modality: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    position: tuple | None
    instance_number: int
    spacing: tuple | None
    thickness: float | None
    shape: tuple
    orientation: tuple | None = None
    slope: float | None = None
    intercept: float | None = None
    pixel_layout: tuple | None = None

    @property
    def z(self):
        """The z of ImagePositionPatient (mm), which orders the slices; None when unknown."""
        return self.position[2] if self.position is not None else None

    def world(self, row, col):
        """(x, y, z) in mm, in the DICOM patient frame (LUNA16's world coordinates), of the
        pixel at (row, col) of this slice (0-based, fractional allowed): see pixel_to_world."""
        return pixel_to_world(self.position, self.orientation, self.spacing, row, col)


@dataclass
class Series:
    """One series' slices, sorted by z ascending, with what was dropped from it and why."""
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    slices: list
    folders: list
    problems: list = field(default_factory=list)  # (path, reason) of dropped files
    gaps: list = field(default_factory=list)  # (path, reason) of gaps in z (kept)
    warnings: list = field(default_factory=list)  # (path, reason) of kept oddities to report

    @property
    def spacing(self):
        """(row, col) pixel spacing in mm of the series' slices."""
        return self.slices[0].spacing if self.slices else None

    @property
    def orientation(self):
        """ImageOrientationPatient of the series' slices (6 direction cosines; all agree)."""
        return self.slices[0].orientation if self.slices else None

    @property
    def shape(self):
        """(rows, cols) of the series' slices."""
        return self.slices[0].shape if self.slices else None

    @property
    def thickness(self):
        """SliceThickness, or the median z step where the header lacks it."""
        if self.slices and self.slices[0].thickness:
            return self.slices[0].thickness
        steps = np.diff([s.z for s in self.slices])
        return float(np.median(steps)) if len(steps) else None
