"""Patches given to a trained network from files: an .npy of HU patches, or PNG images.

Each reader returns [N, H, W, 1] float32 in [0, 1], the training input (lidc.windows.TRAINING).

    for name, images in read_patch_files([Path("patches.npy"), Path("000001.png")]): ...
"""
import cv2
import numpy as np

from lidc.errors import LidcError
from lidc.windows import TRAINING


def read_npy(path):
    """[N, H, W, 1] float32 in [0, 1] from an .npy of HU patches ([N, H, W] or [H, W]).

    Integer arrays are HU and are windowed; float arrays already in [0, 1] are taken as windowed
    (the dataset stage's `x`), other float arrays as HU.
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
    windowed = np.issubdtype(array.dtype, np.floating) and array.size and \
        0.0 <= float(array.min()) and float(array.max()) <= 1.0
    x = np.asarray(array, np.float32) if windowed else TRAINING.to_unit(array)
    return x[..., None]


def read_png(path):
    """[1, H, W, 1] float32 in [0, 1] from an 8-bit grayscale PNG."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise LidcError(path, "not a readable PNG image")
    return (image.astype(np.float32) / 255.0)[None, ..., None]


def read_patch_files(paths):
    """Yields (label, images) per input file: label names the patches in a printout.

    Raises:
      LidcError: a file that is missing or neither an .npy nor a PNG.
    """
    for path in paths:
        if not path.is_file():
            raise LidcError(path, "no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            yield (f"{path.name} patch" if len(paths) > 1 else "patch"), read_npy(path)
        elif suffix == ".png":
            yield path.name, read_png(path)
        else:
            raise LidcError(path, "neither an .npy of HU patches nor a PNG file")
