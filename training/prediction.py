"""Classifying patches from files with a trained run, and saying how sure it is: as sentences
for people, or as CSV or JSON for scripts; optionally with test-time augmentation
(training.tta) and a Grad-CAM figure per patch (training.explain).

    predictions = predict_inputs(Path("runs"), "demo", [Path("patches.npy")],
                                 PredictOptions(rows=slice(0, 10)))
    print(render(predictions, "json", "ResNet-50"))
"""
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lidc.errors import LidcError
from lidc.patch_files import read_patch_files
from training import tta
from training.evaluation import class_names
from training.explain import GradCam, draw_cams, legend
from training.model import Predictor
from training.rundir import run_folder
from training.runner import display_name

FORMATS = ("text", "csv", "json")


@dataclass(frozen=True)
class PredictOptions:
    """How to predict: the symmetries averaged by test-time augmentation (None: none); the
    patches of each .npy to classify (a slice; None: all); a folder for one Grad-CAM figure per
    patch (None: none) and the end point it reads (None: training.explain's default); patches per
    inference batch."""
    tta: tuple | None = None
    rows: slice | None = None
    cam_dir: Path | None = None
    cam_end_point: str | None = None
    batch_size: int = 256


@dataclass
class FilePrediction:
    """The patches of one input file and what the network said of them.

    path: the file. label: how the text format names its patches ('patches.npy patch', or the
    PNG's name). indices: each patch's index in the file. images: the network's inputs.
    probabilities: [N, K]. cams: each patch's Grad-CAM figure, or None.
    """
    path: Path
    label: str
    indices: list
    images: np.ndarray
    probabilities: np.ndarray = None
    cams: list = None


class EmptyRange(ValueError):
    """A range of patches (--index) that selects none of a file's patches."""


def load_predictor(run_dir):
    """The run's saved model, else its best (or latest) checkpoint."""
    if (run_dir.saved_model / "saved_model.pb").is_file():
        return Predictor.from_saved_model(run_dir.saved_model)
    return Predictor.from_checkpoint(run_dir.checkpoint())


def network_name(runs, name):
    """The network of run `name` as people write it ('ResNet-50'); the run's name when it has
    no config.json."""
    run_dir = run_folder(runs, name)
    config = run_dir.read_config() if run_dir.config.is_file() else {}
    return display_name(config.get("net", name))


def sentence(label, net_name, probabilities):
    """'patch 3: ResNet-50 is 91.3% confident this is a nodule >= 3 mm'."""
    c = int(np.argmax(probabilities))
    name = class_names(len(probabilities))[c]
    return f"{label}: {net_name} is {100 * probabilities[c]:.1f}% confident this is a {name}"


def parse_rows(text):
    """A slice from Python's slice syntax ('0:10', ':5', '10:', '::2') or one index ('7', '-1').

    Raises:
      ValueError: anything else, or a step of 0.
    """
    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError(f"{text!r} is not start:stop[:step]")
    try:
        numbers = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not start:stop[:step] of integers") from None
    if len(numbers) == 1:
        if numbers[0] is None:
            raise ValueError("an empty range")
        index = numbers[0]
        return slice(index, index + 1 if index != -1 else None)
    if len(numbers) == 3 and numbers[2] == 0:
        raise ValueError(f"{text!r}: the step cannot be 0")
    return slice(*numbers)


def read_inputs(paths, rows=None):
    """The FilePrediction (without probabilities) of each input file: an .npy of HU patches
    (only `rows` of it, a slice, when given) or a PNG as the project writes them
    (lidc.patch_files).

    Raises:
      LidcError: a missing or unreadable file, or one neither .npy nor PNG.
      EmptyRange: `rows` selects no patch of an .npy file.
    """
    inputs = []
    for path, (label, images) in zip(paths, read_patch_files(paths, rows)):
        indices = [0]
        if path.suffix.lower() == ".npy":
            patches = np.load(path, mmap_mode="r", allow_pickle=False)  # read_npy checked it
            count = 1 if patches.ndim == 2 else len(patches)
            indices = list(range(count)[rows or slice(None)])
            if not indices:
                raise EmptyRange(f"{path}: --index {_slice_text(rows)} selects none of its "
                                 f"{count} patches")
        inputs.append(FilePrediction(path, label, indices, images))
    return inputs


def _slice_text(rows):
    """'5:9', ':3', '::2' from a slice, as Python writes it."""
    parts = (rows.start, rows.stop) + ((rows.step,) if rows.step is not None else ())
    return ":".join("" if v is None else str(v) for v in parts)


