"""Scale: preprocessing time and peak memory as the cohort grows (10, 40 and 160 patients).

Each size is a synthetic cohort (lidc.synthetic.write_cohort: real DICOM and LIDC XML, one CT
series a patient) of a small slice geometry, 128x128 pixels and 32 slices a series by default
where the real collection has 512x512 and 100-300: so that the three sizes run in minutes. What it
shows is how time and memory grow with the number of series, not the cost of a slice
(bench.preprocess measures that at the real geometry). The cohorts are written once and cached
under data/bench/ (ignored by git).

Each size runs index, annotations and crop as `tools.preprocess` does (one pool of workers, or
one Ray, for the three; --force into a fresh work folder) in a process of its own, so that each
peak is that size's: the main process's peak resident memory (getrusage RUSAGE_SELF ru_maxrss)
and the largest worker's (RUSAGE_CHILDREN: a pool's workers are waited for when it closes; with
--engine ray, Ray's own processes count too, and the time includes starting Ray).

    python -m bench.scale [--patients 10 40 160] [--size 128] [--slices 32] [--workers 2]
                          [--engine local|ray] [--repeats 1]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench
from lidc import synthetic

CACHE = Path("data/bench")
STAGES = ("index", "annotations", "crop")
REPO = Path(__file__).resolve().parents[1]

# Runs in a process of its own: measure_here(ROOT, WORK, WORKERS, ENGINE), printed as JSON.
CHILD = "import json, sys; from bench import scale; " \
        "print(json.dumps(scale.measure_here(sys.argv[1], sys.argv[2], int(sys.argv[3]), " \
        "sys.argv[4])))"


def cohort(root, patients, size, slices, seed=0):
    """Writes (or reuses) the synthetic cohort of `patients` under `root`; returns `root`."""
    synthetic.write_cohort(root, patients=patients, size=size, slices=slices, seed=seed)
    return root


def measure_here(root, work, workers, engine="local"):
    """Runs the three stages as tools.preprocess does, in this process (meant to be a fresh
    one: the peaks are this process's since it started).

    Returns:
      {STAGE: seconds, 'ray start': seconds (0 for the local engine), 'series', 'slices',
      'patches': counts from the outputs, 'main MB', 'worker MB': peak resident memory of this
      process and of its largest child}.
    """
    import contextlib
    import io
    import resource
    import time

    from lidc import workers as pools
    from tools import annotations, crop, index
    argv = {"index": [index, "--root", str(root)], "annotations": [annotations],
            "crop": [crop]}
    out = {"ray start": 0.0}
    with pools.shared_pools(), pools.engine(engine, workers) as running:
        if running is not None:
            started = time.perf_counter()
            running.start()
            out["ray start"] = time.perf_counter() - started
        for stage in STAGES:
            module, *args = argv[stage]
            started = time.perf_counter()
            # The stages' summaries and bars are not the benchmark's output.
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                code = module.main([*args, "--work", str(work), "--workers", str(workers),
                                    "--engine", engine, "--force"])
            out[stage] = time.perf_counter() - started
            if code:
                raise RuntimeError(f"{stage} exited with {code}")
    out.update(counts(Path(work)))
    # ru_maxrss is in kilobytes on Linux.
    out["main MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["worker MB"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def counts(work):
    """Series, slices and patches in a work folder's outputs (their CSV rows)."""
    def rows(name):
        with open(work / name) as f:
            return sum(1 for _ in f) - 1
    return {"series": rows("index.csv"), "slices": rows("slices.csv"),
            "patches": rows("patches/patches.csv")}


def measure(root, workers, engine, repeats, folder=None):
    """Median seconds of each stage and of the total, and the largest peaks, over `repeats`
    runs, each in a fresh process into a fresh work folder."""
    runs = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for k in range(repeats):
            run = subprocess.run([sys.executable, "-c", CHILD, str(root),
                                  str(Path(tmp) / f"work{k}"), str(workers), engine],
                                 cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                 capture_output=True, text=True, check=False)
            if run.returncode:
                raise RuntimeError(f"measuring {root} failed:\n{run.stderr}")
            runs.append(json.loads(run.stdout.strip().splitlines()[-1]))
    result = {name: statistics.median(r[name] for r in runs)
              for name in (*STAGES, "ray start")}
    result["total"] = statistics.median(sum(r[s] for s in STAGES) for r in runs)
    result.update({name: max(r[name] for r in runs) for name in ("main MB", "worker MB")})
    result.update({name: runs[0][name] for name in ("series", "slices", "patches")})
    return result


COLUMNS = ["patients", "series", "slices", "patches", *STAGES, "total", "ms/series",
           "vs linear", "main MB", "worker MB"]


def rows(by_size):
    """The table's rows, one per cohort size ([(patients, measurement)], smallest first): the
    stages' seconds, milliseconds per series, and the total against a linear growth from the
    smallest size (1.0: linear; above 1: growing faster than linear)."""
    _, first = by_size[0]
    per_series = first["total"] / first["series"]
    return [[patients, r["series"], r["slices"], r["patches"], *(r[s] for s in STAGES),
             r["total"], 1000 * r["total"] / r["series"],
             r["total"] / (per_series * r["series"]), round(r["main MB"]),
             round(r["worker MB"])] for patients, r in by_size]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, nargs="+", default=[10, 40, 160],
                   help="cohort sizes (one CT series a patient)")
    p.add_argument("--size", type=int, default=128, help="rows = columns of each slice")
    p.add_argument("--slices", type=int, default=32, help="slices per series")
    p.add_argument("--workers", type=int, default=2, help="worker processes (or Ray's CPUs)")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--repeats", type=int, default=1, help="runs per size (median, max peak)")
    p.add_argument("--cache", type=Path, default=CACHE, help="where the cohorts are kept")
    args = p.parse_args(argv)
    print(f"machine: {bench.machine()}")
    by_size = []
    for patients in sorted(args.patients):
        root = cohort(args.cache / f"scale-{patients}x{args.slices}x{args.size}", patients,
                      args.size, args.slices)
        by_size.append((patients, measure(root, args.workers, args.engine, args.repeats,
                                          args.cache)))
    ray_start = [r["ray start"] for _, r in by_size]
    print(f"\npreprocessing by cohort size ({args.size}x{args.size} slices, {args.slices} a "
          f"series), {args.workers} workers, engine {args.engine}; seconds, median of "
          f"{args.repeats}" + (f"; Ray started in {max(ray_start):.1f} s at most, not counted"
                               if args.engine == "ray" else ""))
    print(bench.table(COLUMNS, rows(by_size)))
    print("vs linear: the total over the smallest size's time per series times the series "
          "(1.0: linear);\nmain MB, worker MB: peak resident memory of the main process and "
          "of the largest worker")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
