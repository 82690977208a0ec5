"""Simulated radiologists: who marks which lesion, and how (contour, point or non-nodule locus).

Each of up to four readers marks the lesions independently, as LIDC's did in its unblinded
reads, and they disagree as LIDC's did: they miss faint and small lesions more often (even an
obvious nodule now and then: a third of nodules >= 3 mm are contoured by all four); contour a
nodule at their own threshold and with their own hand (a pixel inside or outside its edge);
judge its size each their own way, so a small nodule >= 3 mm gets a point from one reader and a
contour from another; call a scar-like nodule a non-nodule, a compact non-nodule a nodule, a dot
a non-nodule; and rate each contoured nodule's nine characteristics from what it is, give or
take one (texture and calcification from the collection's mix for its form).

The marks are lidc.records.Mark objects, the very records lidc.reads parses back from the XML:
points are (row, column), a mark's `lesion_id` is the index of the lesion it marks, and each
region's `slice_index` the slice (z ascending) it lies on.

    readers = [draw_reader(rng, "anonymous") for _ in range(4)]
    reads = read_lesions(rng, lesions, scan, readers, Ratings(start=0.3))   # per reader, Marks
"""
import dataclasses
from pathlib import Path

import cv2
import numpy as np

from lidc.records import NODULE, NON_NODULE, SMALL_NODULE, Mark, Roi
from lidc.synthetic.plan import GOLDEN
from lidc.synthetic.xml_writer import Z_FORMATS

# A reader's chance of seeing a lesion, before its own sensitivity: floor + gain x conspicuity,
# at most MOST_SEEN (even an obvious nodule is missed now and then: a third of the collection's
# nodules >= 3 mm were contoured by all four readers).
SEEING = {NODULE: (0.25, 0.85), SMALL_NODULE: (0.25, 0.45), NON_NODULE: (0.45, 0.2)}
MOST_SEEN = 0.93
# Spread (log) of a reader's estimate of a nodule's diameter about the truth times its bias:
# a 4 mm nodule is called < 3 mm by about one reader in five.
SIZE_JUDGEMENT = 0.3
# Nodule vs non-nodule confusions, per reading: a nodule >= 3 mm called a non-nodule
# (ordinary, scar-like), a compact non-nodule contoured as a nodule, a small nodule called a
# non-nodule.
NODULE_AS_NON_NODULE = {False: 0.03, True: 0.12}
NON_NODULE_AS_NODULE = 0.03
SMALL_AS_NON_NODULE = 0.1
# How far from a lesion's centre readers click: a small nodule's point, a non-nodule's locus.
POINT_JITTER_MM = 1.0
LOCUS_JITTER_MM = 2.0
# Ratings of texture (1 = ground glass .. 5 = solid) and calcification (3 = solid, 6 = absent)
# by what the lesion is: readers rate the same nodule differently, as LIDC's did.
TEXTURE_RATINGS = {
    "solid": {5: 0.85, 4: 0.15},
    "calcified": {5: 0.95, 4: 0.05},
    "part-solid": {2: 0.05, 3: 0.8, 4: 0.15},
    "ground glass": {1: 0.8, 2: 0.16, 3: 0.04},
    "irregular opacity": {2: 0.2, 3: 0.5, 4: 0.3},
    "pleural plaque": {4: 0.3, 5: 0.7},
}
CALCIFICATION_RATINGS = {True: {3: 0.85, 4: 0.05, 5: 0.05, 2: 0.03, 1: 0.02},
                         False: {6: 0.99, 3: 0.01}}


@dataclasses.dataclass
class Reader:
    """One radiologist's habits.

    `threshold` is the occupancy at which it draws a nodule's edge, `sensitivity` scales its
    chance of seeing a lesion, `size_bias` its estimates of a nodule's diameter (whether it is
    under 3 mm); `id_style`, `site` and `first` make its nodule IDs ('Nodule 001',
    'IL057_127364' or plain numbers) and `z_format` how its station wrote z positions.
    """
    radiologist_id: str
    id_style: str
    site: str
    first: int
    z_format: str
    threshold: float
    sensitivity: float
    size_bias: float = 1.0


def draw_reader(rng, radiologist_id):
    """A reader with random habits."""
    return Reader(radiologist_id=radiologist_id,
                  id_style=str(rng.choice(["nodule", "site", "number"])),
                  site=f"{rng.choice(['IL', 'MI', 'CA', 'NY', 'MD'])}0{rng.integers(10, 100)}",
                  first=int(rng.integers(0, 20000)),
                  z_format=str(rng.choice(Z_FORMATS)),
                  threshold=float(rng.uniform(0.4, 0.7)),
                  sensitivity=float(rng.uniform(0.85, 1.1)),
                  size_bias=float(rng.lognormal(0.0, 0.15)))


@dataclasses.dataclass
class Scan:
    """What the readers read: the series they name their marks by, and its slices."""
    patient_id: str
    series_uid: str
    xml_file: str
    geometry: object
    sop_uids: list


@dataclasses.dataclass
class Ratings:
    """The quantiles at which a patient's readings fall in the distribution of ratings of
    their lesion's form (TEXTURE_RATINGS, CALCIFICATION_RATINGS): for each form, its n-th
    reading takes start + n x golden ratio (mod 1), the most even spread there is. Drawn
    independently, the 80-odd readings of a dozen patients would put the share of a rating
    up to 5 points off by chance alone; spread so, the ratings add almost nothing to what
    varies with which nodules are read how often."""
    start: float
    taken: dict = dataclasses.field(default_factory=dict)

    def next(self, form):
        """The quantile (0..1) of the next reading of a lesion of `form`."""
        n = self.taken.get(form, 0)
        self.taken[form] = n + 1
        return (self.start + GOLDEN * n) % 1.0


