"""What every command shares: the common options, the exit codes, the summary.

Exit codes (ARCHITECTURE.md): 0 the work was done (skipped inputs are reported, not fatal),
2 a usage error (argparse), 1 the command could not run at all.
"""
import argparse
import sys
from pathlib import Path

from lidc.errors import LidcError
from lidc.workers import default_workers, progress

DEFAULT_ROOT = Path("data/LIDC-IDRI")
DEFAULT_WORK = Path("data/work")
DEFAULT_RUNS = Path("runs")

__all__ = ["parser", "add_training_options", "typed_options", "run", "summary", "run_stage", "print_result",
           "progress"]


def _common(p, name):
    common = {
        "root": lambda: p.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                                       help="the LIDC root in TCIA layout"),
        "work": lambda: p.add_argument("--work", type=Path, default=DEFAULT_WORK,
                                       help="where the stages read and write their artifacts"),
        "runs": lambda: p.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                                       help="where training runs live, one folder per --name"),
        "workers": lambda: p.add_argument("--workers", type=int, default=default_workers(),
                                          help="parallel processes, one per core unless given"),
        "seed": lambda: p.add_argument("--seed", type=int, default=0,
                                       help="fixes every random choice"),
        "force": lambda: p.add_argument("--force", action="store_true",
                                        help="redo finished work instead of skipping it"),
    }
    common[name]()


def parser(description, *options):
    """An ArgumentParser with the named common options ('root', 'work', 'runs', 'workers',
    'seed', 'force'), each with the name, meaning and default of the command-line contract."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name in options:
        _common(p, name)
    return p


def add_training_options(p):
    """The options that shape a training run (training.options), as a group of `p`."""
    from training.options import OPTIONS

    group = p.add_argument_group("training")
    for option in OPTIONS:
        if option.type is bool:
            group.add_argument(option.flag, action="store_true", help=option.help)
        else:
            group.add_argument(option.flag, type=option.type, default=option.default,
                               choices=option.choices, help=option.help)
    return group


def typed_options(build_parser, argv):
    """The options typed on the command line `argv` (not those left at their defaults), as a
    dict of argparse dests: what a resumed run lets override its saved options."""
    unset = object()
    p = build_parser()
    defaults = vars(p.parse_args(argv))
    p.set_defaults(**dict.fromkeys(defaults, unset))
    return {k: v for k, v in vars(p.parse_args(argv)).items() if v is not unset}


def run(main, argv=None):
    """Runs `main(argv)`; turns a LidcError into a one-line message and exit code 1."""
    try:
        code = main(argv)
    except LidcError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the command again to resume",
              file=sys.stderr)
        code = 130
    sys.exit(code or 0)


def summary(title, counts, skipped=()):
    """Prints the end-of-stage summary: what was done, and what was skipped and why."""
    print(f"\n{title}")
    for name, value in counts.items():
        print(f"  {name}: {value}")
    skipped = list(skipped)
    if skipped:
        print(f"  skipped: {len(skipped)}")
        for path, reason in skipped[:20]:
            print(f"    {path}: {reason}")
        if len(skipped) > 20:
            print(f"    ... and {len(skipped) - 20} more (see the stage's skipped.csv)")


def run_stage(work, stage):
    """Runs `stage()` (a lidc.stages function's call) holding WORK's lock and prints its
    StageResult; returns the exit code 0."""
    from lidc.stages import work_lock

    with work_lock(work):
        print_result(stage())
    return 0


def print_result(result):
    """Prints a stage's lidc.stages.StageResult: its summary, further lines and skip report."""
    summary(result.title, result.counts, result.skipped)
    for line in result.notes:
        print(f"  {line}")
    if result.report is not None:
        print(f"  skip report: {result.report}")
