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

from lidc.records import OUTSIDE, STRAY, UNMATCHED, Z_CONFLICT, region_shapes

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
    region_shapes([r for m in marks for r in m.rois])  # every centroid at once
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

    Pairs of marks of different readers that may be one lesion (`_candidate_pairs`) join nearest
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
    group = list(range(len(marks)))
    members = {i: [i] for i in group}
    readers = {i: {m.reader} for i, m in enumerate(marks)}
    for i, j in _candidate_pairs(marks, spacing, thickness):
        a, b = sorted((group[i], group[j]))
        if a == b or readers[a] & readers[b]:
            continue
        for k in members[b]:
            group[k] = a
        members[a] += members.pop(b)
        readers[a] |= readers.pop(b)
    numbers = {}
    return [numbers.setdefault(group[i], len(numbers)) for i in range(len(marks))]


def _outline(mark):
    """The regions that outline a mark: its included regions but stray clicks (which pylidc
    ignores too; all of them if nothing else is left)."""
    return [r for r in mark.included if r.status != STRAY] or mark.included or mark.rois


def _candidate_pairs(marks, spacing, thickness):
    """The pairs (i, j), i < j, of marks of different readers that may be one lesion, nearest
    first (ties in mark order): their z extents (of their outlines, `_outline`) overlap within
    one slice thickness (readers often put a tiny nodule's single point on adjacent slices),
    and their centroids (the mean of their regions' centroids) are within the larger one's
    radius (half the larger side of its largest region's bounding box) plus CLUSTER_MARGIN_MM.
    The distance is 3-D: in-plane centroids, the middles of the z extents. Every pair at once,
    in numpy, with the operations a pair at a time would do in the same order."""
    if len(marks) < 2:
        return []
    rois = [_outline(m) for m in marks]
    flat = [r for regions in rois for r in regions]
    boxes = region_shapes(flat)
    sizes = np.array([len(regions) for regions in rois])
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    centres = _row_means(np.array([r.centroid for r in flat]) * spacing, starts, sizes)
    radius = np.maximum.reduceat(
        np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2.0, starts) * spacing
    z = np.array([r.z for r in flat])
    lo, hi = np.minimum.reduceat(z, starts), np.maximum.reduceat(z, starts)
    reader = np.unique([m.reader for m in marks], return_inverse=True)[1]
    i, j = np.triu_indices(len(marks), 1)
    tolerance = thickness + 1e-6
    near = np.hypot(*(centres[i] - centres[j]).T)
    apart = (lo[i] > hi[j] + tolerance) | (lo[j] > hi[i] + tolerance)
    keep = (reader[i] != reader[j]) & ~apart & \
        (near <= np.maximum(radius[i], radius[j]) + CLUSTER_MARGIN_MM)
    i, j, near = i[keep], j[keep], near[keep]
    distance = np.hypot(near, (lo[i] + hi[i] - lo[j] - hi[j]) / 2)
    order = np.lexsort((j, i, distance))
    return list(zip(i[order].tolist(), j[order].tolist()))


def _row_means(values, starts, sizes):
    """The mean of each group of rows of `values` (group k: `sizes[k]` rows from `starts[k]`),
    summed first to last as values[rows].mean(axis=0) does (np.add.reduceat adds them in
    another order, which moves the last bit)."""
    total = values[starts].copy()
    for k in range(1, int(sizes.max())):
        more = sizes > k
        total[more] += values[starts[more] + k]
    return total / sizes[:, None]
