"""Worker pools shared by the stages of one process (lidc.workers.shared_pools), and the choice of
engine (lidc.workers.engine; the Ray engine itself is tested in test_ray_engine.py)."""
import gc
import multiprocessing
import os
import subprocess
import sys

import pytest

from lidc.errors import LidcError
from lidc.io import exclusive
from lidc import workers as cli


def pid_of(_):
    return os.getpid()


def worker_pids(n=6):
    """The processes that ran a 2-worker map's items (one worker may have run them all)."""
    return set(cli.parallel_map(pid_of, range(n), 2, "pids"))


def children():
    return {p.pid for p in multiprocessing.active_children()}


def test_maps_inside_shared_pools_reuse_one_pool_and_maps_outside_start_their_own():
    before = children()
    with cli.shared_pools():
        first = worker_pids()
        pool = children() - before
        second = worker_pids()
        assert len(pool) == 2 and children() - before == pool
    assert os.getpid() not in first
    assert first | second <= pool
    assert not children() & pool  # the block's end stopped them
    assert worker_pids().isdisjoint(pool)
    assert cli._shared is None


def test_a_map_left_early_closes_the_shared_pool_and_the_next_map_starts_a_new_one():
    before = children()
    with cli.shared_pools():
        worker_pids()
        pool = children() - before
        results = cli.parallel_map(pid_of, range(6), 2, "pids")
        next(results)
        results.close()  # what an exception in the consumer or Ctrl-C does
        assert not children() & pool
        assert worker_pids().isdisjoint(pool)


def test_workers_of_a_shared_pool_do_not_keep_the_work_lock_of_the_stage_that_started_them(
        tmp_path):
    # Workers are forked while the stage holds WORK/.lock; if they kept their copy of the lock
    # file, the next stage (or any other process) would be refused for as long as they live.
    with cli.shared_pools():
        before = children()
        with exclusive(tmp_path, "wait"):
            worker_pids()
            assert len(children() - before) == 2  # forked while the lock was held
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from lidc.io import exclusive\n"
             f"with exclusive({str(tmp_path)!r}, 'wait'): print('locked')"],
            capture_output=True, text=True, timeout=60,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == "locked"
        with exclusive(tmp_path, "wait"):
            pass


@pytest.mark.parametrize("workers", [1, 2])
def test_a_map_gives_each_item_its_result_in_order(workers):
    with cli.shared_pools():
        assert list(cli.parallel_map(abs, [-3, 1, -2, 5], workers, "abs")) == [3, 1, 2, 5]


# Engines (lidc.workers.engine): what needs no Ray running -----------------------------------

def collecting(_):
    return gc.isenabled()


def test_the_collector_is_paused_for_the_block_only_and_never_in_the_workers():
    with cli.collector_paused():
        assert not gc.isenabled()
        assert all(cli.parallel_map(collecting, range(4), 2, "gc"))  # forked while paused
    assert gc.isenabled()
    with pytest.raises(KeyError), cli.collector_paused():
        raise KeyError("a stage that fails")
    assert gc.isenabled()


def test_the_local_engine_is_the_default_and_runs_maps_in_local_pools():
    with cli.engine("local") as engine:
        assert engine is None
        assert list(cli.parallel_map(abs, [-3, 1, -2, 5], 2, "abs")) == [3, 1, 2, 5]


def test_an_unknown_engine_or_an_address_without_ray_is_refused():
    with pytest.raises(LidcError, match="unknown engine 'spark'"):
        with cli.engine("spark"):
            pass
    with pytest.raises(LidcError, match="--address joins a Ray cluster: it needs --engine ray"):
        with cli.engine("local", address="head:6379"):
            pass


def test_the_ray_engine_without_ray_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` finds when it is missing
    with cli.engine("ray", workers=2):
        with pytest.raises(LidcError, match="--engine ray needs Ray: pip install -r "
                                            "requirements.txt"):
            list(cli.parallel_map(abs, [1, 2], 2, "abs"))


@pytest.mark.parametrize("argv, message", [
    (["--address", "head:6379"], "--address: joins a Ray cluster, so it needs --engine ray"),
    (["--engine", "spark"], "argument --engine: invalid choice: 'spark'"),
])
def test_the_stage_commands_refuse_engine_options_that_do_not_fit_with_exit_code_2(
        argv, message, tmp_path, capsys):
    from tools import crop

    with pytest.raises(SystemExit) as e:
        crop.main(["--work", str(tmp_path), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_an_address_where_no_ray_answers_is_refused_at_once_not_retried_for_minutes():
    import socket

    with socket.socket() as s:  # a port of this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LidcError, match=f"cannot join the Ray cluster at --address "
                                        f"127.0.0.1:{port}: nothing answers there"):
        cli._check_reachable(f"127.0.0.1:{port}")
    cli._check_reachable("auto")  # forms Ray resolves itself are left to it


def test_ray_workers_get_this_projects_path_the_thread_counts_and_the_libraries_settings(
        monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.setenv("PYDICOM_FUTURE", "1")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = cli.pinned_environment()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert env["PYTHONPATH"] == os.pathsep.join([root, "/elsewhere"])
    # Ray would give OMP_NUM_THREADS=1; a forked worker's libraries use every core.
    assert env["OMP_NUM_THREADS"] == str(cli.default_workers())
    assert env["OPENBLAS_NUM_THREADS"] == "3" and env["PYDICOM_FUTURE"] == "1"
    assert "HOME" not in env
