"""Preprocessing: index, annotations and crop on a cohort of realistic geometry, against the floor.

The cohort is synthetic (lidc.synthetic.write_cohort: real DICOM files and LIDC XML reads) with
the geometry of the real collection: 512x512 slices, about 130 slices per series. It is written
once and cached under data/bench/ (ignored by git). The floor is the least any preprocessing
must do: `pydicom.dcmread` every slice once and decode its pixels, in one process. Each stage
runs in this process as its command would (`tools.STAGE.main([...])`, `--force`, into a fresh
work folder), with 1 and then 2 workers, `--repeats` rounds alternating; medians are reported.

    python -m bench.preprocess [--patients 4] [--slices 130] [--size 512] [--repeats 3]
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


def run_stages(root, work, workers, stages=STAGES):
    """Runs the stages in order, as their commands, into `work`.

    Returns {stage: seconds, 'STAGE pool': seconds of it spent inside the stage's worker pool
    (tools.cli.parallel_map, its start and stop included)}; the rest is the stage's serial part:
    reading its inputs, merging the units' results, writing its outputs.
    """
    from tools import annotations, crop, index
    modules = {"index": index, "annotations": annotations, "crop": crop}
    argv = {"index": ["--root", str(root)]}
    seconds = {}
    for stage in stages:
        args = [*argv.get(stage, []), "--work", str(work), "--workers", str(workers), "--force"]
        pooled = [0.0]
        started = time.perf_counter()
        # The stages' summaries and progress bars are not the benchmark's output.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                timing_pools(pooled):
            code = modules[stage].main(args)
        seconds[stage] = time.perf_counter() - started
        seconds[f"{stage} pool"] = pooled[0]
        if code:
            raise RuntimeError(f"{stage} exited with {code}")
    return seconds


@contextlib.contextmanager
def timing_pools(spent):
    """Adds to spent[0] the seconds spent inside tools.cli.parallel_map while in the block."""
    from tools import cli
    real = cli.parallel_map

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            yield from real(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    with mock.patch.object(cli, "parallel_map", timed):
        yield


def measure(root, paths, workers=(1, 2), repeats=3, folder=None):
    """Median seconds of the floor and of each stage with each worker count, alternating.

    Returns {'floor': seconds, workers: {stage: seconds, 'STAGE pool': seconds, 'total': ...,
    'total pool': ...}}.
    """
    import statistics
    decode_floor(paths)  # warm the page cache: every side then reads from memory
    times = {"floor": []}
    for w in workers:
        times[w] = {}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for _ in range(repeats):
            started = time.perf_counter()
            decode_floor(paths)
            times["floor"].append(time.perf_counter() - started)
            for w in workers:
                work = Path(tmp) / f"work{w}"
                shutil.rmtree(work, ignore_errors=True)
                seconds = run_stages(root, work, w)
                seconds["total"] = sum(seconds[s] for s in STAGES)
                seconds["total pool"] = sum(seconds[f"{s} pool"] for s in STAGES)
                for name, value in seconds.items():
                    times[w].setdefault(name, []).append(value)
    result = {"floor": statistics.median(times["floor"])}
    for w in workers:
        result[w] = {name: statistics.median(v) for name, v in times[w].items()}
    return result


def ceiling(serial, pooled, workers=2):
    """Amdahl's bound on the speed-up from 1 to `workers` workers when only the pooled part of a
    one-worker run divides, and dividing it costs nothing."""
    return (serial + pooled) / (serial + pooled / workers)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=4, help="patients (one CT series each)")
    p.add_argument("--size", type=int, default=512, help="rows = columns of each slice")
    p.add_argument("--slices", type=int, default=130, help="slices per series")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--cache", type=Path, default=CACHE, help="where the cohort is kept")
    args = p.parse_args(argv)
    print(f"machine: {bench.machine()}")
    root = args.cache / f"cohort-{args.patients}x{args.slices}x{args.size}"
    paths = cohort(root, args.patients, args.size, args.slices)
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"cohort: {root} ({len(paths)} DICOM slices, {megabytes:.0f} MB)")
    r = measure(root, paths, repeats=args.repeats, folder=args.cache)
    floor, one, two = r["floor"], r[1], r[2]
    rows = [["floor: dcmread + decode every slice", floor, "-", "-", "-", "-", "-"]]
    for stage in (*STAGES, "total"):
        serial = one[stage] - one[f"{stage} pool"]
        rows.append([stage, one[stage], two[stage], one[stage] / two[stage], serial,
                     two[f"{stage} pool"] - one[f"{stage} pool"] / 2,
                     ceiling(serial, one[f"{stage} pool"])])
    print(f"\npreprocessing, seconds (median of {args.repeats})")
    print(bench.table(["stage", "1 worker", "2 workers", "speed-up", "serial",
                       "pool cost", "ceiling"], rows))
    print(f"\nstages / floor: {one['total'] / floor:.2f}x with 1 worker, "
          f"{two['total'] / floor:.2f}x with 2; speed-up 1 -> 2 workers: "
          f"{one['total'] / two['total']:.2f}x")
    print("serial: the stage's time outside its worker pool (reading inputs, merging results, "
          "writing outputs), 1 worker;\npool cost: time in the pool with 2 workers beyond half "
          "the 1-worker time (starting and stopping\nprocesses, uneven shares of the units); "
          "ceiling: the speed-up if only the serial part remained\n(Amdahl), before pool cost")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