def read_lesions(rng, lesions, scan, readers, ratings):
    """Each reader's marks of `lesions`: a list (one per reader) of Mark lists, nodules first.

    Every lesion is marked by at least one reader (a lesion nobody marked is not in LIDC).
    `ratings` (a Ratings) gives the quantiles of the readings' texture and calcification.
    """
    reads = [[] for _ in readers]
    for i, lesion in enumerate(lesions):
        floor, gain = SEEING[lesion.kind]
        chance = floor + gain * lesion.conspicuity
        who = [j for j, reader in enumerate(readers)
               if rng.random() < min(MOST_SEEN, chance * reader.sensitivity)]
        if not who:
            who = [int(rng.integers(len(readers)))]
        for j in who:
            label, rois, rated = _call(rng, lesion, scan, readers[j], ratings)
            reads[j].append(Mark(patient_id=scan.patient_id, series_uid=scan.series_uid,
                                 xml_file=scan.xml_file, reader=f"{Path(scan.xml_file).stem}:{j}",
                                 radiologist_id=readers[j].radiologist_id, label=label,
                                 nodule_id="", rois=rois, characteristics=rated or {},
                                 lesion_id=i))
    return [_named(marks, reader) for reader, marks in zip(readers, reads)]


def _call(rng, lesion, scan, reader, ratings):
    """How one reader marks one lesion: (label, regions, characteristics or None); `ratings`
    is the patient's Ratings.

    A nodule >= 3 mm that the reader judges smaller than 3 mm gets a point; one that looks like
    a scar (spiculated, or on the pleura) is now and then called a non-nodule; a compact
    non-nodule is now and then contoured as a nodule; a small nodule is now and then called a
    non-nodule. A contour too faint to draw at the reader's threshold becomes a point.
    """
    def point(jitter_mm=POINT_JITTER_MM):
        return [_point(rng, lesion, scan, jitter_mm)]

    if lesion.kind == SMALL_NODULE:
        if rng.random() < SMALL_AS_NON_NODULE:
            return NON_NODULE, point(), None
        rated = characteristics(rng, lesion, ratings.next(lesion.form)) \
            if rng.random() < 0.1 else None
        return SMALL_NODULE, point(), rated
    if lesion.kind == NON_NODULE:
        if lesion.shape == "linear" or rng.random() >= NON_NODULE_AS_NODULE:
            return NON_NODULE, point(LOCUS_JITTER_MM), None
    else:
        estimate = lesion.diameter_mm * reader.size_bias * rng.lognormal(0.0, SIZE_JUDGEMENT)
        if estimate < 3.0:
            return SMALL_NODULE, point(), None
        scar_like = lesion.shape == "spiculated" or lesion.pleural
        if rng.random() < NODULE_AS_NON_NODULE[scar_like]:
            return NON_NODULE, point(LOCUS_JITTER_MM), None
    rois = _contours(rng, lesion, scan, reader)
    if not any(roi.inclusion for roi in rois):
        return SMALL_NODULE, point(), None
    return NODULE, rois, characteristics(rng, lesion, ratings.next(lesion.form))


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


def _point(rng, lesion, scan, jitter_mm):
    """A single click within about `jitter_mm` of the lesion's centre, now and then on the
    next slice."""
    geometry = scan.geometry
    jitter = int(round(jitter_mm / geometry.spacing))
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


def characteristics(rng, lesion, quantile):
    """The nine LIDC ratings a reader gives a nodule, from what it is, give or take one;
    texture and calcification at `quantile` (0..1) of TEXTURE_RATINGS and
    CALCIFICATION_RATINGS."""
    form, d = lesion.form, lesion.diameter_mm
    spiculated = lesion.shape == "spiculated"
    ratings = {
        "subtlety": 1 + 4 * lesion.conspicuity,
        "internalStructure": 4 if lesion.hole is not None else 1,
        "calcification": rating_at(CALCIFICATION_RATINGS[form == "calcified"], quantile),
        "sphericity": {"round": 4.5, "lobulated": 3.5, "spiculated": 2.5}.get(lesion.shape, 2.0),
        "margin": {"solid": 4.5, "calcified": 5, "part-solid": 3}.get(form, 2.5)
        - (2 if spiculated else 0),
        "lobulation": 3.5 if lesion.shape == "lobulated" else 1.2,
        "spiculation": 4 if spiculated else 1.2,
        "texture": rating_at(TEXTURE_RATINGS.get(form, {5: 1.0}), quantile),
        "malignancy": (1 if form == "calcified" else 1.5 + (d > 6) + (d > 12) + spiculated
                       + (form == "part-solid")),
    }
    drawn = ("internalStructure", "calcification", "texture")
    return {k: int(np.clip(round(v + (0 if k in drawn else rng.normal(0, 0.6))), 1, 6 if
                           k == "calcification" else 5)) for k, v in ratings.items()}


def rating_at(shares, quantile):
    """The rating at `quantile` (0..1) of {rating: probability}, most likely rating first."""
    ratings = sorted(shares, key=lambda r: -shares[r])
    edges = np.cumsum([shares[r] for r in ratings])
    return int(ratings[min(int(np.searchsorted(edges, quantile, side="right")), len(ratings) - 1)])
