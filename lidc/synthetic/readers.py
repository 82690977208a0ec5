"""Simulated radiologists: who marks which lesion, and how (contour, point or non-nodule locus).

Each of up to four readers marks the lesions independently, as LIDC's did in its unblinded
reads: they miss faint and small lesions more often, contour a nodule at their own threshold and
with their own hand (a little inside or outside its edge), call a small nodule a point now and
then, mistake some dots for non-nodules, and rate each contoured nodule's nine characteristics
from what it is, give or take one.

The marks are lidc.records.Mark objects, the very records lidc.reads parses back from the XML:
points are (row, column), a mark's `lesion_id` is the index of the lesion it marks, and each
region's `slice_index` the slice (z ascending) it lies on.

    readers = [draw_reader(rng, "anonymous") for _ in range(4)]
    reads = read_lesions(rng, lesions, scan, readers)   # per reader, a list of Marks
"""
import dataclasses
from pathlib import Path

import cv2
import numpy as np

from lidc.records import NODULE, NON_NODULE, SMALL_NODULE, Mark, Roi
from lidc.synthetic.xml_writer import Z_FORMATS


@dataclasses.dataclass
class Reader:
    """One radiologist's habits.

    `threshold` is the occupancy at which it draws a nodule's edge, `sensitivity` scales its
    chance of seeing a lesion; `id_style`, `site` and `first` make its nodule IDs ('Nodule 001',
    'IL057_127364' or plain numbers) and `z_format` how its station wrote z positions.
    """
    radiologist_id: str
    id_style: str
    site: str
    first: int
    z_format: str
    threshold: float
    sensitivity: float


def draw_reader(rng, radiologist_id):
    """A reader with random habits."""
    return Reader(radiologist_id=radiologist_id,
                  id_style=str(rng.choice(["nodule", "site", "number"])),
                  site=f"{rng.choice(['IL', 'MI', 'CA', 'NY', 'MD'])}0{rng.integers(10, 100)}",
                  first=int(rng.integers(0, 20000)),
                  z_format=str(rng.choice(Z_FORMATS)),
                  threshold=float(rng.uniform(0.3, 0.6)),
                  sensitivity=float(rng.uniform(0.8, 1.1)))


@dataclasses.dataclass
class Scan:
    """What the readers read: the series they name their marks by, and its slices."""
    patient_id: str
    series_uid: str
    xml_file: str
    geometry: object
    sop_uids: list


def read_lesions(rng, lesions, scan, readers):
    """Each reader's marks of `lesions`: a list (one per reader) of Mark lists, nodules first.

    Every lesion is marked by at least one reader (a lesion nobody marked is not in LIDC).
    """
    reads = [[] for _ in readers]
    for i, lesion in enumerate(lesions):
        seen = lesion.conspicuity
        base = {NODULE: 0.55 + 0.45 * seen, SMALL_NODULE: 0.3 + 0.45 * seen,
                NON_NODULE: 0.55}[lesion.kind]
        who = [j for j, reader in enumerate(readers)
               if rng.random() < min(0.98, base * reader.sensitivity)]
        if not who:
            who = [int(rng.integers(len(readers)))]
        for j in who:
            label, rois, ratings = _call(rng, lesion, scan, readers[j])
            reads[j].append(Mark(patient_id=scan.patient_id, series_uid=scan.series_uid,
                                 xml_file=scan.xml_file, reader=f"{Path(scan.xml_file).stem}:{j}",
                                 radiologist_id=readers[j].radiologist_id, label=label,
                                 nodule_id="", rois=rois, characteristics=ratings or {},
                                 lesion_id=i))
    return [_named(marks, reader) for reader, marks in zip(readers, reads)]


def _call(rng, lesion, scan, reader):
    """How one reader marks one lesion: (label, regions, characteristics or None)."""
    if lesion.kind == NODULE:
        if lesion.diameter_mm < 5.0 and rng.random() < 0.3:
            return SMALL_NODULE, [_point(rng, lesion, scan, 1)], None
        rois = _contours(rng, lesion, scan, reader)
        if not rois:
            return SMALL_NODULE, [_point(rng, lesion, scan, 1)], None
        return NODULE, rois, characteristics(rng, lesion)
    if lesion.kind == SMALL_NODULE:
        if rng.random() < 0.1:
            return NON_NODULE, [_point(rng, lesion, scan, 1)], None
        ratings = characteristics(rng, lesion) if rng.random() < 0.1 else None
        return SMALL_NODULE, [_point(rng, lesion, scan, 1)], ratings
    return NON_NODULE, [_point(rng, lesion, scan, 2)], None


def _named(marks, reader):
    """The reader's marks, nodules first as in LIDC's files, with the IDs it gives them."""
    nodules = [m for m in marks if m.label != NON_NODULE]
    others = [m for m in marks if m.label == NON_NODULE]
    nodule_id, other_id = _id_makers(reader, len(nodules))
    for i, mark in enumerate(nodules):
        mark.nodule_id = nodule_id(i)
    for i, mark in enumerate(others):
        mark.nodule_id = other_id(i)
    return nodules + others


