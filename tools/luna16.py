"""LUNA16's CSV files from and for this project's WORK (world coordinates in mm, the DICOM
patient frame; see lidc/luna16.py for how centres and diameters are defined).

`export` writes LUNA16's annotations.csv (seriesuid,coordX,coordY,coordZ,diameter_mm) of the
nodules >= 3 mm that at least --min-readers readers marked (LUNA16: 3 of 4), from
WORK/lesions.csv. `label` reads a LUNA16 annotations.csv (and candidates.csv) back and labels
WORK's patches by where their centres are: one row per patch of patches.csv.

    python -m tools.luna16 export --work data/work --min-readers 3 [--out annotations.csv]
    python -m tools.luna16 label --work data/work --annotations annotations.csv \\
        [--candidates candidates.csv] [--out labels.csv]
"""
import argparse
from pathlib import Path

from lidc import luna16
from tools import cli


def _command(subparsers, name, help_):
    p = subparsers.add_parser(name, help=help_, description=help_, allow_abbrev=False,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work", type=Path, default=cli.DEFAULT_WORK,
                   help="where the stages read and write their artifacts")
    return p


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True, metavar="{export,label}")
    export = _command(commands, "export", "write LUNA16's annotations.csv of WORK's nodules")
    export.add_argument("--min-readers", type=cli.number(int, 1), default=3,
                        help="keep the nodules >= 3 mm at least this many readers marked as "
                             "such (LUNA16: 3 of 4)")
    export.add_argument("--out", type=Path,
                        help="the CSV to write (default WORK/luna16/annotations.csv)")
    label = _command(commands, "label", "label WORK's patches by a LUNA16 annotations.csv "
                                        "(and candidates.csv)")
    label.add_argument("--annotations", type=Path, required=True,
                       help="a LUNA16 annotations.csv: seriesuid,coordX,coordY,coordZ,"
                            "diameter_mm (world mm)")
    label.add_argument("--candidates", type=Path,
                       help="a LUNA16 candidates.csv: seriesuid,coordX,coordY,coordZ,class")
    label.add_argument("--out", type=Path,
                       help="the CSV to write, one row per patch (default "
                            "WORK/luna16/labels.csv); columns: " +
                            ", ".join(luna16.LABEL_COLUMNS))
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "export":
        out = args.out or args.work / "luna16" / "annotations.csv"
        count = luna16.export(args.work, args.min_readers, out)
        cli.summary(f"luna16 export: {out}",
                    {f"nodules >= 3 mm marked by at least {args.min_readers} readers": count})
    else:
        out = args.out or args.work / "luna16" / "labels.csv"
        counts = luna16.label(args.work, args.annotations, args.candidates, out)
        cli.summary(f"luna16 label: {out}", counts)
    return 0


if __name__ == "__main__":
    cli.run(main)
