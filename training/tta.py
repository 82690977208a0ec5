"""Test-time augmentation: a patch's class probabilities averaged over symmetries of the square.

A CT patch has no preferred orientation (training's --augment draws from the same eight
symmetries, training.batches.augment), so a network's answer should not change when the patch is
turned or mirrored; averaging the softmax over the turned and mirrored copies smooths out what
does change. The eight symmetries of the square (the dihedral group D4) are the four rotations
and the four mirror images:

  identity, rot90, rot180, rot270     turns by 0, 90, 180, 270 degrees counter-clockwise
  flip_lr, flip_ud                    mirrored left-right, top-bottom
  transpose, transverse               mirrored in the main diagonal, in the other diagonal

Named sets, each a subgroup: `all` (the eight), `rot` (the four rotations), `flip` (identity,
flip_lr, flip_ud and rot180, their product). Any comma-separated list of the names above works
too. Every set includes the identity, so the plain prediction is one of those averaged.

    symmetries = parse("rot")
    averaged = predict(predictor.predict, images, symmetries)

This module needs numpy only (commands parse --tta before TensorFlow loads).
"""
import numpy as np

# name -> (quarter turns counter-clockwise, mirrored left-right before turning).
SYMMETRIES = {
    "identity": (0, False),
    "rot90": (1, False),
    "rot180": (2, False),
    "rot270": (3, False),
    "flip_lr": (0, True),
    "transpose": (1, True),
    "flip_ud": (2, True),
    "transverse": (3, True),
}

GROUPS = {
    "all": tuple(SYMMETRIES),
    "rot": ("identity", "rot90", "rot180", "rot270"),
    "flip": ("identity", "flip_lr", "flip_ud", "rot180"),
}

HELP = ("average the softmax over symmetries of the square: all (the 8 rotations and mirror "
        "images), rot (the 4 rotations), flip (identity, left-right, top-bottom, 180 degrees) or "
        "a comma-separated list of " + ", ".join(SYMMETRIES) + "; --tta alone means all")


def parse(text):
    """The symmetries named by `text`: a group name (all, rot, flip) or a comma-separated list
    of symmetry names, in SYMMETRIES' order, each once.

    Raises:
      ValueError: an unknown name, or an empty list.
    """
    text = text.strip()
    if text in GROUPS:
        return GROUPS[text]
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SYMMETRIES]
    if unknown or not names:
        raise ValueError(f"{text!r} names no symmetries; give {', '.join(GROUPS)} or a list "
                         f"of {', '.join(SYMMETRIES)}")
    return tuple(name for name in SYMMETRIES if name in names)


def apply(name, images):
    """`images` ([N, H, W, C], H == W) under the symmetry `name`.

    Raises:
      KeyError: an unknown name.
    """
    turns, mirrored = SYMMETRIES[name]
    images = np.asarray(images)
    if mirrored:
        images = images[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(images, turns, axes=(1, 2)))


def predict(predict_fn, images, symmetries):
    """The mean of `predict_fn`'s probabilities over `images` under each of `symmetries`.

    Args:
      predict_fn: function [N, H, W, C] images -> [N, K] probabilities.
      images: [N, H, W, C] with H == W.
      symmetries: names from SYMMETRIES (e.g. parse("all")).
    Returns:
      [N, K] float probabilities (rows sum to 1 as predict_fn's do).
    Raises:
      ValueError: no symmetry given, or the images are not square.
    """
    images = np.asarray(images)
    if not symmetries:
        raise ValueError("test-time augmentation needs at least one symmetry")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"test-time augmentation turns square patches, not "
                         f"{images.shape[1]}x{images.shape[2]}")
    total = None
    for name in symmetries:
        probabilities = np.asarray(predict_fn(apply(name, images)), np.float64)
        total = probabilities if total is None else total + probabilities
    return total / len(symmetries)
