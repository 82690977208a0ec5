"""The run folder `RUNS/NAME/`: where each file of a run lives, and the life of a run in it:
start, resume (only with the options it was started with), clear, find its checkpoint.

  RUNS/NAME/
    .lock              held (fcntl.flock) by the one process writing or reading the run
    config.json        every option of the run
    metrics.json       the history of evaluations and the status
    ckpt/model-STEP*   the latest checkpoint (tf.compat.v1.train.Saver)
    best/model-STEP*   the checkpoint with the best validation --stop-metric
    train/, val/       TensorBoard event files
    saved_model/       the exported model for inference: images -> probabilities
    eval/              the evaluation on the test set (tools.evaluate)

    with locked(RunDir("runs/demo")) as run_dir:
        run_dir.prepare(config, resume=True)
"""
import contextlib
import json
import shutil
from pathlib import Path

from lidc.errors import LidcError
from lidc.io import exclusive, write_json
from training.options import DEFAULTS


# What a run writes in its folder: `clear` removes these (and their hidden temporaries) only.
RUN_ENTRIES = ("config.json", "metrics.json", "ckpt", "best", "train", "val", "saved_model",
               "eval", "report.html")


def name_problem(name):
    """Why `name` cannot name a run folder (None when it can): a run name is one plain path
    component, so that a run never reaches outside RUNS and --force never clears another."""
    if not name or name.strip() != name:
        return "a run name must not be empty or begin or end with a space"
    if name in (".", "..") or name.startswith("."):
        return f"a run name must not begin with a dot: {name!r}"
    if "/" in name or "\\" in name or "\0" in name or any(ord(c) < 32 for c in name):
        return f"a run name is one folder name, without slashes or control characters: {name!r}"
    return None


class RunDir:
    """The paths of one run folder (nothing is created by constructing it)."""

    def __init__(self, root):
        self.root = Path(root)
        problem = name_problem(self.root.name)
        if problem:
            raise LidcError(self.root, problem)
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
        """config.json as a dict; LidcError when it is missing or unreadable."""
        return _read_json(self.config)

    def read_metrics(self):
        """metrics.json as a dict; LidcError when it is missing or unreadable."""
        return _read_json(self.metrics)

    def started(self):
        """True when a run has written any of its files here."""
        return any((self.root / name).exists() for name in RUN_ENTRIES)

    def finished(self):
        """True when the run stopped by its rule and wrote its status."""
        return self.metrics.is_file() and bool(self.read_metrics().get("finished"))

    def describe(self):
        """'holds a finished run (status)' or 'holds an unfinished run at step N'."""
        if not self.metrics.is_file():
            return "holds an unfinished run with no evaluation yet"
        metrics = self.read_metrics()
        if metrics.get("finished"):
            return f"holds a finished run ({metrics['status']})"
        return f"holds an unfinished run at step {metrics.get('step')}"

    def clear(self):
        """Removes what a run wrote here (RUN_ENTRIES and their hidden temporaries), nothing
        else; returns the names of the other entries, which are left in place."""
        kept = []
        for path in self.root.iterdir():
            ours = path.name in RUN_ENTRIES or any(path.name.startswith(f".{name}.")
                                                    for name in RUN_ENTRIES)
            if not ours:
                if path.name != ".lock":
                    kept.append(path.name)
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return sorted(kept)

    def prepare(self, config, keys, resume=False, force=False, log=print):
        """Makes the folder ready for training `config` and writes its config.json: cleared with
        `force`, continued with `resume` (when the `keys` options are unchanged), new otherwise.

        Raises:
          LidcError: the folder holds a run and neither resume nor force is given, or resume
            with options that would change the run.
        """
        if self.started():
            if force:
                kept = self.clear()
                if kept:
                    log(f"{self.root}: kept what the run did not write: {', '.join(kept)}")
            elif resume:
                self.check_options(config, keys, "cannot resume with other options",
                                   "use --force to start over or another --name")
            else:
                raise LidcError(self.root, self.describe() + "; pass --resume to continue "
                                "it or --force to start it over")
        elif resume:
            log(f"{self.root}: nothing to resume, starting a new run")
        write_json(self.config, config)

    def check_options(self, config, keys, problem, advice):
        """Refuses (LidcError 'PROBLEM (--k a -> b, ...); ADVICE') a saved run whose options
        `keys` differ from `config`'s."""
        changed = changed_options(self.read_config(), config, keys)
        if changed:
            raise LidcError(self.root, f"{problem} ({', '.join(changed)}); {advice}")

    def checkpoint(self):
        """The best checkpoint's prefix, else the latest's.

        Raises:
          LidcError: the run has no checkpoint.
        """
        import tensorflow as tf  # only the commands that need a checkpoint pay for TensorFlow

        for folder in (self.best, self.ckpt):
            prefix = tf.train.latest_checkpoint(str(folder))
            if prefix:
                return prefix
        raise LidcError(self.root, "has no checkpoint; train it first (python -m tools.train)")


def run_folder(runs, name):
    """The RunDir of run `name` under RUNS.

    Raises:
      LidcError: `name` is not one plain folder name (see name_problem).
    """
    problem = name_problem(name)
    if problem:
        raise LidcError(runs, problem)
    return RunDir(Path(runs) / name)


def changed_options(saved, config, keys):
    """'--k a -> b' for each of `keys` whose value in `config` differs from `saved`'s (the
    dataset's digest as 'the dataset a -> b')."""
    def label(key):
        return "the dataset" if key == "dataset" else "--" + key.replace("_", "-")

    def saved_value(key):  # a run saved before an option existed had its default
        return saved.get(key, DEFAULTS.get(key))

    return [f"{label(k)} {saved_value(k)} -> {config.get(k)}"
            for k in keys if saved_value(k) != config.get(k)]


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
