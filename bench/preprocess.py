"""Preprocessing: index, annotations and crop on a cohort of realistic geometry, against the floor.

The cohort is synthetic (lidc.synthetic.write_cohort: real DICOM files and LIDC XML reads) with
the geometry of the real collection: 512x512 slices, about 130 slices per series. It is written
once and cached under data/bench/ (ignored by git). The floor is the least any preprocessing
must do: `pydicom.dcmread` every slice once and decode its pixels, in one process; the same
split between two running processes shows what two cores of the machine give on that work. Each
stage runs in this process as its command would (`tools.STAGE.main([...])`, `--force`, into a
fresh work folder), with 1 worker, with 2 (a pool per stage, as three commands), and with 2 in one
pool for the three stages (as `tools.preprocess`), `--repeats` rounds alternating; medians are
reported.

    python -m bench.preprocess [--patients 4 [16 ...]] [--slices 130] [--size 512] [--repeats 5]
"""
import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import pydicom

import bench
from lidc import synthetic

CACHE = Path("data/bench")
STAGES = ("index", "annotations", "crop")


def cohort(root, patients=4, size=512, slices=130, seed=0):
    """Writes (or reuses) the synthetic cohort under `root`; returns its DICOM slice paths."""
    synthetic.write_cohort(root, patients=patients, size=size, slices=slices, seed=seed)
    return dicom_paths(root)


def dicom_paths(root):
    """Every .dcm file under `root`, sorted."""
    return sorted(str(p) for p in Path(root).rglob("*.dcm"))


def decode_floor(paths):
    """Reads and decodes every file once (dcmread + pixel_array); returns the pixels' bytes."""
    total = 0
    for path in paths:
        total += pydicom.dcmread(path).pixel_array.nbytes
    return total


def run_stages(root, work, workers, stages=STAGES, shared=False):
    """Runs the stages in order, as their commands, into `work`; with `shared`, in one pool of
    workers as tools.preprocess does (lidc.workers.shared_pools), else each in its own.

    Returns {stage: seconds, 'STAGE pool': seconds of it spent inside the stage's worker pool
    (lidc.workers.parallel_map, its start and stop included), 'STAGE busy': seconds the workers
    spent in the units, summed over workers}; the time outside the pool is the stage's serial
    part: reading its inputs, merging the units' results, writing its outputs.
    """
    from lidc import workers as pools
    from tools import annotations, crop, index
    modules = {"index": index, "annotations": annotations, "crop": crop}
    argv = {"index": ["--root", str(root)]}
    seconds = {}
    with pools.shared_pools() if shared else contextlib.nullcontext():
        for stage in stages:
            args = [*argv.get(stage, []), "--work", str(work), "--workers", str(workers),
                    "--force"]
            pooled = [0.0, 0.0]
            started = time.perf_counter()
            # The stages' summaries and progress bars are not the benchmark's output.
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()), timing_pools(pooled):
                code = modules[stage].main(args)
            seconds[stage] = time.perf_counter() - started
            seconds[f"{stage} pool"], seconds[f"{stage} busy"] = pooled
            if code:
                raise RuntimeError(f"{stage} exited with {code}")
    return seconds


@contextlib.contextmanager
def timing_pools(spent):
    """While in the block, adds to spent[0] the seconds spent inside lidc.workers.parallel_map,
    and to spent[1] the seconds its items took where they ran (in the workers)."""
    from lidc import workers as pools
    real = pools.parallel_map

    def timed(func, *args, **kwargs):
        started = time.perf_counter()
        try:
            for result, seconds in real(_Busy(func), *args, **kwargs):
                spent[1] += seconds
                yield result
        finally:
            spent[0] += time.perf_counter() - started

    with mock.patch.object(pools, "parallel_map", timed):
        yield


class _Busy:
    """func, returning (its result, the seconds it took). Picklable, to run in workers."""

    def __init__(self, func):
        self.func = func

    def __call__(self, item):
        started = time.perf_counter()
        result = self.func(item)
        return result, time.perf_counter() - started


