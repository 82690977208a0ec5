"""Trains a network on the dataset stage's patches into runs/NAME/.

  python -m tools.train --net resnet50 --name demo --min-steps 300 --stop-accuracy 0.8
  python -m tools.train --name demo --resume          # continues from the latest checkpoint
  tensorboard --logdir runs/demo

The stop rule is the paper's: validation accuracy every --eval-every steps, stop at the first
evaluation past --min-steps with accuracy over --stop-accuracy, else at --max-steps (or earlier
with --patience). See training/loop.py for what the run folder holds.
"""
import argparse
import importlib.util
import shutil

from lidc.errors import LidcError
from tools import cli

# Options that fix which steps a run takes: a resumed run must keep them, or it would not be
# the same run continued. (The stop-rule options may change on --resume.)
IDENTITY = ("net", "batch_size", "lr", "lr_schedule", "lr_decay", "lr_decay_steps", "augment",
            "train_size", "seed")


def add_training_options(p):
    """The options that shape a training run, shared by tools.train and tools.compare."""
    from training.rules import SCHEDULES

    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=16, help="patches per step (paper: 16)")
    g.add_argument("--lr", type=float, default=0.001, help="Adam's learning rate (paper: 0.001)")
    g.add_argument("--lr-schedule", choices=SCHEDULES, default="constant",
                   help="constant; exponential: lr * lr_decay ** (step / lr_decay_steps); "
                        "cosine: annealed to 0 at --max-steps")
    g.add_argument("--lr-decay", type=float, default=0.96, help="rate of the exponential schedule")
    g.add_argument("--lr-decay-steps", type=int, default=1000,
                   help="steps per --lr-decay of the exponential schedule")
    g.add_argument("--min-steps", type=int, default=5000,
                   help="the accuracy threshold applies only past this step (paper: 5000)")
    g.add_argument("--stop-accuracy", type=float, default=0.90,
                   help="stop once validation accuracy is over this (paper: 0.90)")
    g.add_argument("--max-steps", type=int, default=20000, help="stop here in any case")
    g.add_argument("--eval-every", type=int, default=100,
                   help="steps between validation evaluations (and checkpoints)")
    g.add_argument("--patience", type=int, default=0,
                   help="stop after this many evaluations without a lower validation loss "
                        "(0: off)")
    g.add_argument("--augment", action="store_true",
                   help="random rotations by multiples of 90 degrees and flips")
    g.add_argument("--train-size", type=int, default=None,
                   help="train on a stratified subset of this many patches; none: all")
    g.add_argument("--deterministic", action="store_true",
                   help="turn on TensorFlow's op determinism: the same seed gives the same "
                        "weights (slower on a GPU)")
    return g


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs", "seed", "force")
    p.add_argument("--net", help="the network: lenet5, vgg16, resnet50, resnet101, resnet152, "
                                 "alexnet (required unless --resume)")
    p.add_argument("--name", help="the run folder under --runs; the net's name when not given")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its latest checkpoint; options given now "
                        "override the stop rule of the saved config")
    add_training_options(p)
    return p


def explicit_options(p, argv):
    """The options the user typed (not their defaults), as a dict."""
    quiet = argparse.ArgumentParser(add_help=False)
    for action in p._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = action.type
            quiet.add_argument(*action.option_strings, **kwargs)
    return vars(quiet.parse_known_args(argv)[0])


def config_from(args):
    """The run's config.json content from parsed options (per-invocation flags left out)."""
    config = {k: v for k, v in vars(args).items() if k not in ("resume", "force")}
    config["name"] = config.get("name") or config["net"]
    return config


def resolve(builder_name):
    """The builder of a network name from the registry in nets/."""
    import nets

    try:
        return nets.get(builder_name)
    except (KeyError, ValueError) as e:
        raise LidcError(None, f"unknown network {builder_name!r} ({e})") from None


def display_name(net):
    try:
        import nets
        return nets.DISPLAY_NAMES.get(net, net)
    except (ImportError, AttributeError):
        return net


