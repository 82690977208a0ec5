"""Fanning a stage's work out over processes: progress bars, engines, resumable units.

A stage splits its work into units (a folder, a series), each named by a key and fingerprinted by
its inputs. `run_units` computes in worker processes the units whose stored result (lidc.resume)
is missing or stale and saves each result as soon as it is computed, so a killed run resumes;
`parallel_map` is the plain map underneath. The maps run on an engine: by default a pool of
processes on this machine (LocalEngine; inside `shared_pools()` the maps of several stages run in
one process reuse one pool of workers instead of starting and stopping their own), or, inside
`engine("ray", ...)`, Ray tasks on a local Ray or on a cluster (RayEngine). Either way a worker
saves the units' results itself, and the outputs are the same byte for byte.

    with shared_pools():
        reused, done, failed = run_units(parts, units, func, workers=2, desc="crop")
    with engine("ray", workers=2, address="head:6379"):
        reused, done, failed = run_units(parts, units, func, workers=2, desc="crop")
"""
import contextlib
import gc
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from lidc.errors import LidcError

ENGINES = ("local", "ray")


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


class WorkerLost(Exception):
    """An engine lost a worker process in the middle of an item (killed by the system, out of
    memory, or its machine gone) and could not redo the item; the text says what happened."""


def parallel_map(func, items, workers, desc, unit="series", ordered=True):
    """Yields func(item) for each item, with a progress bar.

    The items run on the engine in force (see `engine`): by default a pool of `workers`
    processes on this machine (none when workers <= 1 or there is one item: they run here), else
    Ray's tasks. Each worker holds one item's data at a time. Results come in the order of
    `items`, or as they finish when `ordered` is False. A worker that dies (killed by the system,
    e.g. out of memory) stops the map with a LidcError rather than leaving it waiting forever for
    that item; an exception that func raises reaches the caller as it was raised.
    """
    items = list(items)
    if not items:
        return
    runner = _engine or _local_engine(workers, len(items))
    if runner is not None:
        runner.start()  # Ray starts here, before the bar: seconds that are not the stage's
    bar = progress(total=len(items), desc=desc, unit=unit)
    try:
        results = (func(item) for item in items) if runner is None else \
            runner.map(func, items, ordered)
        for result in results:
            yield result
            bar.update()
    except WorkerLost as e:
        raise LidcError(None, f"{desc}: a worker process died ({e}) with {bar.n} of "
                              f"{len(items)} items finished; finished work is kept: run again "
                              f"to resume, with fewer --workers if memory is short") from None
    finally:
        bar.close()


def _local_engine(workers, count):
    """The local pool for a map of `count` items, or None to run them in this process."""
    if workers <= 1 or count <= 1:
        return None
    # A pool of its own never needs more workers than items; a shared one serves later maps.
    return LocalEngine(workers if _shared is not None else min(workers, count))