def floor_on_two(paths):
    """Seconds to decode every slice once split between two processes already running and warm:
    what this machine gives for the floor's work on two cores, with no serial part and no
    process start. The stages' 2-worker speed-up is measured against this."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    halves = [paths[0::2], paths[1::2]]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(decode_floor, halves))  # start both and warm them
        started = time.perf_counter()
        list(pool.map(decode_floor, halves))
        return time.perf_counter() - started


# The rows of a measurement: (name, workers, shared pools).
WAYS = (("1 worker", 1, False), ("2 workers", 2, False), ("2 workers, one pool", 2, True))


def measure(root, paths, repeats=3, folder=None):
    """Median seconds of the floor (on one process and on two) and of each stage each way
    (WAYS), alternating.

    Returns {'floor': s, 'floor on 2': s, WAY: {stage: s, 'STAGE pool': s, 'STAGE busy': s,
    'total': s, 'total pool': s, 'total busy': s}}.
    """
    import statistics
    decode_floor(paths)  # warm the page cache: every side then reads from memory
    times = {"floor": [], "floor on 2": [], **{way: {} for way, _, _ in WAYS}}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for _ in range(repeats):
            started = time.perf_counter()
            decode_floor(paths)
            times["floor"].append(time.perf_counter() - started)
            times["floor on 2"].append(floor_on_two(paths))
            for way, workers, shared in WAYS:
                work = Path(tmp) / "work"
                shutil.rmtree(work, ignore_errors=True)
                seconds = run_stages(root, work, workers, shared=shared)
                seconds["total"] = sum(seconds[s] for s in STAGES)
                for part in ("pool", "busy"):
                    seconds[f"total {part}"] = sum(seconds[f"{s} {part}"] for s in STAGES)
                for name, value in seconds.items():
                    times[way].setdefault(name, []).append(value)
    result = {"floor": statistics.median(times["floor"]),
              "floor on 2": statistics.median(times["floor on 2"])}
    for way, _, _ in WAYS:
        result[way] = {name: statistics.median(v) for name, v in times[way].items()}
    return result


def ceiling(serial, pooled, workers=2):
    """Amdahl's bound on the speed-up from 1 to `workers` workers when only the pooled part of a
    one-worker run divides, and dividing it costs nothing."""
    return (serial + pooled) / (serial + pooled / workers)


def rows(r):
    """The table: the floor, each stage and the total as three commands, the total in one
    process."""
    one, two = r["1 worker"], r["2 workers"]
    out = [["floor: dcmread + decode every slice", r["floor"], r["floor on 2"],
            r["floor"] / r["floor on 2"], "-", "-", "-", "-"]]
    for stage in (*STAGES, "total"):
        out.append(row(stage, one, two, stage))
    out.append(row("total in one process (tools.preprocess)", one, r["2 workers, one pool"],
                   "total"))
    return out


def row(name, one, two, stage):
    """name, 1 and 2 workers' seconds, speed-up, serial part, pool cost, the share of the pool
    cost that is the units' own slowdown side by side, Amdahl's ceiling."""
    serial = one[stage] - one[f"{stage} pool"]
    cost = two[f"{stage} pool"] - one[f"{stage} pool"] / 2
    slower = (two[f"{stage} busy"] - one[f"{stage} busy"]) / 2
    return [name, one[stage], two[stage], one[stage] / two[stage], serial, cost, slower,
            ceiling(serial, one[f"{stage} pool"])]


LEGEND = """\
serial: the stage's time outside its worker pool (reading inputs, merging results, writing
outputs), 1 worker; pool cost: time in the pool with 2 workers beyond half the 1-worker time;
units slower: the part of it due to the units themselves taking longer side by side than alone
(half the growth of their summed time); the rest is starting workers, handing out units, and
one worker waiting for the other's last unit; ceiling: the speed-up if only the serial part
remained (Amdahl). The floor's 2 workers: its slices split between two processes already
running and warm (no serial part, no start): what two cores of this machine give on that work"""


def size_row(patients, r):
    """One cohort size in the by-size table: series, the floor, 1 worker and its ratio to the
    floor, the speed-up as three commands and in one process, the serial share of the 1-worker
    run, the Amdahl ceiling, the floor's own speed-up on two running processes."""
    one, two, shared = (r[way] for way, _, _ in WAYS)
    serial = one["total"] - one["total pool"]
    return [patients, r["floor"], one["total"], one["total"] / r["floor"],
            one["total"] / two["total"], one["total"] / shared["total"],
            f"{100 * serial / one['total']:.0f}%", ceiling(serial, one["total pool"]),
            r["floor"] / r["floor on 2"]]


SIZE_COLUMNS = ["series", "floor", "1 worker", "/ floor", "speed-up, 3 commands",
                "speed-up, one process", "serial", "ceiling", "the machine"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, nargs="+", default=[4],
                   help="patients (one CT series each); several sizes add a by-size table")
    p.add_argument("--size", type=int, default=512, help="rows = columns of each slice")
    p.add_argument("--slices", type=int, default=130, help="slices per series")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--cache", type=Path, default=CACHE, help="where the cohort is kept")
    args = p.parse_args(argv)
    print(f"machine: {bench.machine()}")
    by_size = [size_row(n, report(n, args)) for n in args.patients]
    if len(by_size) > 1:
        print(f"\nby cohort size, seconds (median of {args.repeats}); serial: its share of the "
              f"1-worker time")
        print(bench.table(SIZE_COLUMNS, by_size))
    return 0


def report(patients, args):
    """Measures one cohort size and prints its table; returns the measurement."""
    root = args.cache / f"cohort-{patients}x{args.slices}x{args.size}"
    paths = cohort(root, patients, args.size, args.slices)
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"\ncohort: {root} ({len(paths)} DICOM slices, {megabytes:.0f} MB)")
    r = measure(root, paths, repeats=args.repeats, folder=args.cache)
    print(f"\npreprocessing, seconds (median of {args.repeats})")
    print(bench.table(["stage", "1 worker", "2 workers", "speed-up", "serial", "pool cost",
                       "units slower", "ceiling"], rows(r)))
    one, two, shared = (r[way]["total"] for way, _, _ in WAYS)
    machine = r["floor"] / r["floor on 2"]
    print(f"\nstages / floor: {one / r['floor']:.2f}x with 1 worker, {two / r['floor']:.2f}x "
          f"with 2\nspeed-up 1 -> 2 workers: {one / two:.2f}x as three commands, "
          f"{one / shared:.2f}x in one process (tools.preprocess); the machine: {machine:.2f}x "
          f"on the floor's work")
    print(LEGEND)
    return r


if __name__ == "__main__":
    raise SystemExit(main())