def run_training(config, resume=False, force=False, builder=None, progress=None,
                 after_step=None, log=print):
    """Trains one run; the single entry point of tools.train and tools.compare.

    Args:
      config: the options (see `build_parser`; keys as argparse dests) with `name` set.
      resume: continue the run folder's latest checkpoint if there is one.
      force: start the run folder over.
      builder: the network function; default `nets.get(config["net"])`.
      progress, after_step: passed to training.loop.train.
      log: where one-line messages go.
    Returns:
      the run's final metrics.json content.
    Raises:
      LidcError: missing dataset, a run folder in use, finished or unfinished without
        --resume/--force, or --resume with options that would change the run.
    """
    import tensorflow as tf

    from training import data, loop, model
    from training.rundir import RunDir, locked
    from lidc.io import write_json

    dataset_dir = config["work"] / "dataset"
    train_set, val_set = data.load(dataset_dir, "train"), data.load(dataset_dir, "val")
    if config.get("train_size"):
        train_set = data.stratified_subset(train_set, config["train_size"], config["seed"])
    builder = builder or resolve(config["net"])
    config = {**config, "train_rows": len(train_set), "val_rows": len(val_set)}
    run_dir = RunDir(config["runs"] / config["name"])
    with locked(run_dir):
        if run_dir.started():
            if force:
                clear(run_dir)
            elif resume:
                check_resumable(run_dir, config)
            else:
                raise LidcError(run_dir.root, describe(run_dir) + "; pass --resume to continue "
                                "it or --force to start it over")
        elif resume:
            log(f"{run_dir.root}: nothing to resume, starting a new run")
        write_json(run_dir.config, config)
        if config.get("deterministic"):
            tf.config.experimental.enable_op_determinism()
        device = model.device_description()
        log(f"training {config['net']} on {len(train_set)} patches "
            f"(validation {len(val_set)}) on the {device}")
        return loop.train(builder, train_set, val_set, run_dir.root, config,
                          progress=progress, after_step=after_step, device=device)


def describe(run_dir):
    """'holds a finished run (status)' or 'holds an unfinished run at step N'."""
    if not run_dir.metrics.is_file():
        return "holds an unfinished run with no evaluation yet"
    metrics = run_dir.read_metrics()
    if metrics.get("finished"):
        return f"holds a finished run ({metrics['status']})"
    return f"holds an unfinished run at step {metrics.get('step')}"


def check_resumable(run_dir, config):
    """Refuses to resume with options that change which steps the run takes."""
    saved = run_dir.read_config()
    keys = IDENTITY + (("max_steps",) if config.get("lr_schedule") == "cosine" else ())
    changed = [f"--{k.replace('_', '-')} {saved.get(k)} -> {config.get(k)}"
               for k in keys if saved.get(k) != config.get(k)]
    if changed:
        raise LidcError(run_dir.root, "cannot resume with other options ("
                        + ", ".join(changed) + "); use --force to start over or another --name")


def clear(run_dir):
    """Removes everything in the run folder but its lock (which the caller holds)."""
    for path in run_dir.root.iterdir():
        if path.name == ".lock":
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    config = config_from(args)
    if not config["name"]:
        p.error("--net is required (or --name with --resume)")
    saved = config["runs"] / config["name"] / "config.json"
    if args.resume and saved.is_file():
        # The saved options are the run; only what is typed now overrides them.
        from training.rundir import RunDir

        stored = RunDir(saved.parent).read_config()
        config.update({k: stored[k] for k in config if k in stored and k not in ("work", "runs")})
        config.update({k: v for k, v in explicit_options(p, argv).items() if k in config})
    if not config["net"]:
        p.error("--net is required (unless --resume finds the run's saved config)")
    try:
        resolve(config["net"])
    except LidcError as e:
        p.error(str(e))
    if config["eval_every"] < 1 or config["max_steps"] < 1 or config["batch_size"] < 1:
        p.error("--eval-every, --max-steps and --batch-size must be at least 1")
    if importlib.util.find_spec("tensorboard") is None:
        print("note: TensorBoard is not installed (pip install tensorboard) to view the "
              "summaries; training goes on")

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")  # the v1 API's deprecation notices are expected here
    metrics = run_training(config, resume=args.resume, force=args.force, progress=cli.progress)
    run_dir = config["runs"] / config["name"]
    best = metrics["best"]
    cli.summary(f"train: {display_name(config['net'])} {metrics['status']}", {
        "steps": metrics["step"],
        "best validation accuracy": f"{best['val_accuracy']:.3f} at step {best['step']}",
        "training time": f"{metrics['train_seconds']:.0f} s on the {metrics['device']}",
        "run folder": run_dir,
        "saved model": run_dir / "saved_model",
        "next": f"python -m tools.evaluate --name {config['name']}; "
                f"tensorboard --logdir {run_dir}",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
