"""Benchmarks: how fast the project trains, infers and preprocesses, against what a user would use
instead (tf.keras.applications, bare pydicom decoding) and against the machine's limit.

Each benchmark is a module with a `main(argv)` that prints its table, and core functions that the
tests (tests/test_bench.py) run for an iteration or two on tiny inputs:

    python -m bench.train_speed     # training images/s, ours vs Keras, batch 16 and 64
    python -m bench.roofline        # float32 matmul rate, share of it reached by each network
    python -m bench.inference       # saved model and session graph vs Keras predict, batch 256
    python -m bench.preprocess      # index + annotations + crop vs dcmread + decode, 1 vs 2 workers
    python -m bench.scale           # time and memory of preprocessing from 10 to 160 series
    python -m bench.xml_speed       # annotations --xml vs a bare lxml parse, archive-sized corpus
    python -m bench.cohort_stats    # the demo cohort's figures beside the real collection's
    python -m bench.transfer        # demo-trained runs' AUCs on the real sample series
    bench/run.sh                    # all of them

Timings are the median of several repetitions after warm-up; competing runs alternate so that a
slow spell of the machine hits both sides alike. Nothing here is part of the test suite's
pass/fail.
"""
import os
import platform
import statistics
import sys
import time


def median_time(run, repeats, number=1):
    """Median over `repeats` of the seconds one call of `run` takes (each timed over `number`
    calls)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            run()
        times.append((time.perf_counter() - started) / number)
    return statistics.median(times)


def alternate(runs, repeats, number=1):
    """Times several competitors in turn, `repeats` rounds: round r runs each of `runs` (a dict
    name -> function) `number` times. Returns name -> median seconds per call. Alternating keeps a
    slow spell of a shared machine from landing on one side only."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            for _ in range(number):
                run()
            times[name].append((time.perf_counter() - started) / number)
    return {name: statistics.median(t) for name, t in times.items()}


def machine():
    """One line describing the machine: CPU model, cores, TensorFlow and Python versions."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # TensorFlow only when the benchmark uses it: importing it starts threads, and the
    # preprocessing benchmark's worker processes should fork from a process without any.
    tf = sys.modules.get("tensorflow")
    tf_version = f", TensorFlow {tf.__version__}" if tf is not None else ""
    return f"{model}, {cores} cores{tf_version}, Python {platform.python_version()}"


def table(header, rows):
    """The rows (lists of values) as a fixed-width text table under `header`."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
