"""Classifies patches with a trained run and says, per patch, the class and how sure it is.

  python -m tools.predict --name demo data/work/patches/patches.npy
  python -m tools.predict --name demo patch_0001.png patch_0002.png

Inputs: an .npy of int16 HU patches (N x 64 x 64, as the crop stage writes them), windowed with
the training window (lidc.windows.TRAINING); or PNG files as crop --png writes them (8-bit
lung window, turned back into HU first). Uses the run's saved_model/ export, else its best
checkpoint.
"""
from pathlib import Path

from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "runs")
    p.add_argument("--name", type=cli.run_name, required=True, help="the run folder under --runs")
    p.add_argument("patches", nargs="+", type=Path, help=".npy files of HU patches or PNG files")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from training import environment

    environment.configure()
    from training.prediction import predict_files

    predict_files(args.runs, args.name, args.patches)
    return 0


if __name__ == "__main__":
    cli.run(main)
