"""Placing marks on a series' slices, and grouping the readers' marks into physical lesions.

Matching (ARCHITECTURE.md): a region's slice is the one its imageSOP_UID names, when that UID
names one slice of the series and that slice lies within half a slice thickness of the region's
imageZposition. Otherwise (no such UID, a UID two slices share, or a slice at another z) the
region goes to the nearest slice within half a slice thickness of its z, and a region whose UID
was overruled carries a note saying so; with no slice that near it is not placed (UNMATCHED, or
Z_CONFLICT when its UID named a slice elsewhere): counted, never silently dropped.

Clustering: LIDC's readers marked independently, so one lesion carries up to one mark per reader
(and a reader may call it a nodule where another calls it a non-nodule). Two marks of different
readers may be the same lesion when their z extents overlap (within one slice thickness) and their
centroids lie within the larger mark's radius plus CLUSTER_MARGIN_MM of each other. Such pairs
join, nearest first, unless that would put two marks of one reader into one lesion.

    match_slices(marks, sop_uids, z, thickness=2.5, shape=(512, 512))
    lesion_numbers = cluster(marks, spacing=0.7, thickness=2.5)
"""
from collections import defaultdict

import numpy as np

from lidc.records import OUTSIDE, STRAY, UNMATCHED, Z_CONFLICT

CLUSTER_MARGIN_MM = 3.0
# Without images (the XML-only archive) spacing is unknown: the collection's typical values.
TYPICAL_SPACING_MM = 0.7
TYPICAL_THICKNESS_MM = 2.5
# z values pass through text (slices.csv keeps 6 significant digits): equal within this.
Z_SLACK_MM = 1e-3


def match_slices(marks, sop_uids, z, thickness, shape=None):
    """Sets each region's slice_index, status and note in place.

    Args:
      marks: Marks of one series.
      sop_uids: the series' SOP Instance UIDs in slice order (a UID may appear twice).
      z: their z positions (ascending).
      thickness: slice thickness in mm (the z tolerance is half of it).
      shape: (rows, cols) of the images; regions whose centroid falls outside get OUTSIDE.
    """
    slices_of = defaultdict(list)
    for i, uid in enumerate(sop_uids):
        slices_of[uid].append(i)
    z = np.asarray(z, np.float64)
    half = thickness / 2 + Z_SLACK_MM
    for mark in marks:
        for roi in mark.rois:
            roi.slice_index, status, roi.note = _place(roi, slices_of.get(roi.sop_uid, []), z,
                                                       half)
            if shape is not None and not status and not _inside(roi.centroid, shape):
                status = OUTSIDE
            # A stray click stays one wherever it lies: it never gives a patch.
            roi.status = STRAY if roi.status == STRAY else status


def _place(roi, named, z, half):
    """(slice index or None, status, note) of one region; `named` are the slices its UID names."""
    if len(named) == 1 and abs(z[named[0]] - roi.z) <= half:
        return named[0], "", ""
    nearest = int(np.argmin(np.abs(z - roi.z))) if len(z) else None
    near = nearest is not None and abs(z[nearest] - roi.z) <= half
    if not named:
        return (nearest, "", "") if near else (None, UNMATCHED, "")
    if len(named) > 1:
        why = (f"its imageSOP_UID names {len(named)} slices (z = "
               f"{', '.join(f'{z[i]:g}' for i in named)})")
    else:
        why = (f"its imageSOP_UID names the slice at z = {z[named[0]]:g}, "
               f"{abs(z[named[0]] - roi.z):.4g} mm from its imageZposition {roi.z:g}")
    if not near:
        return None, Z_CONFLICT, f"{why}; no slice lies within half a slice thickness of it"
    return nearest, "", f"{why}: placed by its z on slice {nearest} (z = {z[nearest]:g})"


def _inside(point, shape):
    return 0 <= point[0] <= shape[0] - 1 and 0 <= point[1] <= shape[1] - 1


def cluster(marks, spacing=None, thickness=None):
    """Groups one series' marks into lesions, never two marks of one reader in one lesion.

    Pairs of marks of different readers that may be one lesion (`_same_lesion`) join nearest
    first (3-D distance between centroids; ties in mark order), except where the two groups
    already hold a mark of the same reader: single linkage that a reader's two marks can never
    chain together through a third reader's mark. The result depends only on the marks' order.

    Args:
      marks: Marks of one series.
      spacing: pixel spacing in mm (default: the collection's typical value).
      thickness: slice thickness in mm (default: the collection's typical value).
    Returns:
      a list of lesion numbers (0, 1, ...), one per mark, numbered in order of first mark.
    """
    spacing = spacing or TYPICAL_SPACING_MM
    thickness = thickness or TYPICAL_THICKNESS_MM
    shapes = [_extent(m, spacing) for m in marks]
    pairs = sorted((_distance(shapes[i], shapes[j]), i, j)
                   for i in range(len(marks)) for j in range(i + 1, len(marks))
                   if marks[i].reader != marks[j].reader
                   and _same_lesion(shapes[i], shapes[j], thickness))
    group = list(range(len(marks)))
    members = {i: [i] for i in group}
    readers = {i: {m.reader} for i, m in enumerate(marks)}
    for _, i, j in pairs:
        a, b = sorted((group[i], group[j]))
        if a == b or readers[a] & readers[b]:
            continue
        for k in members[b]:
            group[k] = a
        members[a] += members.pop(b)
        readers[a] |= readers.pop(b)
    numbers = {}
    return [numbers.setdefault(group[i], len(numbers)) for i in range(len(marks))]


def _extent(mark, spacing):
    """(centroid_mm, radius_mm, z_min, z_max) of the regions that outline a mark: its included
    regions but stray clicks (which pylidc ignores too; all of them if nothing else is left)."""
    rois = [r for r in mark.included if r.status != STRAY] or mark.included or mark.rois
    centroids = np.array([r.centroid for r in rois]) * spacing
    radius = max(_radius(r.points) for r in rois) * spacing
    zs = [r.z for r in rois]
    return centroids.mean(axis=0), radius, min(zs), max(zs)


def _radius(points):
    """Half the larger side of a region's bounding box, in pixels (0 for a point)."""
    span = points.max(axis=0) - points.min(axis=0)
    return float(span.max()) / 2.0


def _distance(a, b):
    """3-D distance in mm between two extents' centres (in-plane centroid, middle of z)."""
    (ca, _, lo_a, hi_a), (cb, _, lo_b, hi_b) = a, b
    return float(np.hypot(np.hypot(*(ca - cb)), (lo_a + hi_a - lo_b - hi_b) / 2))


def _same_lesion(a, b, thickness):
    (ca, ra, lo_a, hi_a), (cb, rb, lo_b, hi_b) = a, b
    # One slice of slack: readers often put a tiny nodule's single point on adjacent slices.
    tolerance = thickness + 1e-6
    if lo_a > hi_b + tolerance or lo_b > hi_a + tolerance:
        return False
    return float(np.hypot(*(ca - cb))) <= max(ra, rb) + CLUSTER_MARGIN_MM
