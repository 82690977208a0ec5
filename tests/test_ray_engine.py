"""The Ray engine (lidc.workers.RayEngine, --engine ray): every output byte for byte the local
engine's, resumption, the worker environment pinned to the command's, and no unit lost when a
worker is killed (Ray redoes its task; past its retries the stage stops and the rerun completes).

One local Ray of 2 CPUs serves the module (starting one takes about 10 s): the stages run in this
process with --engine ray, find it running and leave it so. One command runs as a subprocess and
starts (and stops) its own Ray, as a user's would. Skipped where Ray is not installed.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from lidc import workers
from lidc.errors import LidcError
from lidc.io import pickle_bytes
from lidc.resume import Parts
from lidc.stages import crop as crop_stage
from lidc.synthetic import write_cohort
from lidc.workers import Unit
from tools import annotations, crop, index, preprocess

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
SEED = 11
# What differs between two work folders of the same results: the lock names its holder's pid.
NOT_COMPARED = {".lock"}


def stages(root, work, *extra):
    """Runs index (--png), annotations and crop as their commands would, with `extra` options."""
    common = ["--work", str(work), "--workers", "2", *extra]
    assert index.main(["--root", str(root), "--png", *common]) == 0
    assert annotations.main(common) == 0
    assert crop.main(common) == 0


def files(work):
    """relative path -> bytes of every file under `work` (PNGs included), and of every stored
    part: the journals' names and order of records depend on which worker did what, so each
    part is its stage, key, fingerprint and result pickled again."""
    found = {p.relative_to(work).as_posix(): p.read_bytes() for p in sorted(work.rglob("*"))
             if p.is_file() and p.name not in NOT_COMPARED and p.suffix != ".journal"}
    for folder in sorted((work / ".parts").glob("*")):
        parts = Parts(work, folder.name)
        for key, fp in parts.stored():
            found[f"part {folder.name} {key} {fp}"] = pickle_bytes(parts.load(key, fp))
    return found


def assert_same_files(work, reference):
    ours, theirs = files(work), files(reference)
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name] == theirs[name], name


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The cohort and the local engine's work folder (2 workers), made before Ray starts so
    that the local pools fork from a process without Ray's threads."""
    base = tmp_path_factory.mktemp("ray")
    root = base / "LIDC-IDRI"
    write_cohort(root, patients=3, size=96, slices=12, seed=SEED)
    stages(root, base / "local")
    assert annotations.main(["--xml", str(root), "--work", str(base / "xml-local"),
                             "--workers", "2"]) == 0
    for name in ["index.csv", "slices.csv", "annotations.csv", "annotations.pkl",
                 "patches/patches.npy", "patches/patches.csv", "skipped/index.csv",
                 "skipped/annotations.csv", "skipped/crop.csv"]:
        assert (base / "local" / name).is_file(), name
    return base, root


@pytest.fixture(scope="module")
def ray_running(cohort):
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    yield
    ray.shutdown()


def test_every_output_is_the_local_engines_byte_for_byte_and_a_rerun_reuses_every_unit(
        cohort, ray_running, monkeypatch, capsys):
    base, root = cohort
    # A relative --work: the Ray workers must run where the command runs, as forked ones do.
    monkeypatch.chdir(base)
    stages(root, Path("ray"), "--engine", "ray")
    assert_same_files(base / "ray", base / "local")
    assert annotations.main(["--xml", str(root), "--work", "xml-ray", "--workers", "2",
                             "--engine", "ray"]) == 0
    assert_same_files(base / "xml-ray", base / "xml-local")
    capsys.readouterr()
    assert preprocess.main(["--root", str(root), "--work", "ray", "--engine", "ray"]) == 0
    out = capsys.readouterr().out
    assert "folders reused from an earlier run: 4" in out
    assert out.count("series reused from an earlier run: 3") == 2
    assert "read: 0" in out and "series cropped: 0" in out
    assert_same_files(base / "ray", base / "local")


def worker_environment(_):
    """What a worker computes with: its working directory, umask, thread count, import path."""
    mask = os.umask(0)
    os.umask(mask)
    return os.getcwd(), mask, os.environ.get("OMP_NUM_THREADS"), sys.path


