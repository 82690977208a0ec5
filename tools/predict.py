"""Classifies patches with a trained run and says, per patch, the class and how sure it is.

  python -m tools.predict --name demo data/work/patches/patches.npy --index 0:10
  python -m tools.predict --name demo patch_0001.png patch_0002.png
  python -m tools.predict --name demo --format json --tta patches.npy > answers.json
  python -m tools.predict --name demo --cam cams/ patches.npy

Inputs: an .npy of int16 HU patches (N x 64 x 64, as the crop stage writes them), windowed with
the training window (lidc.windows.TRAINING), or a range of its patches (--index, Python's slice
syntax: 0:10, -5:, ::100, or one index); or PNG files as crop --png writes them (8-bit lung
window, turned back into HU first). Uses the run's saved_model/ export, else its best checkpoint.

Output, on standard output and nothing else there (messages go to standard error):
  text  one sentence per patch: 'patch 3: ResNet-50 is 91.3% confident this is a nodule >= 3 mm'
  json  one array, an object per patch: file, index (the patch's index in its file, 0 for a
        PNG), class (its number), label (its name), probabilities (a list in class order), and
        cam (its figure's path) with --cam
  csv   a header and a row per patch: file, index, class, label, then one column per class,
        p_<class name> (e.g. 'p_nodule >= 3 mm'), and cam with --cam
"""
import argparse
import sys
from pathlib import Path

from tools import cli


def tta_option(text):
    """An argparse type: the symmetries --tta names (training.tta.parse)."""
    from training import tta

    try:
        return tta.parse(text)
    except ValueError as e:
        # argparse gives a bare --tta the word after it, which may be a file name.
        raise argparse.ArgumentTypeError(f"{e} (--tta alone means all; before file names write "
                                          "--tta all)") from None


def rows_option(text):
    """An argparse type: --index in Python's slice syntax (training.prediction.parse_rows)."""
    from training.prediction import parse_rows

    try:
        return parse_rows(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_explain_options(p):
    """--tta and --cam-end-point, shared with tools.evaluate."""
    from training import tta

    p.add_argument("--tta", nargs="?", const=tta.GROUPS["all"], type=tta_option, metavar="SET",
                   help=tta.HELP)
    p.add_argument("--cam-end-point", metavar="NAME",
                   help="the end point Grad-CAM reads (e.g. block2, conv4); default: the last "
                        "whose map is at least 8x8")


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "runs")
    p.add_argument("--name", type=cli.run_name, required=True, help="the run folder under --runs")
    p.add_argument("patches", nargs="+", type=Path, help=".npy files of HU patches or PNG files")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text",
                   help="sentences for people, or CSV or JSON for scripts")
    p.add_argument("--index", type=rows_option, metavar="RANGE",
                   help="classify only these patches of each .npy: Python's slice syntax "
                        "(0:10, 100:, -5:, ::50) or one index")
    p.add_argument("--cam", type=Path, metavar="DIR",
                   help="write one Grad-CAM figure per patch into DIR")
    add_explain_options(p)
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.index is not None and not any(path.suffix.lower() == ".npy" for path in args.patches):
        p.error("--index picks patches of .npy files; none was given")
    if args.cam_end_point is not None and args.cam is None:
        p.error("--cam-end-point chooses the map of --cam's figures; give --cam DIR too")
    from training import environment

    environment.configure()
    from training.prediction import EmptyRange, PredictOptions, network_name, predict_inputs, \
        render

    options = PredictOptions(tta=args.tta, rows=args.index, cam_dir=args.cam,
                             cam_end_point=args.cam_end_point)
    try:
        predictions = predict_inputs(args.runs, args.name, args.patches, options,
                                     log=lambda line: print(line, file=sys.stderr))
    except EmptyRange as e:
        p.error(str(e))
    print(render(predictions, args.format, network_name(args.runs, args.name)))
    return 0


if __name__ == "__main__":
    cli.run(main)
