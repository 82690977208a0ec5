"""Patches given to a trained network from files: an .npy of HU patches, or PNG images.

Each reader returns [N, H, W, 1] float32 in [0, 1], the training input (lidc.windows.TRAINING).
PNGs are read as the project writes them (crop --png, index --png): 8-bit grey levels of the
lung window (lidc.windows.LUNG), turned back into HU and then windowed as for training, so a
patch and its PNG give the network the same input up to the PNG's 8-bit rounding.

    for name, images in read_patch_files([Path("patches.npy"), Path("000001.png")]): ...
"""
import cv2
import numpy as np

from lidc.errors import LidcError
from lidc.windows import LUNG, TRAINING


def read_npy(path, rows=None):
    """[N, H, W, 1] float32 in [0, 1] from an .npy of HU patches ([N, H, W] or [H, W]).

    Integer arrays are HU and are windowed; float arrays already in [0, 1] are taken as windowed
    (the dataset stage's `x`), other float arrays as HU. `rows` (a slice or index array) picks
    patches first, so that a few of a large patches.npy are read and windowed alone.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise LidcError(path, f"not a readable .npy file ({e})") from None
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise LidcError(path, f"shape {array.shape} is not N x H x W patches")
    if rows is not None:
        array = array[rows]
    if array.dtype.kind not in "iuf":
        raise LidcError(path, f"holds {array.dtype} values, not HU numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise LidcError(path, "holds values that are not finite numbers (NaN or infinity)")
    windowed = np.issubdtype(array.dtype, np.floating) and array.size and \
        0.0 <= float(array.min()) and float(array.max()) <= 1.0
    x = np.asarray(array, np.float32) if windowed else TRAINING.to_unit(array)
    return x[..., None]


def read_png(path):
    """[1, H, W, 1] float32 in [0, 1] from an 8-bit grayscale PNG in the lung window."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise LidcError(path, "not a readable PNG image")
    if image.ndim != 2 or image.dtype != np.uint8:
        raise LidcError(path, f"is not an 8-bit grayscale image (shape {image.shape}, "
                              f"{image.dtype}); give the PNGs crop --png writes")
    return TRAINING.to_unit(LUNG.from_u8(image))[None, ..., None]


def read_patch_files(paths, rows=None):
    """Yields (label, images) per input file: label names the patches in a printout; `rows`
    picks patches of each .npy (read_npy).

    Raises:
      LidcError: a file that is missing or neither an .npy nor a PNG.
    """
    for path in paths:
        if not path.is_file():
            raise LidcError(path, "no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            yield (f"{path.name} patch" if len(paths) > 1 else "patch"), read_npy(path, rows)
        elif suffix == ".png":
            yield path.name, read_png(path)
        else:
            raise LidcError(path, "neither an .npy of HU patches nor a PNG file")