def test_workers_run_in_the_commands_folder_with_its_umask_and_thread_count(ray_running,
                                                                            tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    previous = os.umask(0o027)
    try:
        with workers.engine("ray", workers=2):
            seen = list(workers.parallel_map(worker_environment, range(4), 2, "env"))
    finally:
        os.umask(previous)
    threads = os.environ.get("OMP_NUM_THREADS", str(workers.default_workers()))
    for cwd, mask, omp, path in seen:
        assert (cwd, mask, omp) == (str(tmp_path), 0o027, threads)
        assert str(REPO) in path
    assert ray.is_initialized()  # the engine found Ray running and left it so


class KillWorker:
    """crop_series, but the worker SIGKILLs itself (as the out-of-memory killer would) on the
    series `series_uid`: the first time only (a marker file remembers), or `always`. Picklable:
    Ray's workers import this module to run it."""

    def __init__(self, marker, series_uid, always=False):
        self.marker, self.series_uid, self.always = marker, series_uid, always

    def __call__(self, job):
        if job.origins[0].series_uid == self.series_uid and \
                (self.always or not os.path.exists(self.marker)):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return crop_stage.crop_series(job)


def series_uids(work):
    return [line.split(",")[2] for line in (work / "index.csv").read_text().splitlines()[1:]]


def test_a_worker_killed_once_is_redone_by_ray_and_nothing_is_lost(cohort, ray_running,
                                                                    tmp_path, capsys):
    base, _ = cohort
    work, marker = base / "local", tmp_path / "killed"
    killer = KillWorker(str(marker), series_uids(work)[1])
    other = tmp_path / "work"
    _copy_inputs_of_crop(work, other)
    with mock.patch.object(crop_stage, "crop_series", killer):
        assert crop.main(["--work", str(other), "--engine", "ray", "--workers", "2"]) == 0
    assert marker.exists()
    assert "series cropped: 3" in capsys.readouterr().out
    for name in ["patches/patches.npy", "patches/patches.csv", "skipped/crop.csv"]:
        assert (other / name).read_bytes() == (work / name).read_bytes(), name


def test_a_worker_killed_past_rays_retries_stops_the_stage_and_the_rerun_completes(
        cohort, ray_running, tmp_path, capsys):
    base, _ = cohort
    work, marker = base / "local", tmp_path / "killed"
    killer = KillWorker(str(marker), series_uids(work)[0], always=True)
    other = tmp_path / "work"
    _copy_inputs_of_crop(work, other)
    with mock.patch.object(crop_stage, "crop_series", killer), \
            pytest.raises(LidcError) as e:
        crop.main(["--work", str(other), "--engine", "ray", "--workers", "2"])
    assert "crop: a worker process died (WorkerCrashedError, its task tried 4 times) with 2 " \
           "of 3 items finished" in str(e.value) and "run again to resume" in str(e.value)
    assert not (other / "patches").exists()
    capsys.readouterr()
    assert crop.main(["--work", str(other), "--engine", "ray", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "series cropped: 1" in out and "series reused from an earlier run: 2" in out
    for name in ["patches/patches.npy", "patches/patches.csv", "skipped/crop.csv"]:
        assert (other / name).read_bytes() == (work / name).read_bytes(), name


def _copy_inputs_of_crop(work, other):
    other.mkdir()
    for name in ["index.csv", "slices.csv", "index.manifest.json", "annotations.pkl",
                 "annotations.csv", "annotations.manifest.json"]:
        (other / name).write_bytes((work / name).read_bytes())


class SavedElsewhere(Parts):
    """Parts whose worker saves under another folder: what a WORK that is not shared between
    the machines would do."""

    def save(self, key, fp, result):
        Parts(self.folder.parent.parent / "elsewhere", self.stage).save(key, fp, result)


def test_a_unit_saved_where_this_process_cannot_see_it_is_failed_not_silently_missing(
        ray_running, tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "SHARED_FS_SECONDS", 0.0)
    units = [Unit(f"unit {i}", "fp", i) for i in range(3)]
    with workers.engine("ray", workers=2):
        reused, done, failed = workers.run_units(SavedElsewhere(tmp_path, "t"), units, abs, 2)
    assert (reused, done) == (0, 0)
    assert [key for key, _ in failed] == ["unit 0", "unit 1", "unit 2"]
    assert all("WORK must be one folder that every machine sees" in reason
               for _, reason in failed)


def test_a_command_starts_its_own_ray_and_leaves_the_work_folder_free(cohort, tmp_path):
    # Before the module's Ray: a command run alone starts a Ray of --workers CPUs, with the work
    # folder's lock held, and each of its three stages takes the lock again.
    base, root = cohort
    run = subprocess.run([sys.executable, "-m", "tools.preprocess", "--root", str(root),
                          "--work", "work", "--workers", "2", "--engine", "ray"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ray: started here, 2 CPUs" in run.stderr
    assert "Traceback" not in run.stderr
    local = files(base / "local")
    for name, data in files(tmp_path / "work").items():
        assert data == local[name], name


def test_the_comparison_on_ray_writes_the_local_compare_csv_but_for_its_seconds(ray_running,
                                                                               tmp_path):
    # TensorFlow only here: the cohort's local pools fork from a process without its threads.
    from tensorflow.python.framework import config

    from tests.test_compare import options
    from tests.test_training_helpers import tiny_net, write_dataset
    from training.comparison import Grid, run_comparison
    from training.loop import Hooks

    tables, determinism = {}, config.is_op_determinism_enabled()
    for kind in ("local", "ray"):
        write_dataset(tmp_path / kind / "work")
        try:
            with workers.engine(kind, workers=2):
                run_comparison(options(tmp_path / kind, deterministic=True),
                               Grid(["tiny"], [12], seeds=[0, 1], builders={"tiny": tiny_net}),
                               Hooks(log=lambda *a: None))
        finally:  # --deterministic turns it on for the whole process: back as it was
            if not determinism:
                config.disable_op_determinism()
        out = tmp_path / kind / "work" / "compare"
        lines = (out / "compare.csv").read_text().splitlines()
        tables[kind] = ([line.rsplit(",", 1)[0] for line in lines],  # seconds: the last column
                        (out / "compare_summary.csv").read_text())
    assert tables["ray"] == tables["local"]
    assert tables["local"][0][0].startswith("net,size,seed,") and len(tables["local"][0]) == 3
