"""Cases as a person looks at them: one patient's CT series with its slices in z order (read as
HU), every reader's marks on each slice, and the patches cut on each slice.

Reads only what the stages wrote in WORK, never the LIDC root's XML again: index.csv and
slices.csv (required), annotations.pkl (the marks, when the annotations stage ran on this index)
and patches/patches.csv with patches.npy (when crop ran on these annotations). A set that is
missing, half-written or made from other inputs than the current ones leaves its part out, with a
note that says which stage to run; the slices are shown all the same.

    cohort = Cohort.load(Path("data/work"))
    case = cohort.case("LIDC-IDRI-0001")
    hu = case.read_slice(12)                    # int16 [rows, cols]
    for outline in case.outlines_on(12):
        print(outline.reader, outline.label, outline.points)    # points: (row, col) pixels
"""
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from lidc import manifest
from lidc.errors import LidcError
from lidc.io import load_pickle, read_csv
from lidc.series import read_hu
from lidc.stages import annotations, crop, index

# What Cohort.load reads, relative to WORK: a change to any of them means another cohort.
WATCHED = (index.MANIFEST, annotations.MANIFEST, f"patches/{crop.MANIFEST}", "dataset/split.csv")
# A patch is cut at its region's centroid rounded to 2 decimals (lidc.stages.crop).
_CENTRE_TOLERANCE = 0.011


class NotFound(LidcError):
    """An unknown patient, series or slice index (what a viewer answers with 404)."""


@dataclass(frozen=True)
class PatchPlace:
    """A patch of patches.npy: its row in the array and the (row, col) it is centred on."""
    index: int
    row: float
    col: float


@dataclass(frozen=True)
class Outline:
    """One reader's mark on one slice, as it is drawn.

    points are (row, col) pixels, 0-based from the top-left: the XML's (yCoord, xCoord). One point
    is a small nodule or a non-nodule locus; more are a contour. inclusion False is a hole in its
    nodule. status is empty when the region was placed in the image, else why it gives no patch.
    patch is the PatchPlace cut from this region, or None (a hole, or crop not run).
    """
    mark_id: int
    reader: str
    label: int
    lesion_id: int
    lesion_readers: int
    nodule_id: str
    inclusion: bool
    points: tuple
    status: str
    patch: PatchPlace | None


class Case:
    """One CT series of one patient: its slices in z order and the outlines on each.

    Attributes: patient_id, series_uid, rows, cols, pixel_spacing and slice_thickness (mm, or
    None when the header lacks them), z (the slices' z in mm, ascending).
    """

    def __init__(self, row, slices, outlines):
        self.patient_id = row["patient_id"]
        self.series_uid = row["series_uid"]
        self.rows, self.cols = int(row["rows"]), int(row["cols"])
        self.pixel_spacing = float(row["pixel_spacing"]) if row["pixel_spacing"] else None
        self.slice_thickness = float(row["slice_thickness"]) if row["slice_thickness"] else None
        self.z = [float(s["z"]) for s in slices]
        self._paths = [s["path"] for s in slices]
        self._outlines = outlines

    @property
    def slice_count(self):
        """How many slices the series has."""
        return len(self._paths)

    def check_index(self, index):
        """Raises NotFound unless `index` (an int) is one of the series' slices."""
        if not 0 <= index < self.slice_count:
            raise NotFound(None, f"{self.patient_id} has slices 0 to {self.slice_count - 1}, "
                                 f"not {index}")

    def read_slice(self, index):
        """The slice's pixels as int16 HU, [rows, cols].

        Raises:
          NotFound: no such slice.
          LidcError: the DICOM file cannot be read, or no longer has the indexed size.
        """
        self.check_index(index)
        path = self._paths[index]
        try:
            hu = read_hu(path)
        except FileNotFoundError:
            raise LidcError(path, "missing: was the LIDC root moved? run the index stage "
                                  "again") from None
        if hu.shape != (self.rows, self.cols):
            raise LidcError(path, f"is {hu.shape[0]}x{hu.shape[1]} pixels, the index says "
                                  f"{self.rows}x{self.cols}; run the index stage again")
        return hu

    def outlines_on(self, index):
        """The outlines on slice `index` (NotFound when there is no such slice)."""
        self.check_index(index)
        return list(self._outlines.get(index, ()))

    def marked_slices(self):
        """The indices of the slices that carry outlines, ascending."""
        return sorted(self._outlines)

    def readers(self):
        """The readers with outlines in this series, sorted."""
        return sorted({o.reader for found in self._outlines.values() for o in found})

    def patch_indices(self):
        """The rows of patches.npy cut from this series, in slice order."""
        return [o.patch.index for i in self.marked_slices() for o in self._outlines[i]
                if o.patch is not None]


