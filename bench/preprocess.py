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
    """Runs the stages in order, as their commands, into `work`; returns {stage: seconds}."""
    from tools import annotations, crop, index
    modules = {"index": index, "annotations": annotations, "crop": crop}
    argv = {"index": ["--root", str(root)]}
    seconds = {}
    for stage in stages:
        args = [*argv.get(stage, []), "--work", str(work), "--workers", str(workers), "--force"]
        started = time.perf_counter()
        # The stages' summaries and progress bars are not the benchmark's output.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = modules[stage].main(args)
        seconds[stage] = time.perf_counter() - started
        if code:
            raise RuntimeError(f"{stage} exited with {code}")
    return seconds


def measure(root, paths, workers=(1, 2), repeats=3, folder=None):
    """Median seconds of the floor and of each stage with each worker count, alternating.

    Returns {'floor': seconds, workers: {stage: seconds, 'total': seconds}}.
    """
    import statistics
    decode_floor(paths)  # warm the page cache: every side then reads from memory
    times = {"floor": []}
    times.update({w: {s: [] for s in (*STAGES, "total")} for w in workers})
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for _ in range(repeats):
            started = time.perf_counter()
            decode_floor(paths)
            times["floor"].append(time.perf_counter() - started)
            for w in workers:
                work = Path(tmp) / f"work{w}"
                shutil.rmtree(work, ignore_errors=True)
                seconds = run_stages(root, work, w)
                for stage, s in seconds.items():
                    times[w][stage].append(s)
                times[w]["total"].append(sum(seconds.values()))
    result = {"floor": statistics.median(times["floor"])}
    for w in workers:
        result[w] = {s: statistics.median(v) for s, v in times[w].items()}
    return result


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
    floor = r["floor"]
    rows = [["floor: dcmread + decode every slice", floor, "-", "-"]]
    for stage in (*STAGES, "total"):
        rows.append([stage, r[1][stage], r[2][stage], r[1][stage] / r[2][stage]])
    print(f"\npreprocessing, seconds (median of {args.repeats})")
    print(bench.table(["stage", "1 worker", "2 workers", "speed-up"], rows))
    print(f"\nstages / floor: {r[1]['total'] / floor:.2f}x with 1 worker, "
          f"{r[2]['total'] / floor:.2f}x with 2; speed-up 1 -> 2 workers: "
          f"{r[1]['total'] / r[2]['total']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
