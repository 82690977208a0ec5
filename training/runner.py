"""One training run from the dataset stage's files to a finished run folder: what `tools.train`
and `tools.compare` call.

    metrics = run_training({**DEFAULTS, "net": "resnet50", "name": "demo", "seed": 0,
                            "work": Path("data/work"), "runs": Path("runs")}, resume=True)
"""
import nets
import tensorflow as tf

from lidc.errors import LidcError
from training import data, keras_weights, loop, model
from training.loop import Datasets, Hooks
from training.options import DEFAULTS, identity
from training.rundir import locked, run_folder


def resolve_net(name):
    """The builder of a network name from the registry in nets/.

    Raises:
      LidcError: no network of that name.
    """
    try:
        return nets.get(name)
    except (KeyError, ValueError) as e:
        raise LidcError(None, f"unknown network {name!r} ({e})") from None


def display_name(net):
    """The network's name as people write it ('ResNet-50' for 'resnet50')."""
    return nets.DISPLAY_NAMES.get(net, net)


def run_training(config, resume=False, force=False, builder=None, hooks=Hooks()):
    """Trains one run; the single entry point of tools.train and tools.compare.

    Args:
      config: the options (training.options, plus net, name, work, runs, seed).
      resume: continue the run folder's latest checkpoint if there is one.
      force: start the run folder over.
      builder: the network function; default `nets.get(config["net"])`.
      hooks: progress bar, per-step callback and log (training.loop.Hooks).
    Returns:
      the run's final metrics.json content.
    Raises:
      LidcError: missing dataset, a run folder in use, finished or unfinished without
        resume/force, or resume with options that would change the run.
    """
    config = {**DEFAULTS, **config}
    dataset_dir = config["work"] / "dataset"
    train_set, val_set = data.load(dataset_dir, "train"), data.load(dataset_dir, "val")
    if config.get("train_size"):
        train_set = data.stratified_subset(train_set, config["train_size"], config["seed"])
    builder = builder or resolve_net(config["net"])
    config = {**config, "train_rows": len(train_set), "val_rows": len(val_set),
              "dataset": data.dataset_digest(dataset_dir),
              "init_from_sha1": keras_weights.source_sha1(config.get("init_from"))}
    with locked(run_folder(config["runs"], config["name"])) as run_dir:
        run_dir.prepare(config, identity(config), resume, force, hooks.log)
        if config.get("deterministic"):
            tf.config.experimental.enable_op_determinism()
        device = model.device_description()
        hooks.log(f"training {config['net']} on {len(train_set)} patches "
                  f"(validation {len(val_set)}) on the {device}")
        return loop.train(builder, Datasets(train_set, val_set), run_dir.root, config,
                          hooks=hooks, device=device)
