"""Placing marks on a series' slices, and grouping the readers' marks into physical lesions.

Matching (ARCHITECTURE.md): a region's slice is found by its imageSOP_UID; where that UID is not
in the series, by imageZposition to the nearest slice within half a slice thickness; otherwise it
is unmatched (counted, never silently dropped).

Clustering: LIDC's readers marked independently, so one lesion carries up to four marks (and a
reader may call it a nodule where another calls it a non-nodule). Two marks of different readers
are the same lesion when their z extents overlap (within one slice thickness) and their
centroids lie within the larger mark's radius plus CLUSTER_MARGIN_MM of each other; lesions are
the connected groups of that relation.
"""
import numpy as np

from lidc.records import OUTSIDE, UNMATCHED

CLUSTER_MARGIN_MM = 3.0
# Without images (the XML-only archive) spacing is unknown: the collection's typical values.
TYPICAL_SPACING_MM = 0.7
TYPICAL_THICKNESS_MM = 2.5


def match_slices(marks, sop_uids, z, thickness, shape=None):
    """Sets each region's slice_index and status in place.

    Args:
      marks: Marks of one series.
      sop_uids: the series' SOP Instance UIDs in slice order.
      z: their z positions (ascending).
      thickness: slice thickness in mm (the z tolerance is half of it).
      shape: (rows, cols) of the images; regions whose centroid falls outside get OUTSIDE.
    """
    by_uid = {uid: i for i, uid in enumerate(sop_uids)}
    z = np.asarray(z, np.float64)
    for mark in marks:
        for roi in mark.rois:
            roi.slice_index = by_uid.get(roi.sop_uid)
            if roi.slice_index is None and len(z):
                nearest = int(np.argmin(np.abs(z - roi.z)))
                if abs(z[nearest] - roi.z) <= thickness / 2 + 1e-6:
                    roi.slice_index = nearest
            roi.status = UNMATCHED if roi.slice_index is None else ""
            if shape is not None and not roi.status and not _inside(roi.centroid, shape):
                roi.status = OUTSIDE


def _inside(point, shape):
    return 0 <= point[0] <= shape[0] - 1 and 0 <= point[1] <= shape[1] - 1


def cluster(marks, spacing=None, thickness=None):
    """Groups one series' marks into lesions.

    Returns:
      a list of lesion numbers (0, 1, ...), one per mark, numbered in order of first mark.
    """
    spacing = spacing or TYPICAL_SPACING_MM
    thickness = thickness or TYPICAL_THICKNESS_MM
    shapes = [_extent(m, spacing) for m in marks]
    parent = list(range(len(marks)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(marks)):
        for j in range(i + 1, len(marks)):
            if marks[i].reader != marks[j].reader and \
                    _same_lesion(shapes[i], shapes[j], thickness):
                parent[find(j)] = find(i)
    numbers, out = {}, []
    for i in range(len(marks)):
        out.append(numbers.setdefault(find(i), len(numbers)))
    return out


def _extent(mark, spacing):
    """(centroid_mm, radius_mm, z_min, z_max) of a mark's included regions."""
    rois = mark.included or mark.rois
    centroids = np.array([r.centroid for r in rois]) * spacing
    radius = max(_radius(r.points) for r in rois) * spacing
    zs = [r.z for r in rois]
    return centroids.mean(axis=0), radius, min(zs), max(zs)


def _radius(points):
    """Half the larger side of a region's bounding box, in pixels (0 for a point)."""
    span = points.max(axis=0) - points.min(axis=0)
    return float(span.max()) / 2.0


def _same_lesion(a, b, thickness):
    (ca, ra, lo_a, hi_a), (cb, rb, lo_b, hi_b) = a, b
    # One slice of slack: readers often put a tiny nodule's single point on adjacent slices.
    tolerance = thickness + 1e-6
    if lo_a > hi_b + tolerance or lo_b > hi_a + tolerance:
        return False
    return float(np.hypot(*(ca - cb))) <= max(ra, rb) + CLUSTER_MARGIN_MM
