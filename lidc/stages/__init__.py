"""The preprocessing stages as library functions: index, annotations, crop, dataset.

Each stage module has one `run(...)` that reads the files of the stage before it, writes its own
artifacts atomically (and its skip report), resumes from the units an earlier run finished, and
returns a StageResult for the command to print. The commands in tools/ only parse options, hold
the work folder's lock (`work_lock`), call `run` and print.

    with work_lock(work):
        result = index.run(root, work, workers=2)
    print(result.title, result.counts)
"""
from dataclasses import dataclass, field
from pathlib import Path

from lidc.io import exclusive, write_csv


@dataclass
class StageResult:
    """What a stage did: a title naming its outputs, counts in the order they read best, what it
    skipped as (path, reason), where the full skip report is, and any further lines to print."""
    title: str
    counts: dict
    skipped: list = field(default_factory=list)
    report: Path | None = None
    notes: list = field(default_factory=list)


def work_lock(work):
    """Holds WORK for a stage: a second stage run on the same WORK meanwhile is refused rather
    than let the two overwrite each other's parts and outputs."""
    return exclusive(work, "wait for it to finish or choose another --work")


def write_skipped(work, stage, skipped):
    """Writes WORK/skipped/STAGE.csv (path, reason): the full list behind the summary."""
    path = Path(work) / "skipped" / f"{stage}.csv"
    write_csv(path, [{"path": p, "reason": r} for p, r in skipped], ["path", "reason"])
    return path
