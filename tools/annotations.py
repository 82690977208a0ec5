"""Stage 2, annotations: every radiologist mark of every indexed series, placed on its slices.

Parses each series' XML reads (every reading session of every file), places each region on a
slice (by SOP UID, else by z), groups the readers' marks into lesions, and writes
WORK/annotations.pkl (the Mark records), WORK/annotations.csv (one row per mark per slice) and
WORK/skipped/annotations.csv. See lidc/stages/annotations.py.

    python -m tools.annotations --work data/work            # after the index stage
    python -m tools.annotations --work data/work --engine ray [--address HOST:6379]
    python -m tools.annotations --xml tcia-lidc-xml/        # the XML-only archive, no images
"""
from pathlib import Path

from lidc.stages import annotations
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "work", "workers", "engine", "force")
    p.add_argument("--xml", type=Path, metavar="DIR",
                   help="read the standalone LIDC XML archive under DIR instead of the index "
                        "(no images: slice indices are left empty)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.engine(args):
        return cli.run_stage(args.work, lambda: annotations.run(args.work, args.workers,
                                                                args.force, args.xml))


if __name__ == "__main__":
    cli.run(main)
