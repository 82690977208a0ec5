"""Fanning a stage's work out over processes: progress bars, worker pools, resumable units.

A stage splits its work into units (a folder, a series), each named by a key and fingerprinted by
its inputs. `run_units` computes in worker processes the units whose stored result (lidc.resume)
is missing or stale and saves each result as soon as it is computed, so a killed run resumes;
`parallel_map` is the plain map underneath. Inside `shared_pools()` the maps of several stages
run in one process reuse one pool of workers instead of starting and stopping their own.

    with shared_pools():
        reused, done, failed = run_units(parts, units, func, workers=2, desc="crop")
"""
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from lidc.errors import LidcError


@dataclass(frozen=True)
class Unit:
    """One unit of a stage's work: its key (unique in the stage), the fingerprint of its inputs
    (a unit whose fingerprint changed is redone) and what the worker function receives."""
    key: str
    fingerprint: str
    item: Any


def default_workers():
    """The cores this process may run on (all of them unless an affinity mask says otherwise)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def progress(iterable=None, total=None, desc=None, unit="it"):
    """A progress bar with counts, rate and ETA on stderr; when stderr is not a terminal (a log
    file, CI) it redraws at most every 30 s instead of filling the log with lines."""
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5 if interactive else 30.0)


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
    instead of starting and stopping their own: several stages run in one process then start
    their workers once and keep them warm (bench/README.md measures what that saves)."""
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
    with running threads can deadlock the child), and 'spawn' where there is no fork. A
    forkserver start costs about a second per pool, more than a small stage's whole work."""
    if sys.platform == "win32":
        return "spawn"
    # tqdm's monitor thread only sleeps and wakes bars up; the child does not inherit it.
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and t is not tqdm.monitor]
    if not others and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "forkserver"


class _RunUnit:
    """Runs a unit's function and saves its result to the stage's parts, in the worker: only
    (key, error) crosses back, so the parent neither receives nor writes the results. Any failure
    becomes the error (a reason), so that one bad unit never stops the run. Picklable, so it
    crosses into worker processes."""

    def __init__(self, func, parts):
        self.func = func
        self.parts = parts

    def __call__(self, unit):
        try:
            self.parts.save(unit.key, unit.fingerprint, self.func(unit.item))
            return unit.key, None
        except LidcError as e:
            return unit.key, str(e)
        except Exception as e:  # a bug or an input we did not foresee: report it, go on
            return unit.key, f"unexpected {type(e).__name__}: {e}"


def run_units(parts, units, func, workers, unit="series", cost=None):
    """Computes func(unit.item) for each Unit whose result `parts` (a lidc.resume.Parts) lacks,
    with a progress bar named after the stage counting `unit`s.

    Each result is saved to `parts` as soon as it is computed (so a killed run resumes), never
    kept in memory; read them back in the units' order with `stored_results`. With `cost`
    (item -> a number), the costliest units start first, so that workers finish together rather
    than one waiting on the other's last large unit.

    Returns:
      (reused, done, failed) where failed is [(key, reason)]; failed units are not saved, so the
      next run tries them again.
    """
    pending = [u for u in units if parts.load(u.key, u.fingerprint) is None]
    if cost is not None:
        pending.sort(key=lambda u: cost(u.item), reverse=True)
    failed = {}
    for key, error in parallel_map(_RunUnit(func, parts), pending, workers, parts.stage,
                                   unit=unit, ordered=False):
        if error is not None:
            failed[key] = error
    failed = [(u.key, failed[u.key]) for u in units if u.key in failed]
    return len(units) - len(pending), len(pending) - len(failed), failed


def stored_results(parts, units):
    """The stored result of each unit that has one, in the units' order."""
    for unit in units:
        result = parts.load(unit.key, unit.fingerprint)
        if result is not None:
            yield result
