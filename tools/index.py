"""Stage 1, index: find every CT series under a LIDC root and the XML reads that belong to it.

Series are found by their DICOM headers (SeriesInstanceUID, Modality), never by folder names;
an XML read is matched to its series by the SeriesInstanceUid in its header, never by folder.
Writes WORK/index.csv (one row per CT series), WORK/slices.csv (one row per slice, in z order)
and WORK/skipped/index.csv (what was not used, and why). See lidc/stages/index.py.

    python -m tools.index --root data/LIDC-IDRI --work data/work [--png] [--engine ray]
"""
from lidc.stages import index
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "root", "work", "workers", "engine", "force")
    p.add_argument("--png", action="store_true",
                   help="also export every CT slice as a lossless 8-bit PNG in a lung window "
                        "(-600 HU centre, 1500 HU width) under WORK/png/PATIENT/SERIES/")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.engine(args):
        return cli.run_stage(args.work, lambda: index.run(args.root, args.work, args.workers,
                                                          args.force, args.png))


if __name__ == "__main__":
    cli.run(main)