class Cohort:
    """Every indexed series of WORK as a Case, with the patches' pixels and the dataset's sides.

    Attributes: work, cases (in index.csv's order), notes (what is missing and why), patch_size
    (the patches' side in pixels, None without patches).
    """

    def __init__(self, work, cases, patches, sides, notes):
        self.work = work
        self.cases = cases
        self.notes = notes
        self._patches = patches
        self._sides = sides
        self.patch_size = int(patches.shape[1]) if patches is not None else None

    @classmethod
    def load(cls, work):
        """Reads WORK's index, marks and patches.

        Raises:
          LidcError: no index in WORK, or an index set that is incomplete (marks and patches
            that cannot be used only add a note).
        """
        index_set, rows, slices = _read_index(work)
        notes = []
        marks = _read_marks(work, index_set, notes)
        patch_rows, patches = _read_patches(work, notes) if marks else ([], None)
        outlines = _outlines(marks, patch_rows, notes)
        cases = [Case(row, slices[row["series_uid"]], outlines.get(row["series_uid"], {}))
                 for row in rows]
        return cls(work, cases, patches, _read_sides(work), notes)

    def case(self, patient_id, series_uid=None):
        """The Case of `patient_id`'s series `series_uid` (its first series when None).

        Raises:
          NotFound: no such patient in index.csv, or no such series of that patient.
        """
        found = [c for c in self.cases if c.patient_id == patient_id]
        if not found:
            raise NotFound(self.work / "index.csv", f"lists no patient {patient_id!r}")
        if series_uid is None:
            return found[0]
        for case in found:
            if case.series_uid == series_uid:
                return case
        raise NotFound(self.work / "index.csv", f"{patient_id} has no series {series_uid!r}")

    def patch_pixels(self, indices):
        """int16 HU patches [N, size, size] of the rows `indices` of patches.npy."""
        if self._patches is None:
            return np.zeros((0, 0, 0), np.int16)
        return np.asarray(self._patches[np.asarray(indices, np.int64)])

    def side(self, patient_id):
        """'train', 'val' or 'test': where the current dataset put the patient (None without a
        dataset, or when none of its patches are in it)."""
        return self._sides.get(patient_id)


def stamp(work):
    """What changes whenever a stage rewrites what Cohort.load reads: compare two stamps to
    know when to load again."""
    found = []
    for name in WATCHED:
        try:
            status = (work / name).stat()
            found.append((name, status.st_mtime_ns, status.st_size))
        except FileNotFoundError:
            found.append((name, None, None))
    return tuple(found)


def _read_index(work):
    """(the index set's manifest, index.csv rows, slices.csv rows by series uid)."""
    if not (work / "index.csv").is_file():
        raise LidcError(work / "index.csv", "no index here: run the index stage first "
                                            "(tools/index.sh), or point --work at a work folder")
    index_set = manifest.check(work, index.MANIFEST, ["index.csv", "slices.csv"], "index")
    slices = defaultdict(list)
    for row in read_csv(work / "slices.csv"):
        slices[row["series_uid"]].append(row)
    for found in slices.values():
        found.sort(key=lambda r: int(r["slice_index"]))
    return index_set, read_csv(work / "index.csv"), slices