def predict_inputs(runs, name, paths, options=PredictOptions(), log=print):
    """Classifies the patches of the files `paths` with run `name`.

    Args:
      runs: the runs folder.
      name: the run.
      paths: .npy and PNG files.
      options: PredictOptions.
      log: where the line saying where the Grad-CAM figures went goes.
    Returns:
      the list of FilePrediction, one per file, with probabilities (and cams).
    Raises:
      LidcError: no such run, an unreadable file, patches of another size than the network's,
        probabilities that are not finite, or no end point for Grad-CAM.
      EmptyRange: options.rows selects no patch of a file.
    """
    run_dir = run_folder(runs, name)
    if not run_dir.root.is_dir():
        raise LidcError(run_dir.root, "no such run; train it first (python -m tools.train)")
    inputs = read_inputs(paths, options.rows)  # every file is checked before the model loads
    with load_predictor(run_dir) as predictor:
        for one in inputs:
            one.probabilities = _probabilities(predictor, one, options)
        if options.cam_dir is not None:
            cam = GradCam(predictor, options.cam_end_point)
            _draw_cams(cam, inputs, options)
            log(f"Grad-CAM at {cam.end_point}: {sum(len(i.indices) for i in inputs)} figures "
                f"in {options.cam_dir}")
    return inputs


def _probabilities(predictor, one, options):
    """[N, K] probabilities of one input's patches (averaged over options.tta's symmetries)."""
    expected = tuple(predictor.images.shape[1:3])
    images = one.images
    if images.shape[1:3] != expected:
        raise LidcError(one.path, f"patches are {images.shape[1]}x{images.shape[2]}; "
                                  f"the network takes {expected[0]}x{expected[1]}")
    if options.tta:
        probabilities = tta.predict(lambda x: predictor.predict(x, options.batch_size), images,
                                    options.tta)
    else:
        probabilities = predictor.predict(images, options.batch_size)
    if not np.isfinite(probabilities).all():
        raise LidcError(one.path, "the model gives probabilities that are not finite numbers "
                                  "(its weights are; was its training diverging?); retrain it")
    return probabilities


def _draw_cams(cam, inputs, options):
    """One Grad-CAM figure per patch (of its predicted class) in options.cam_dir, named
    STEM_INDEX.png for an .npy's patches and STEM.png for a PNG (STEM-K on a clash, K the
    file's position among the inputs)."""
    options.cam_dir.mkdir(parents=True, exist_ok=True)
    used = set()
    for k, one in enumerate(inputs):
        stems = [f"{one.path.stem}_{i}" if one.path.suffix.lower() == ".npy" else one.path.stem
                 for i in one.indices]
        stems = [f"{s}-{k}" if s in used else s for s in stems]
        used.update(stems)
        one.cams = [options.cam_dir / f"{s}.png" for s in stems]
        predicted = one.probabilities.argmax(axis=1)
        names = class_names(one.probabilities.shape[1])
        titles = [f"{one.path.name} patch {i}: Grad-CAM of {names[c]} at {cam.end_point}\n"
                  f"p {' '.join(f'{v:.2f}' for v in p)}\n{legend(names)}"
                  for i, c, p in zip(one.indices, predicted, one.probabilities)]
        draw_cams(cam, one.images, predicted, list(zip(one.cams, titles)), options.batch_size)


def records(predictions):
    """One dict per patch: file, index, class (its number), label (its name), probabilities
    (a list in class order), and cam (its figure) when Grad-CAM figures were drawn."""
    rows = []
    for one in predictions:
        names = class_names(one.probabilities.shape[1])
        for k, (index, p) in enumerate(zip(one.indices, one.probabilities)):
            c = int(np.argmax(p))
            row = {"file": str(one.path), "index": int(index), "class": c, "label": names[c],
                   "probabilities": [float(v) for v in p]}
            if one.cams is not None:
                row["cam"] = str(one.cams[k])
            rows.append(row)
    return rows


def render(predictions, fmt, net_name):
    """The predictions as the text `fmt` (FORMATS) gives them: 'text' one sentence per patch;
    'json' one array of `records`; 'csv' a header and one row per record, the probabilities in
    columns p_<class name>.

    Raises:
      ValueError: an unknown format.
    """
    rows = records(predictions)
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        return _csv(rows, class_names(predictions[0].probabilities.shape[1]))
    if fmt == "text":
        return "\n".join(
            sentence(f"{one.label} {i}" if one.label.endswith("patch") else one.label, net_name,
                     p)
            for one in predictions for i, p in zip(one.indices, one.probabilities))
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _csv(rows, names):
    out = io.StringIO()
    fields = ["file", "index", "class", "label"] + [f"p_{name}" for name in names] + \
        (["cam"] if rows and "cam" in rows[0] else [])
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        probabilities = row.pop("probabilities")
        writer.writerow({**row, **{f"p_{n}": repr(v) for n, v in zip(names, probabilities)}})
    return out.getvalue().rstrip("\n")


def predict_files(runs, name, paths, log=print):
    """Logs one sentence per patch of the files `paths`; returns the list of [N, C] probability
    arrays, one per file.

    Raises:
      LidcError: as predict_inputs.
    """
    predictions = predict_inputs(runs, name, paths, log=log)
    text = render(predictions, "text", network_name(runs, name))
    for line in text.splitlines():
        log(line)
    return [one.probabilities for one in predictions]
