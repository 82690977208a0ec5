"""Square patches cut from CT slices around a mark's centroid, padded with air at the edges.

The paper's patches are 64x64, 32 pixels on each side of the centroid: the patch spans rows
[r - 32, r + 32) and columns [c - 32, c + 32) of the slice, with (r, c) the centroid rounded to
the nearest pixel. Rows are y and columns x throughout: no transposes.

    patch = crop(hu_slice, (row, col), size=64)
"""
import numpy as np

from lidc.series import AIR_HU


def crop(image, center, size=64, fill=AIR_HU, convert=None):
    """Cuts a size x size patch of `image` centred on `center` = (row, col).

    Where the patch reaches past the image edge it is filled with `fill` (air). `convert`, if
    given, maps the part inside the image first (e.g. stored pixels to HU, so that only the
    patch's pixels are converted). Returns an array of image's dtype, or convert's, shape
    (size, size).
    """
    row, col = (int(np.floor(v + 0.5)) for v in center)
    half = size // 2
    top, left = row - half, col - half
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = max(min(top + size, image.shape[0]), r0), max(min(left + size, image.shape[1]), c0)
    inside = image[r0:r1, c0:c1]
    if convert is not None:
        inside = convert(inside)
    out = np.full((size, size), fill, dtype=inside.dtype)
    out[r0 - top:r1 - top, c0 - left:c1 - left] = inside
    return out