def _read_marks(work, index_set, notes):
    """The Mark records of annotations.pkl, or [] with a note when they cannot be shown."""
    path = work / "annotations.pkl"
    if not path.is_file():
        notes.append("no annotations.pkl: run the annotations stage to see the readers' marks")
        return []
    try:
        content = manifest.check(work, annotations.MANIFEST, ["annotations.pkl"], "annotations",
                                 verify_bytes=False)
        manifest.check_inputs(content, path, {"index": manifest.digest(index_set)},
                              "annotations")
        data = load_pickle(path)
    except LidcError as e:
        notes.append(f"the readers' marks are not shown: {e}")
        return []
    if data.get("source") != "index":
        notes.append("annotations.pkl was read from the XML-only archive, without slices: run "
                     "the annotations stage on this index to see the marks")
        return []
    return data["marks"]


def _read_patches(work, notes):
    """(patches.csv rows, patches.npy memory-mapped), or ([], None) with a note."""
    folder = work / "patches"
    if not (folder / "patches.csv").is_file():
        notes.append("no patches: run the crop stage to see a model's probabilities")
        return [], None
    try:
        # Sizes only: hashing a large patches.npy on every reload would hold the page up.
        content = manifest.check(folder, crop.MANIFEST, ["patches.npy", "patches.csv"], "crop",
                                 verify_bytes=False)
        marks_set = manifest.read(work, annotations.MANIFEST)
        manifest.check_inputs(content, folder / "patches.csv",
                              {"annotations": manifest.digest(marks_set)}, "crop")
        patches = np.load(folder / "patches.npy", mmap_mode="r", allow_pickle=False)
    except (LidcError, OSError, ValueError) as e:
        notes.append(f"the patches are not shown: {e}")
        return [], None
    return read_csv(folder / "patches.csv"), patches


def _outlines(marks, patch_rows, notes):
    """series uid -> slice index -> [Outline], each region with the patch cut from it."""
    patches = defaultdict(list)
    for row in patch_rows:
        patches[(int(row["mark_id"]), int(row["slice_index"]))].append(
            PatchPlace(int(row["patch_index"]), float(row["row"]), float(row["col"])))
    outlines = defaultdict(lambda: defaultdict(list))
    matched = 0
    for mark in marks:
        for roi in mark.rois:
            if roi.slice_index is None:
                continue  # matched no slice: nowhere to draw it (annotations.csv lists it)
            patch = _patch_of(roi, patches.get((mark.mark_id, roi.slice_index), ()))
            matched += patch is not None
            outlines[mark.series_uid][roi.slice_index].append(Outline(
                mark_id=mark.mark_id, reader=mark.reader, label=mark.label,
                lesion_id=mark.lesion_id, lesion_readers=mark.lesion_readers,
                nodule_id=mark.nodule_id, inclusion=roi.inclusion,
                points=tuple((int(r), int(c)) for r, c in roi.points), status=roi.status,
                patch=patch))
    if matched < len(patch_rows):
        notes.append(f"{len(patch_rows) - matched} patches of patches.csv match no mark's "
                     "region; run the crop stage again")
    return outlines


def _patch_of(roi, places):
    """The place among `places` (the patches of the region's mark and slice) cut at the
    region's centroid, or None (holes and unplaced regions give no patch)."""
    if not roi.inclusion or roi.status:
        return None
    row, col = roi.centroid
    for place in places:
        if abs(place.row - row) < _CENTRE_TOLERANCE and abs(place.col - col) < _CENTRE_TOLERANCE:
            return place
    return None


def _read_sides(work):
    """patient id -> 'train', 'val' or 'test', from the dataset stage's split.csv."""
    path = work / "dataset" / "split.csv"
    if not path.is_file():
        return {}
    try:
        return {row["patient_id"]: row["side"] for row in read_csv(path)}
    except (KeyError, OSError, ValueError):
        return {}
