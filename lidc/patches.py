"""Square patches cut from CT slices around a mark's centroid, padded with air at the edges.

The paper's patches are 64x64, 32 pixels on each side of the centroid: the patch spans rows
[r - 32, r + 32) and columns [c - 32, c + 32) of the slice, with (r, c) the centroid rounded to
the nearest pixel. Rows are y and columns x throughout: no transposes.

    patch = crop(hu_slice, (row, col), size=64)
"""
import numpy as np

from lidc.series import AIR_HU


def crop(image, center, size=64, fill=AIR_HU):
    """Cuts a size x size patch of `image` centred on `center` = (row, col).

    Where the patch reaches past the image edge it is filled with `fill` (air).
    Returns an array of image's dtype, shape (size, size).
    """
    row, col = (int(np.floor(v + 0.5)) for v in center)
    half = size // 2
    top, left = row - half, col - half
    out = np.full((size, size), fill, dtype=image.dtype)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, image.shape[0]), min(left + size, image.shape[1])
    if r0 < r1 and c0 < c1:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = image[r0:r1, c0:c1]
    return out


def lung_window_u8(hu, center=-600.0, width=1500.0):
    """HU to 8-bit grey in a lung window (for looking at slices and patches as PNG)."""
    lo = center - width / 2
    return np.clip((np.asarray(hu, np.float32) - lo) * (255.0 / width), 0, 255).round() \
        .astype(np.uint8)
