"""The run folder `RUNS/NAME/`: where each file of a run lives, its state, and its lock.

  RUNS/NAME/
    .lock              held (fcntl.flock) by the one process writing or reading the run
    config.json        every option of the run
    metrics.json       the history of evaluations and the status
    ckpt/model-STEP*   the latest checkpoints (tf.compat.v1.train.Saver)
    best/model-STEP*   the checkpoint with the best validation accuracy
    train/, val/       TensorBoard event files
    saved_model/       the exported model for inference: images -> probabilities
    eval/              the evaluation on the test set (tools.evaluate)
"""
import contextlib
import json
from pathlib import Path

from lidc.errors import LidcError
from lidc.io import exclusive


class RunDir:
    """The paths of one run folder (nothing is created by constructing it)."""

    def __init__(self, root):
        self.root = Path(root)
        self.lock = self.root / ".lock"
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.json"
        self.ckpt = self.root / "ckpt"
        self.best = self.root / "best"
        self.train_events = self.root / "train"
        self.val_events = self.root / "val"
        self.saved_model = self.root / "saved_model"
        self.eval = self.root / "eval"

    def read_config(self):
        return _read_json(self.config)

    def read_metrics(self):
        return _read_json(self.metrics)

    def started(self):
        """True when a run has written anything here besides the lock."""
        return self.root.is_dir() and any(p.name != ".lock" for p in self.root.iterdir())

    def finished(self):
        """True when the run stopped by its rule and wrote its status."""
        return self.metrics.is_file() and bool(self.read_metrics().get("finished"))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise LidcError(path, "missing; was this run trained?") from None
    except (OSError, ValueError) as e:
        raise LidcError(path, f"unreadable ({e})") from None


@contextlib.contextmanager
def locked(run_dir):
    """Holds the run folder's lock (`.lock`, see lidc.io.exclusive) for the body; yields the
    RunDir.

    Raises:
      LidcError: another process (or open file) holds the lock.
    """
    run_dir = RunDir(run_dir) if not isinstance(run_dir, RunDir) else run_dir
    with exclusive(run_dir.root, "wait for it to finish or choose another --name"):
        yield run_dir
