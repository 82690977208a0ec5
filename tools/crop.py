"""Stage 3, crop: a 64x64 patch around every mark on every slice it covers.

Reads each series once (only the slices that carry marks), cuts each region's patch centred on
its centroid (32 pixels each side, air beyond the image edge), and writes WORK/patches/
patches.npy (N x S x S int16 HU, memory-mappable), WORK/patches/patches.csv (one row per patch,
in the order of patches.npy) and WORK/skipped/crop.csv. See lidc/stages/crop.py.

    python -m tools.crop --work data/work [--size 64] [--png] [--engine ray]
"""
from lidc.stages import crop
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "work", "workers", "engine", "force")
    p.add_argument("--size", type=cli.patch_size, default=64, help="patch side in pixels")
    p.add_argument("--png", action="store_true",
                   help="also write each patch as an 8-bit lung-window PNG under "
                        "WORK/patches/png/ (named by patch index; labels are in patches.csv)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.engine(args):
        return cli.run_stage(args.work, lambda: crop.run(args.work, args.size, args.workers,
                                                         args.force, args.png))


if __name__ == "__main__":
    cli.run(main)
