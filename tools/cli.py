"""What every command shares: the common options, the exit codes, progress bars, worker pools.

Exit codes (ARCHITECTURE.md): 0 the work was done (skipped inputs are reported, not fatal),
2 a usage error (argparse), 1 the command could not run at all.
"""
import argparse
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from lidc.errors import LidcError

DEFAULT_ROOT = Path("data/LIDC-IDRI")
DEFAULT_WORK = Path("data/work")
DEFAULT_RUNS = Path("runs")


def parser(description, *options):
    """An ArgumentParser with the named common options ('root', 'work', 'runs', 'workers',
    'seed', 'force'), each with the name, meaning and default of the command-line contract."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    for name in options:
        common[name]()
    return p


def default_workers():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


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


def progress(iterable=None, total=None, desc=None, unit="it"):
    """A progress bar with counts, rate and ETA on stderr."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5)


def parallel_map(func, items, workers, desc, unit="series", ordered=True):
    """Yields func(item) for each item, with a progress bar.

    With workers > 1 the items go to a pool of processes one at a time, so each worker holds one
    item's data at a time. Results come in the order of `items`, or as they finish when
    `ordered` is False. A worker that dies (killed by the system, e.g. out of memory) stops the
    map with a LidcError rather than leaving it waiting forever for that item.
    """
    items = list(items)
    if not items:
        return
    bar = progress(total=len(items), desc=desc, unit=unit)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield func(item)
                bar.update()
            return
        if _shared is None:
            workers = min(workers, len(items))
        yield from _pooled(func, items, workers, ordered, desc, bar)
    finally:
        bar.close()


def _pooled(func, items, workers, ordered, desc, bar):
    pool = _pool(workers)
    finished = False
    try:
        futures = [pool.executor.submit(_Guarded(func), item) for item in items]
        for future in (futures if ordered else as_completed(futures)):
            yield future.result()
            bar.update()
        finished = True
    except BrokenProcessPool:
        raise LidcError(None, f"{desc}: a worker process died (killed by the system, out of "
                              f"memory?) with {bar.n} of {len(items)} items finished; finished "
                              f"work is kept: run again to resume, with fewer --workers if "
                              f"memory is short") from None
    finally:
        if not (finished and _shared is not None):
            pool.close()


class _Pool:
    """A process pool and the event that tells its workers to start nothing more."""

    def __init__(self, workers):
        ctx = multiprocessing.get_context(_start_method())
        self.workers = workers
        self.stop = ctx.Event()
        self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                                            initargs=(self.stop,))

    def close(self):
        """Stops the workers. Items handed to the pool but not started are dropped and items
        running finish, so an interrupted or failed map keeps the work of its running items."""
        if _shared is not None and _shared.get(self.workers) is self:
            del _shared[self.workers]
        self.stop.set()
        self.executor.shutdown(wait=True, cancel_futures=True)


_shared = None  # workers -> _Pool, kept between maps inside shared_pools()


def _pool(workers):
    if _shared is None:
        return _Pool(workers)
    if workers not in _shared:
        _shared[workers] = _Pool(workers)
    return _shared[workers]


@contextlib.contextmanager
def shared_pools():
    """Inside the block, maps with the same number of workers reuse one pool of processes
    instead of starting and stopping their own: for several stages run in one process, whose
    workers then start once and stay warm (bench.preprocess, 32 series: the pools' cost fell
    from 121-265 to 93-153 ms)."""
    global _shared
    outer, _shared = _shared, ({} if _shared is None else _shared)
    try:
        yield
    finally:
        if outer is None:
            for pool in list(_shared.values()):
                pool.close()
            _shared = None


_stop = None


def _start_worker(stop):
    """Worker set-up: Ctrl-C reaches the whole process group, but only the parent acts on it
    (by setting `stop`), so that no worker dies mid-item or prints its own traceback."""
    global _stop
    _stop = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Stopped(Exception):
    """An item a worker received after the map was stopped, and did not start."""


class _Guarded:
    """func, run in a worker only while the map is not stopped. Picklable."""

    def __init__(self, func):
        self.func = func

    def __call__(self, item):
        if _stop.is_set():
            raise _Stopped()
        return self.func(item)


def _start_method():
    """How worker processes start: 'fork' when this process runs no other thread (a stage run as
    a command: workers then start in milliseconds with every module already imported);
    'forkserver' otherwise (e.g. TensorFlow imported in the same process: forking a process
    with running threads can deadlock the child), and 'spawn' where there is no fork. Measured
    (bench.preprocess, 4 series of 130 512x512 slices): starting 2 forkserver workers took about
    1 s per stage, more than the stage's whole work."""
    if sys.platform == "win32":
        return "spawn"
    # tqdm's monitor thread only sleeps and wakes bars up; the child does not inherit it.
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and t is not tqdm.monitor]
    if not others and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "forkserver"


def work_lock(work):
    """Holds WORK for a stage: a second stage run on the same WORK meanwhile is refused rather
    than let the two overwrite each other's parts and outputs."""
    from lidc.io import exclusive
    return exclusive(work, "wait for it to finish or choose another --work")


def write_skipped(work, stage, skipped):
    """Writes WORK/skipped/STAGE.csv (path, reason): the full list behind the summary."""
    path = Path(work) / "skipped" / f"{stage}.csv"
    from lidc.io import write_csv
    write_csv(path, [{"path": p, "reason": r} for p, r in skipped], ["path", "reason"])
    return path


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


class _Unit:
    """Runs a unit's function and saves its result to the stage's parts, in the worker: only
    (key, error) crosses back, so the parent neither receives nor writes the results. Any failure
    becomes the error (a reason), so that one bad unit never stops the run. Picklable, so it
    crosses into worker processes."""

    def __init__(self, func, parts):
        self.func = func
        self.parts = parts

    def __call__(self, job):
        key, fp, item = job
        try:
            self.parts.save(key, fp, self.func(item))
            return key, None
        except LidcError as e:
            return key, str(e)
        except Exception as e:  # a bug or an input we did not foresee: report it, go on
            return key, f"unexpected {type(e).__name__}: {e}"


def run_units(parts, units, func, workers, desc, unit="series", cost=None):
    """Computes func(item) for each (key, fingerprint, item) whose result `parts` lacks.

    Each result is saved to `parts` as soon as it is computed (so a killed run resumes), never
    kept in memory; read them back in the units' order. With `cost` (item -> a number), the
    costliest units start first, so that workers finish together rather than one waiting on the
    other's last large unit. Returns (reused, done, failed) where failed is [(key, reason)];
    failed units are not saved, so the next run tries them again.
    """
    pending = [u for u in units if parts.load(u[0], u[1]) is None]
    if cost is not None:
        pending.sort(key=lambda u: cost(u[2]), reverse=True)
    failed = {}
    for key, error in parallel_map(_Unit(func, parts), pending, workers, desc, unit,
                                   ordered=False):
        if error is not None:
            failed[key] = error
    failed = [(key, failed[key]) for key, _, _ in units if key in failed]
    return len(units) - len(pending), len(pending) - len(failed), failed
