"""What every command shares: the common options, the exit codes, the summary.

Exit codes (ARCHITECTURE.md): 0 the work was done (skipped inputs are reported, not fatal),
2 a usage error (argparse), 1 the command could not run at all.
"""
import argparse
import errno
import math
import os
import sys
from pathlib import Path

from lidc.errors import LidcError
from lidc.workers import default_workers, progress

DEFAULT_ROOT = Path("data/LIDC-IDRI")
DEFAULT_WORK = Path("data/work")
DEFAULT_RUNS = Path("runs")

__all__ = ["parser", "number", "run_name", "patch_size", "comma_list", "add_training_options",
           "typed_options", "run", "summary", "run_stage", "print_result", "progress"]


def number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite `kind` (int or float) within [low, high] (an end left open
    with low_open/high_open, unbounded where None). A value outside exits 2 naming the option
    and the range."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_a(kind)}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high, low_open, high_open)}, "
                                             f"not {text}")
        return value
    convert.__name__ = kind.__name__
    return convert


def _a(kind):
    return "an integer" if kind is int else "a number"


def _range(low, high, low_open, high_open):
    if high is None:
        return f"{'over' if low_open else 'at least'} {low}"
    if low is None:
        return f"{'under' if high_open else 'at most'} {high}"
    return f"{'over' if low_open else 'at least'} {low} and " \
           f"{'under' if high_open else 'at most'} {high}"


def run_name(text):
    """An argparse type: a run's name, one plain path component (see training.rundir)."""
    from training.rundir import name_problem

    problem = name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def patch_size(text):
    """An argparse type: an even number of pixels, at least 8 (a patch is centred on a pixel)."""
    value = number(int, 8)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even, not {value}")
    return value


def comma_list(kind=str, low=None):
    """An argparse type: a comma-separated list of `kind` (each at least `low` for numbers)."""
    item = number(kind, low) if kind in (int, float) else kind

    def convert(text):
        items = [item(part.strip()) for part in text.split(",") if part.strip()]
        if not items:
            raise argparse.ArgumentTypeError("an empty list")
        return items
    convert.__name__ = "list"
    return convert


def _common(p, name):
    common = {
        "root": lambda: p.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                                       help="the LIDC root in TCIA layout"),
        "work": lambda: p.add_argument("--work", type=Path, default=DEFAULT_WORK,
                                       help="where the stages read and write their artifacts"),
        "runs": lambda: p.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                                       help="where training runs live, one folder per --name"),
        "workers": lambda: p.add_argument("--workers", type=number(int, 1),
                                          default=default_workers(),
                                          help="parallel processes, one per core unless given"),
        "seed": lambda: p.add_argument("--seed", type=number(int, 0), default=0,
                                       help="fixes every random choice"),
        "force": lambda: p.add_argument("--force", action="store_true",
                                        help="redo finished work instead of skipping it"),
    }
    common[name]()


def parser(description, *options):
    """An ArgumentParser with the named common options ('root', 'work', 'runs', 'workers',
    'seed', 'force'), each with the name, meaning and default of the command-line contract."""
    # No abbreviations: "--max" must not silently mean --max-steps or --max-train.
    p = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name in options:
        _common(p, name)
    return p


def add_training_options(p, leave_out=()):
    """The options that shape a training run (training.options), as a group of `p`; those
    named in `leave_out` are not offered (a command that sets them itself)."""
    from training.options import OPTIONS

    group = p.add_argument_group("training")
    for option in OPTIONS:
        if option.name in leave_out:
            continue
        flags = (option.flag, *option.aliases)
        if option.type is bool:
            group.add_argument(*flags, action="store_true", help=option.help)
        elif option.type is str:
            group.add_argument(*flags, default=option.default, choices=option.choices,
                               help=option.help)
        else:
            low, high = option.bounds
            group.add_argument(*flags, default=option.default, help=option.help,
                               type=number(option.type, low, high, *option.open_ends))
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
    # File and reader names may hold bytes that are not UTF-8: printed escaped, never an error.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = main(argv)
    except LidcError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except OSError as e:  # the file system refused: no space, no permission, read-only
        where = f"{e.filename}: " if e.filename else ""
        advice = "; free space and run the command again (finished work is kept)" \
            if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"error: {where}{e.strerror or e}{advice}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the command again to resume",
              file=sys.stderr)
        code = 130
    sys.exit(code or 0)


def summary(title, counts, skipped=()):
    """Prints the end-of-stage summary: what was done, and what was skipped and why; paths
    under the current folder are shown relative to it."""
    print(f"\n{_shown(title)}")
    for name, value in counts.items():
        print(f"  {name}: {_shown(value)}")
    skipped = list(skipped)
    if skipped:
        print(f"  skipped: {len(skipped)}")
        for path, reason in skipped[:20]:
            print(f"    {_shown(path)}: {_shown(reason)}")
        if len(skipped) > 20:
            print(f"    ... and {len(skipped) - 20} more (see the stage's skipped.csv)")


def _shown(value):
    """`value` as text, with the current folder's absolute path left out of the paths in it."""
    return str(value).replace(os.path.join(os.getcwd(), ""), "")


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
        print(f"  skip report: {_shown(result.report)}")