def _id_makers(reader, n_nodules):
    """The reader's nodule and non-nodule ID makers, in one of the collection's styles:
    'Nodule 001' / '_Non-nodule 001', 'IL057_127364' (site and counter), or plain numbers."""
    if reader.id_style == "nodule":
        return (lambda i: f"Nodule {i + 1:03d}"), (lambda i: f"_Non-nodule {i + 1:03d}")
    if reader.id_style == "site":
        start = 100000 + 10 * reader.first
        return (lambda i: f"{reader.site}_{start + i}"), \
            (lambda i: f"{reader.site}_{start + n_nodules + i}")
    first = reader.first
    start = first % 2 if first % 3 else first
    return (lambda i: str(start + i)), (lambda i: str(start + n_nodules + i))


def _roi(scan, zi, inclusion, xy):
    """A region on slice `zi` from (x = column, y = row) points, as lidc.reads makes it."""
    return Roi(z=float(scan.geometry.z[zi]), sop_uid=scan.sop_uids[zi], inclusion=inclusion,
               points=np.asarray(xy, np.int32)[:, ::-1].copy(), slice_index=int(zi))


def _point(rng, lesion, scan, jitter):
    """A single click near the lesion's centre, now and then on the next slice."""
    geometry = scan.geometry
    z, r, c = lesion.center
    if rng.random() < 0.15:
        z += int(rng.choice([-1, 1]))
    z = int(np.clip(z, 0, len(geometry.z) - 1))
    r, c = (int(np.clip(v + rng.integers(-jitter, jitter + 1), 0, geometry.size - 1))
            for v in (r, c))
    return _roi(scan, z, True, [[c, r]])


def _contours(rng, lesion, scan, reader):
    """One reader's outlines of a nodule, slice by slice, plus holes around a cavity."""
    size = scan.geometry.size
    threshold = float(np.clip(reader.threshold + rng.normal(0, 0.05), 0.2, 0.7))
    hand = str(rng.choice(["none", "dilate", "erode"], p=[0.6, 0.2, 0.2]))
    shift = rng.integers(-1, 2, size=2) if rng.random() < 0.3 else np.zeros(2, int)
    offset = np.array([lesion.origin[2], lesion.origin[1]]) + shift
    rois = []
    marks_hole = lesion.hole is not None and rng.random() < 0.6
    for zi, plane in enumerate(lesion.occupancy):
        points = outline(_by_hand(plane >= threshold, hand), grow=True)
        if points is None:
            continue
        rois.append(_roi(scan, lesion.origin[0] + zi, True,
                         np.clip(points + offset, 0, size - 1)))
        if marks_hole:
            hole = outline(lesion.hole[zi] >= 0.5, grow=False)
            if hole is not None:
                rois.append(_roi(scan, lesion.origin[0] + zi, False,
                                 np.clip(hole + offset, 0, size - 1)))
    return rois


def _by_hand(mask, hand):
    """The region as this hand draws it: as is, a pixel outside it, or a pixel inside it."""
    mask = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    if hand == "dilate":
        return cv2.dilate(mask, kernel)
    if hand == "erode" and cv2.erode(mask, kernel).any():
        return cv2.erode(mask, kernel)
    return mask


def outline(mask, grow):
    """The dense closed outline (x, y) of the largest region of `mask`, or None.

    With `grow` the outline runs on the pixels just outside the region, as LIDC readers drew it,
    and the first point is repeated at the end, as in the real files.
    """
    mask = mask.astype(np.uint8)
    if not mask.any():
        return None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    mask = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    if grow:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=len).reshape(-1, 2)
    return np.concatenate([points, points[:1]])


def characteristics(rng, lesion):
    """The nine LIDC ratings a reader gives a nodule, from what it is, give or take one."""
    form = lesion.form
    d = lesion.diameter_mm
    ratings = {
        "subtlety": 1 + 4 * lesion.conspicuity,
        "internalStructure": 4 if lesion.hole is not None else 1,
        "calcification": 3 if form == "calcified" else 6,
        "sphericity": {"round": 4.5, "lobulated": 3.5, "spiculated": 2.5}[lesion.shape],
        "margin": {"solid": 4.5, "calcified": 5, "part-solid": 3, "ground glass": 2.5}[form]
        - (2 if lesion.shape == "spiculated" else 0),
        "lobulation": 3.5 if lesion.shape == "lobulated" else 1.2,
        "spiculation": 4 if lesion.shape == "spiculated" else 1.2,
        "texture": {"solid": 5, "calcified": 5, "part-solid": 3, "ground glass": 1}[form],
        "malignancy": (1 if form == "calcified" else 1.5 + (d > 6) + (d > 12)
                       + (lesion.shape == "spiculated") + (form == "part-solid")),
    }
    fixed = ("internalStructure", "calcification")
    return {k: int(np.clip(round(v + (0 if k in fixed else rng.normal(0, 0.6))), 1, 6 if
                           k == "calcification" else 5)) for k, v in ratings.items()}
