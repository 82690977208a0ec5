"""index, annotations and crop in one go, with one pool of workers: a LIDC root into patches.
The stages' other options (--png) are on their own commands.

Runs the three stages in order in one process, exactly as their own commands would (each writes
its files, skip report and summary; each resumes), but with one pool of worker processes for all
three: the workers start once and stay warm, where three commands would start and stop a pool
each. Stops at the first stage that cannot run.

    python -m tools.preprocess --root data/LIDC-IDRI --work data/work [--workers N] [--size 64]
"""
from tools import annotations, cli, crop, index


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "root", "work", "workers", "force")
    p.add_argument("--size", type=int, default=64, help="patch side in pixels (crop)")
    return p


def stage_argvs(args):
    """The argv each stage's main gets: the shared options, passed through."""
    common = ["--work", str(args.work), "--workers", str(args.workers)]
    if args.force:
        common.append("--force")
    return [(index, ["--root", str(args.root), *common]),
            (annotations, common),
            (crop, [*common, "--size", str(args.size)])]


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.shared_pools():
        for stage, stage_argv in stage_argvs(args):
            code = stage.main(stage_argv)
            if code:
                return code
    return 0


if __name__ == "__main__":
    cli.run(main)
