"""Trains a network on the dataset stage's patches into runs/NAME/.

  python -m tools.train --net resnet50 --name demo --min-steps 300 --stop-accuracy 0.8
  python -m tools.train --name demo --resume          # continues from the latest checkpoint
  .venv/bin/tensorboard --logdir runs/demo      # the curves (or tensorboard with .venv active)

The stop rule is the paper's: validation accuracy every --eval-every steps, stop at the first
evaluation past --min-steps with accuracy over --stop-accuracy, else at --max-steps (or earlier
with --patience). See training/loop.py for what the run folder holds.
"""
import importlib.util
import os
import sys
from pathlib import Path

from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs", "seed", "force")
    p.add_argument("--net", help="the network: lenet5, vgg16, resnet50, resnet101, resnet152, "
                                 "alexnet (required unless --resume)")
    p.add_argument("--name", type=cli.run_name,
                   help="the run folder under --runs; the net's name when not given")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its latest checkpoint; options given now "
                        "override the stop rule of the saved config")
    cli.add_training_options(p)
    return p


def config_from(args, argv):
    """The run's config.json content: the options parsed; on --resume of a saved run, its saved
    options with only those typed now overriding them."""
    config = {k: v for k, v in vars(args).items() if k not in ("resume", "force")}
    config["name"] = config.get("name") or config["net"]
    saved = config["name"] and config["runs"] / config["name"] / "config.json"
    if args.resume and saved and saved.is_file():
        from training.rundir import RunDir

        stored = RunDir(saved.parent).read_config()
        config.update({k: stored[k] for k in config if k in stored and k not in ("work", "runs")})
        config.update({k: v for k, v in cli.typed_options(build_parser, argv).items()
                       if k in config})
    return config


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    config = config_from(args, argv)
    if not config["net"]:
        p.error("--net is required (unless --resume finds the run's saved config)")
    if args.resume and args.force:
        p.error("--resume continues a run and --force starts it over: give one of them")
    if importlib.util.find_spec("tensorboard") is None:
        print("note: TensorBoard is not installed (pip install tensorboard) to view the "
              "summaries; training goes on")
    from training import environment

    environment.configure()
    from lidc.errors import LidcError
    from training.loop import Hooks
    from training.runner import display_name, resolve_net, run_training

    try:
        resolve_net(config["net"])
    except LidcError as e:
        p.error(str(e))
    metrics = run_training(config, resume=args.resume, force=args.force,
                           hooks=Hooks(progress=cli.progress))
    run_dir = config["runs"] / config["name"]
    cli.summary(f"train: {display_name(config['net'])} {metrics['status']}", {
        "steps": metrics["step"],
        **_best_line(metrics["best"]),
        "training time": f"{metrics['train_seconds']:.0f} s on the {metrics['device']}",
        "run folder": run_dir,
        "saved model": run_dir / "saved_model",
        "next": f"python -m tools.evaluate --name {config['name']}; "
                f"{_tensorboard()} --logdir {run_dir}",
    })
    return 0


def _tensorboard():
    """How to start TensorBoard from here: the one beside this interpreter (.venv/bin, which a
    shell without .venv active does not have on its PATH), relative to the current folder."""
    beside = Path(sys.executable).parent / "tensorboard"
    return os.path.relpath(beside) if beside.is_file() else "tensorboard"


def _best_line(best):
    """The summary's line on the best checkpoint: its step and the stop metric there (the
    best/ checkpoint is the best by that metric, not by accuracy unless it is the metric)."""
    if best is None:
        return {"best validation": "none (no evaluation yet)"}
    metric, value = best.get("metric", "accuracy"), best.get("value", best["val_accuracy"])
    shown = "undefined" if value is None else f"{value:.3f}"
    return {f"best validation {metric.replace('_', ' ')}": f"{shown} at step {best['step']}"}


if __name__ == "__main__":
    cli.run(main)
