"""Classifying patches from files with a trained run, and saying how sure it is.

    probabilities = predict_files(Path("runs"), "demo", [Path("patches.npy")])
"""
import numpy as np

from lidc.errors import LidcError
from lidc.patch_files import read_patch_files
from training.evaluation import class_names
from training.model import Predictor
from training.rundir import run_folder
from training.runner import display_name


def load_predictor(run_dir):
    """The run's saved model, else its best (or latest) checkpoint."""
    if (run_dir.saved_model / "saved_model.pb").is_file():
        return Predictor.from_saved_model(run_dir.saved_model)
    return Predictor.from_checkpoint(run_dir.checkpoint())


def sentence(label, net_name, probabilities):
    """'patch 3: ResNet-50 is 91.3% confident this is a nodule >= 3 mm'."""
    c = int(np.argmax(probabilities))
    name = class_names(len(probabilities))[c]
    return f"{label}: {net_name} is {100 * probabilities[c]:.1f}% confident this is a {name}"


def predict_files(runs, name, paths, log=print):
    """Logs one sentence per patch of the files `paths`; returns the list of [N, C] probability
    arrays, one per file.

    Raises:
      LidcError: no such run, an unreadable file, or patches of another size than the network's.
    """
    run_dir = run_folder(runs, name)
    if not run_dir.root.is_dir():
        raise LidcError(run_dir.root, "no such run; train it first (python -m tools.train)")
    config = run_dir.read_config() if run_dir.config.is_file() else {}
    net_name = display_name(config.get("net", name))
    inputs = list(read_patch_files(paths))  # every file is checked before the model loads
    results = []
    with load_predictor(run_dir) as predictor:
        expected = tuple(predictor.images.shape[1:3])
        for (label, images), path in zip(inputs, paths):
            if images.shape[1:3] != expected:
                raise LidcError(path, f"patches are {images.shape[1]}x{images.shape[2]}; "
                                      f"the network takes {expected[0]}x{expected[1]}")
            probabilities = predictor.predict(images)
            if not np.isfinite(probabilities).all():
                raise LidcError(run_dir.root, "the model gives probabilities that are not "
                                              "finite numbers (its weights are; was its training "
                                              "diverging?); retrain it")
            for i, p in enumerate(probabilities):
                log(sentence(f"{label} {i}" if label.endswith("patch") else label, net_name, p))
            results.append(probabilities)
    return results