class LocalEngine:
    """Items run in a pool of `workers` processes on this machine (forked from this one where
    possible, so they start in milliseconds). Inside `shared_pools()` the pool stays up for the
    next map with as many workers; otherwise each map starts and stops its own."""
    remote = False

    def __init__(self, workers):
        self.workers = workers

    def start(self):
        """Nothing: the pool starts with the first map."""

    def map(self, func, items, ordered=True):
        """Yields func(item) for each item (in order, or as they finish); raises WorkerLost when a
        worker process dies. Leaving early stops the pool: items not started are dropped, those
        running finish (so an interrupted map keeps their work)."""
        pool = _pool(self.workers)
        finished = False
        try:
            futures = [pool.executor.submit(_Guarded(func), item) for item in items]
            for future in (futures if ordered else as_completed(futures)):
                yield future.result()
            finished = True
        except BrokenProcessPool:
            raise WorkerLost("killed by the system, out of memory?") from None
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


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off for the block: for a stage that builds a hundred
    thousand records it keeps to the end, each of the collector's full passes walks all of them
    again (a tenth of the XML reads' time), and they hold no cycles to collect. No collection is
    forced after it (one costs 16 ms even after a stage of 4 series)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _start_worker(stop):
    """Worker set-up: Ctrl-C reaches the whole process group, but only the parent acts on it
    (by setting `stop`), so that no worker dies mid-item or prints its own traceback."""
    global _stop
    _stop = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.enable()  # a worker forked inside collector_paused() collects as usual


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


# The engine the maps of this process run on, set by `engine(...)`; None: the local pools.
_engine = None


@contextlib.contextmanager
def engine(kind="local", workers=None, address=None):
    """Inside the block, the maps of this process (parallel_map, run_units) run on the engine
    `kind`: 'local', the process pools of this machine as outside any block, or 'ray', Ray tasks
    on the cluster at `address` ('HOST:PORT') when given, else on a Ray started here with
    `workers` CPUs and stopped at the block's end. Ray is imported, and started or joined, at the
    block's first map only (it takes seconds); a Ray this process had already started or joined
    is used as it is and left running.

    Yields:
      the engine (None for 'local').
    Raises:
      LidcError: an unknown kind, or an address given to the local engine.
    """
    global _engine
    if kind not in ENGINES:
        raise LidcError(None, f"unknown engine {kind!r}: one of {', '.join(ENGINES)}")
    if kind == "local":
        if address:
            raise LidcError(None, "--address joins a Ray cluster: it needs --engine ray")
        yield None
        return
    outer, _engine = _engine, RayEngine(workers or default_workers(), address)
    try:
        yield _engine
    finally:
        ray_engine, _engine = _engine, outer
        ray_engine.close()


def active_engine():
    """The engine the maps of this process run on: the RayEngine of an enclosing
    `engine("ray")` block, or None for the local pools."""
    return _engine


# Set inside whole_machines(): each Ray task then holds a machine (or a GPU) of its own.
_whole = False


@contextlib.contextmanager
def whole_machines():
    """Inside the block, each item a Ray engine runs holds a machine of its own (as many CPUs as
    the smallest machine of the cluster has) or, where the cluster has GPUs, one GPU and a worker
    process that ends with it: for items that are parallel themselves, such as training runs,
    which would slow each other down side by side (and TensorFlow keeps a GPU's memory until its
    process ends). The local engine runs items as before."""
    global _whole
    outer, _whole = _whole, True
    try:
        yield
    finally:
        _whole = outer


# Ray redoes a task whose worker process died this many times (its own default, stated here so
# that a new version of Ray cannot change what a stage survives).
RAY_RETRIES = 3
# How long a stopped map waits for its cancelled tasks to end: none may still write WORK once the
# stage has let go of the work folder's lock.
STOP_SECONDS = 30.0
# Thread counts: Ray gives its workers OMP_NUM_THREADS=1 (the CPUs a task holds) where a local
# worker inherits this process's; each Ray worker gets this process's value, or its core count.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
# Passed only when set here: which OpenBLAS kernels run (some processors need them pinned for
# correct results), str hashing (the order of sets of strings), and the settings that the
# libraries the stages and training use read from the environment (pydicom's PYDICOM_FUTURE,
# OpenCV's limits and threads, TensorFlow's). The stages themselves read none.
PASSED_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONHASHSEED")
PASSED_PREFIXES = ("PYDICOM_", "OPENCV_", "TF_")


class RayEngine:
    """Items run as Ray tasks of one CPU each, in Ray's worker processes: on the machines of the
    cluster at `address`, or on a Ray of `workers` CPUs started on this machine.

    A Ray worker is not a fork of this process, so what a forked worker would inherit is pinned
    for each task (see pinned_environment and _Pinned): the project on its import path, the
    working directory (relative paths mean the same), the umask (files get the same modes) and
    thread counts. A task whose worker dies is redone by Ray (RAY_RETRIES times); after that the
    map raises WorkerLost. Items and results travel through Ray; a unit's result does not (the
    worker saves it to WORK, which every machine must see at the same path).
    """
    remote = True

    def __init__(self, workers, address=None):
        self.workers = workers
        self.address = address
        self._ray = None
        self._task = None
        self._options = None
        self._started = False

    def start(self):
        """Imports Ray and starts or joins it, once; says so on stderr.

        Raises:
          LidcError: Ray is not installed, or cannot start or join the cluster.
        """
        if self._ray is not None:
            return
        try:
            import ray
        except ImportError:
            raise LidcError(None, "--engine ray needs Ray: pip install -r requirements.txt"
                            ) from None
        if not ray.is_initialized():
            _start_ray(ray, self.address, self.workers)
            self._started = True
            cpus = int(ray.cluster_resources().get("CPU", 0))
            where = f"joined the cluster at {self.address}" if self.address else "started here"
            print(f"ray: {where}, {cpus} CPUs", file=sys.stderr)
        # max_calls can only be set here: a second function for the tasks of whole_machines().
        self._task = {False: ray.remote(_run_pinned),
                      True: ray.remote(max_calls=1)(_run_alone)}
        self._options = {"num_cpus": 1, "max_retries": RAY_RETRIES,
                         "runtime_env": {"env_vars": pinned_environment()}}
        self._ray = ray

    def map(self, func, items, ordered=True):
        """Yields func(item) for each item (in order, or as they finish). Leaving early cancels
        the tasks not finished and waits for them to end."""
        self.start()
        ray = self._ray
        pinned, func = ray.put(_Pinned.here()), ray.put(func)
        options, alone = _machine(ray) if _whole else ({}, False)
        task = self._task[alone].options(**{**self._options, **options})
        refs = [task.remote(pinned, func, item) for item in items]
        finished = False
        try:
            for ref in (refs if ordered else _as_ready(ray, refs)):
                yield _value(ray, ref)
            finished = True
        finally:
            if not finished:
                _cancel(ray, refs)

    def close(self):
        """Stops the Ray this engine started (leaves a cluster it joined, or a Ray it found)."""
        if self._started:
            self._ray.shutdown()
        self._ray, self._started = None, False


def _start_ray(ray, address, workers):
    """Joins the cluster at `address`, or starts a Ray of `workers` CPUs on this machine (never
    one found running: 'local')."""
    import logging

    if address:
        _check_reachable(address)
    try:
        # Ray's own lines at start and worker output would fill the stage's summary; its errors
        # reach us as exceptions.
        ray.init(address=address or "local", num_cpus=None if address else workers,
                 include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"join the Ray cluster at --address {address}" if address else "start Ray"
        raise LidcError(None, f"cannot {where}: {e}") from None


def _check_reachable(address):
    """Refuses a HOST:PORT where nothing answers: Ray itself would retry for minutes, printing
    warnings, before it gives up.

    Raises:
      LidcError: nothing accepts a connection at HOST:PORT within 10 s.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # another form Ray knows ('auto', ray://...): Ray checks it
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise LidcError(None, f"cannot join the Ray cluster at --address {address}: nothing "
                              f"answers there ({e.strerror or e}); start it with `ray start "
                              f"--head` on that machine, or check the address") from None


def _machine(ray):
    """Ray options for a task that holds a whole machine or, where the cluster has GPUs, one GPU;
    and whether its worker process must end with it (TensorFlow keeps a GPU's memory until its
    process ends)."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return {"num_gpus": 1, "num_cpus": 1}, True
    cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    return {"num_cpus": int(min([c for c in cpus if c >= 1] or [1]))}, False


def pinned_environment():
    """The environment variables every Ray worker gets (runtime_env env_vars), so that it
    computes as a local worker forked from this process would: this project importable
    (PYTHONPATH: the folder holding lidc/, then this process's PYTHONPATH), the thread counts of
    THREAD_VARIABLES (this process's, else its core count), and PASSED_VARIABLES and those
    starting with PASSED_PREFIXES where set here."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                      if p and p != root]
    env = {"PYTHONPATH": os.pathsep.join(paths)}
    env.update({name: os.environ.get(name, str(default_workers())) for name in THREAD_VARIABLES})
    env.update({name: value for name, value in os.environ.items()
                if name in PASSED_VARIABLES or name.startswith(PASSED_PREFIXES)})
    return env


@dataclass(frozen=True)
class _Pinned:
    """What a Ray task takes over from this process: its working directory and umask."""
    cwd: str
    umask: int

    @classmethod
    def here(cls):
        """This process's working directory and umask."""
        mask = os.umask(0o022)
        os.umask(mask)
        return cls(os.getcwd(), mask)


def _run_pinned(pinned, func, item):
    """func(item) in a Ray worker, in the working directory and with the umask of the command
    that started the map, as in a worker forked from it."""
    try:
        os.chdir(pinned.cwd)
    except OSError:
        raise LidcError(pinned.cwd, f"this folder (where the command runs) is not on the Ray "
                                    f"node {socket.gethostname()}: run the command from a folder "
                                    f"that every machine sees at the same path") from None
    previous = os.umask(pinned.umask)
    try:
        return func(item)
    finally:
        os.umask(previous)


def _run_alone(pinned, func, item):
    """_run_pinned in a worker process that ends with the task (a GPU's, in whole_machines)."""
    return _run_pinned(pinned, func, item)


def _as_ready(ray, refs):
    """The task references in the order their tasks finish."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield from ready


def _value(ray, ref):
    """A task's result. An exception raised by the task's function is raised here as it was
    raised there; a task whose worker died past Ray's retries raises WorkerLost."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ImportError):
            raise LidcError(None, f"a Ray worker cannot import this project ({e.cause}): every "
                                  f"machine needs it at {pinned_environment()['PYTHONPATH']}, "
                                  f"with the packages of requirements.txt") from None
        raise e.cause from None
    except ray.exceptions.RuntimeEnvSetupError as e:
        raise LidcError(None, f"Ray could not set up its workers: {e}") from None
    except ray.exceptions.RayError as e:
        raise WorkerLost(f"{type(e).__name__}, its task tried {RAY_RETRIES + 1} times"
                         ) from None


def _cancel(ray, refs):
    """Cancels the tasks not finished and waits for them to end (those still running after
    STOP_SECONDS are killed): no task of a stopped map goes on writing."""
    for ref in refs:
        ray.cancel(ref)
    _, running = ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS)
    for ref in running:
        ray.cancel(ref, force=True)
    if running:
        ray.wait(running, num_returns=len(running), timeout=STOP_SECONDS)


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


# How long a unit's result may take to show here after a worker on another machine saved it: a
# shared file system (NFS) may answer from its cache of a folder's entries for up to a minute.
SHARED_FS_SECONDS = 60.0
UNSEEN = ("its worker saved its result, but not where this process looks ({folder}): WORK "
          "must be one folder that every machine sees at the same path")


def run_units(parts, units, func, workers, unit="series", cost=None):
    """Computes func(unit.item) for each Unit whose result `parts` (a lidc.resume.Parts) lacks,
    with a progress bar named after the stage counting `unit`s.

    Each result is saved to `parts` as soon as it is computed (so a killed run resumes), never
    kept in memory; read them back in the units' order with `stored_results`. With `cost`
    (item -> a number), the costliest units start first, so that workers finish together rather
    than one waiting on the other's last large unit. On a remote engine (Ray), each unit done is
    then looked for in `parts`: one saved where this process cannot see it is failed, never
    silently missing from the outputs. Stored results of inputs that no unit has any more are
    then dropped once they take more room than the current ones (Parts.compact).

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
    if getattr(_engine, "remote", False):
        failed.update(_unseen(parts, [u for u in pending if u.key not in failed]))
    parts.compact({(u.key, u.fingerprint) for u in units})
    failed = [(u.key, failed[u.key]) for u in units if u.key in failed]
    return len(units) - len(pending), len(pending) - len(failed), failed


def _unseen(parts, units):
    """{key: reason} of the units done whose result `parts` still lacks after SHARED_FS_SECONDS."""
    deadline = time.monotonic() + SHARED_FS_SECONDS
    missing = units
    while True:
        missing = [u for u in missing if parts.load(u.key, u.fingerprint) is None]
        if not missing or time.monotonic() > deadline:
            return {u.key: UNSEEN.format(folder=parts.folder) for u in missing}
        time.sleep(1.0)


def stored_results(parts, units):
    """The stored result of each unit that has one, in the units' order."""
    for unit in units:
        result = parts.load(unit.key, unit.fingerprint)
        if result is not None:
            yield result
