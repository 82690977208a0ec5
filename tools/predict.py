"""Classifies patches with a trained run and says, per patch, the class and how sure it is.

  python -m tools.predict --name demo data/work/patches/patches.npy
  python -m tools.predict --name demo patch_0001.png patch_0002.png

Inputs: an .npy of int16 HU patches (N x 64 x 64, as the crop stage writes them), windowed with
the dataset stage's transform (lidc.dataset.to_unit); or PNG files (8-bit grayscale, already
windowed, scaled by 1/255). Uses the run's saved_model/ export, else its best checkpoint.
"""
from pathlib import Path

import numpy as np

from lidc.dataset import to_unit
from lidc.records import CLASS_NAMES
from lidc.errors import LidcError
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "runs")
    p.add_argument("--name", required=True, help="the run folder under --runs")
    p.add_argument("patches", nargs="+", type=Path, help=".npy files of HU patches or PNG files")
    return p


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
    x = np.asarray(array, np.float32) if windowed else to_unit(array)
    return x[..., None]


def read_png(path):
    """[1, H, W, 1] float32 in [0, 1] from an 8-bit grayscale PNG."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise LidcError(path, "not a readable PNG image")
    return (image.astype(np.float32) / 255.0)[None, ..., None]


def read_patches(paths):
    """Yields (label, images) per input file: label names the patches in the printout."""
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


def load_predictor(run_dir):
    """The run's saved model, else its best (or latest) checkpoint."""
    from tools.evaluate import checkpoint_of
    from training.model import Predictor

    if (run_dir.saved_model / "saved_model.pb").is_file():
        return Predictor.from_saved_model(run_dir.saved_model)
    return Predictor.from_checkpoint(checkpoint_of(run_dir))


def sentence(label, net_name, probabilities):
    """'patch 3: ResNet-50 is 91.3% confident this is a nodule >= 3 mm'."""
    c = int(np.argmax(probabilities))
    name = CLASS_NAMES[c] if len(probabilities) == len(CLASS_NAMES) else f"class {c}"
    return f"{label}: {net_name} is {100 * probabilities[c]:.1f}% confident this is a {name}"


def run_prediction(runs, name, paths, log=print):
    """Prints one sentence per patch; returns the list of [N, C] probability arrays per file."""
    from tools.train import display_name
    from training.rundir import RunDir

    run_dir = RunDir(runs / name)
    if not run_dir.root.is_dir():
        raise LidcError(run_dir.root, "no such run; train it first (python -m tools.train)")
    config = run_dir.read_config() if run_dir.config.is_file() else {}
    net_name = display_name(config.get("net", name))
    inputs = list(read_patches(paths))  # every file is checked before the model loads
    results = []
    with load_predictor(run_dir) as predictor:
        expected = tuple(predictor.images.shape[1:3])
        for (label, images), path in zip(inputs, paths):
            if images.shape[1:3] != expected:
                raise LidcError(path, f"patches are {images.shape[1]}x{images.shape[2]}; "
                                      f"the network takes {expected[0]}x{expected[1]}")
            probabilities = predictor.predict(images)
            for i, p in enumerate(probabilities):
                log(sentence(f"{label} {i}" if label.endswith("patch") else label, net_name, p))
            results.append(probabilities)
    return results


def main(argv=None):
    args = build_parser().parse_args(argv)

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")
    run_prediction(args.runs, args.name, args.patches)
    return 0


if __name__ == "__main__":
    cli.run(main)
