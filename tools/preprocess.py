"""index, annotations and crop in one go, with one pool of workers: a LIDC root into patches.
The stages' other options (--png) are on their own commands.

Runs the three stages in order in one process, exactly as their own commands would (each writes
its files, skip report and summary; each resumes), but with one pool of worker processes for all
three: the workers start once and stay warm, where three commands would start and stop a pool
each. Stops at the first stage that cannot run. With --engine ray the series run as Ray tasks
instead, on a Ray started here or on a cluster (--address HOST:PORT), with the same files.

    python -m tools.preprocess --root data/LIDC-IDRI --work data/work [--workers N] [--size 64]
    python -m tools.preprocess --engine ray --address HOST:6379 --root /shared/LIDC-IDRI \
        --work /shared/work
"""
from lidc.stages import annotations, crop, index
from lidc.workers import shared_pools
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "root", "work", "workers", "engine", "force")
    p.add_argument("--size", type=cli.patch_size, default=64,
                   help="patch side in pixels (crop)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    stages = [lambda: index.run(args.root, args.work, args.workers, args.force),
              lambda: annotations.run(args.work, args.workers, args.force),
              lambda: crop.run(args.work, args.size, args.workers, args.force)]
    with shared_pools(), cli.engine(args):
        for stage in stages:
            cli.run_stage(args.work, stage)
    return 0


if __name__ == "__main__":
    cli.run(main)
