"""The trained runs a viewer offers, and their class probabilities for patches.

A run is offered when it holds a model: `saved_model/`, else a checkpoint in `best/` or `ckpt/`
(the order training.prediction.load_predictor loads them in). Listing runs reads their JSON files
only; TensorFlow is imported when the first probabilities are asked for, so that a viewer comes
up at once. Loaded models and their probabilities are kept, keyed by the model's file stamp, so a
run that is trained again is loaded again.

    models = Models(Path("runs"))
    [run.name for run in models.available()]
    probabilities = models.probabilities("demo", ("series", 1), lambda: images)
"""
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lidc.errors import LidcError
from training.rundir import RunDir, name_problem


@dataclass(frozen=True)
class RunInfo:
    """A run folder with a model: its name, network, which model loads ('saved model' or
    'checkpoint'), that model's file stamp, the dataset digest it was trained on, and its best
    validation and test accuracies (None when not known)."""
    name: str
    net: str
    model: str
    stamp: tuple
    dataset: str | None
    val_accuracy: float | None
    test_accuracy: float | None


def run_info(runs, name):
    """The RunInfo of RUNS/NAME, or None when it is no run folder with a model.

    Raises:
      LidcError: `name` is not one plain folder name (training.rundir.name_problem).
    """
    problem = name_problem(name)
    if problem:
        raise LidcError(None, problem)
    run_dir = RunDir(Path(runs) / name)
    found = _model_file(run_dir)
    if found is None:
        return None
    model, path = found
    status = path.stat()
    config = _json_or_empty(run_dir.config)
    best = _json_or_empty(run_dir.metrics).get("best") or {}
    test = _json_or_empty(run_dir.eval / "metrics.json")
    return RunInfo(name=name, net=str(config.get("net", "")), model=model,
                   stamp=(str(path), status.st_mtime_ns, status.st_size),
                   dataset=config.get("dataset"), val_accuracy=best.get("val_accuracy"),
                   test_accuracy=test.get("accuracy"))


def available(runs):
    """The RunInfo of every run under RUNS with a model, by name."""
    runs = Path(runs)
    if not runs.is_dir():
        return []
    found = []
    for path in sorted(runs.iterdir()):
        if path.is_dir() and name_problem(path.name) is None:
            info = run_info(runs, path.name)
            if info is not None:
                found.append(info)
    return found


def _model_file(run_dir):
    """('saved model' | 'checkpoint', the file whose change means a new model), or None."""
    if (run_dir.saved_model / "saved_model.pb").is_file():
        return "saved model", run_dir.saved_model / "saved_model.pb"
    for folder in (run_dir.best, run_dir.ckpt):
        if (folder / "checkpoint").is_file():  # the Saver's list of its checkpoints
            return "checkpoint", folder / "checkpoint"
    return None


def _json_or_empty(path):
    """The JSON object in `path`, or {} (a run being written may not have it yet)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _prepare_tensorflow():
    from training import environment

    environment.configure()


class Models:
    """Runs' probabilities for patches: models loaded on first use, the last `keep` of them
    kept open, and every result kept per (run, model stamp, key).

    Args:
      runs: the RUNS folder.
      keep: how many loaded models stay open.
      prepare: called once before TensorFlow is first used (default: training.environment
        .configure, graph mode and quiet, as the other commands).
    """

    def __init__(self, runs, keep=2, prepare=_prepare_tensorflow):
        self.runs = Path(runs)
        self.keep = keep
        self._prepare = prepare
        self._loaded = OrderedDict()  # (name, stamp) -> Predictor, least recently used first
        self._results = {}  # (name, stamp, key) -> probabilities
        # One model at a time: loading and running share the CPU cores anyway, and a Session
        # must not be closed while another thread runs it.
        self._lock = threading.Lock()

    def available(self):
        """The RunInfo of every run with a model (see `available`)."""
        return available(self.runs)

    def find(self, name):
        """The RunInfo of run `name`.

        Raises:
          LidcError: a name that is not one plain folder name.
          LookupError: no such run, or it holds no model yet.
        """
        info = run_info(self.runs, name)
        if info is None:
            raise LookupError(f"no run {name!r} with a saved model or checkpoint under "
                              f"{self.runs}")
        return info

    def probabilities(self, name, key, images):
        """[N, classes] probabilities of run `name` for the patches `images()` gives
        ([N, H, W] float32 in [0, 1]), computed once per model and `key`.

        Raises:
          LookupError: no such run (see find).
          LidcError: the model cannot be loaded, takes another patch size, or gives numbers
            that are not finite.
        """
        info = self.find(name)
        cache_key = (name, info.stamp, key)
        with self._lock:
            if cache_key not in self._results:
                self._results[cache_key] = self._predict(info, images())
            return self._results[cache_key]

    def _predict(self, info, images):
        predictor = self._predictor(info)
        expected = tuple(predictor.images.shape[1:3])
        if len(images) and tuple(images.shape[1:3]) != expected:
            raise LidcError(self.runs / info.name, f"takes {expected[0]}x{expected[1]} patches, "
                                                   f"not the {images.shape[1]}x"
                                                   f"{images.shape[2]} of WORK's patches")
        if not len(images):
            return np.zeros((0, int(predictor.probabilities.shape[-1])), np.float32)
        probabilities = predictor.predict(images[..., None])
        if not np.isfinite(probabilities).all():
            raise LidcError(self.runs / info.name, "the model gives probabilities that are not "
                                                   "finite numbers; retrain it")
        return probabilities

    def _predictor(self, info):
        """The loaded model of `info`, loading it (and closing the oldest) when needed."""
        key = (info.name, info.stamp)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        if self._prepare is not None:
            self._prepare()
            self._prepare = None
        from training.prediction import load_predictor  # imports TensorFlow

        predictor = load_predictor(RunDir(self.runs / info.name))
        self._loaded[key] = predictor
        while len(self._loaded) > self.keep:
            self._loaded.popitem(last=False)[1].close()
        return predictor

    def close(self):
        """Closes every loaded model."""
        with self._lock:
            while self._loaded:
                self._loaded.popitem()[1].close()
