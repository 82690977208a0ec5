"""Interruption and resume (issue 5): SIGKILL the stages and training, run them again.

Each preprocessing stage runs in a subprocess that kills itself (SIGKILL, so no cleanup runs) at
a seeded point: just before or just after its N-th file is renamed into place, the moments a
non-atomic writer would leave half a file. At every kill point no final name may hold a file
other than the uninterrupted run's; the rerun must end with exactly its artifacts.
Training is held between checkpoints, a second run on the same folder must be refused by the
lock, then the holder is killed and `--resume` must end at the uninterrupted run's weights.
"""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lidc.resume import Parts
from lidc.synthetic import write_cohort
from tools import annotations, crop, dataset, index

REPO = Path(__file__).resolve().parents[1]
SEED = 5
STAGES = {"index": index, "annotations": annotations, "crop": crop, "dataset": dataset}

# Runs `python -m tools.STAGE ARGS` with os.replace and the appending of a record to a journal of
# parts wrapped: SIGKILL before or after the N-th of them. An audit hook watches every file opened
# for writing under WORK: one with a final (not hidden) name would be half-written at some
# instant, so it ends the run with exit code 3 at once; but for journals, which are only
# appended to, each record framed so that one half-written is never read (tests/test_resume.py).
KILL_AT_RENAME = textwrap.dedent("""
    import os, runpy, signal, sys
    module, n, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    work = os.path.realpath(os.environ["WORK"]) + os.sep
    def audit(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        mode, flags = args[1] or "", args[2] or 0
        if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR):
            path = os.path.realpath(os.fsdecode(args[0]))
            name = os.path.basename(path)
            if path.startswith(work) and not name.startswith(".") and \
                    not name.endswith(".journal"):
                os.write(2, f"written under its final name: {path}\\n".encode())
                os._exit(3)
    sys.addaudithook(audit)
    from lidc.resume import Parts
    count = [0]
    def counted(real):
        def call(*args):
            count[0] += 1
            if count[0] == n and phase == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(*args)
            if count[0] == n and phase == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return call
    os.replace, Parts._append = counted(os.replace), counted(Parts._append)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
""")


def env():
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": ""}


def stage_args(stage, root, work):
    if stage == "index":
        return ["--root", str(root), "--work", str(work), "--workers", "1"]
    if stage == "dataset":
        return ["--work", str(work)]
    return ["--work", str(work), "--workers", "1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in process: its work folder, the number of renames and records
    appended to journals each stage makes, and the final files present after each stage."""
    base = tmp_path_factory.mktemp("interrupt")
    root, work = base / "LIDC-IDRI", base / "reference"
    write_cohort(root, patients=4, size=96, slices=16, seed=SEED)
    renames, real = [0], (os.replace, Parts._append)

    def counting(func):
        def call(*args):
            renames[0] += 1
            return func(*args)
        return call

    counts, produced = {}, {}
    os.replace, Parts._append = map(counting, real)
    try:
        for stage, module in STAGES.items():
            renames[0] = 0
            assert module.main(stage_args(stage, root, work)) == 0
            counts[stage], produced[stage] = renames[0], set(artifacts(work))
    finally:
        os.replace, Parts._append = real
    return root, work, counts, produced


def artifacts(work):
    """Final files (relative path -> path): everything but hidden files and folders."""
    return {p.relative_to(work).as_posix(): p for p in work.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(work).parts)}


def assert_same(a, b, work_a, work_b):
    """Two artifacts hold the same content (an .npz's zip stamps times; JSON names its --work)."""
    if a.suffix == ".npz":
        with np.load(a) as x, np.load(b) as y:
            assert x.files == y.files
            for name in x.files:
                np.testing.assert_array_equal(x[name], y[name], err_msg=f"{a}: {name}")
    elif a.suffix == ".json":
        assert a.read_text().replace(str(work_a), "W") == b.read_text().replace(str(work_b), "W")
    else:
        assert a.read_bytes() == b.read_bytes(), a


def assert_nothing_half_written(work, ref):
    """Each final name holds the uninterrupted run's file or nothing; every stored part loads;
    every temporary is hidden."""
    reference = artifacts(ref)
    for name, path in artifacts(work).items():
        assert name in reference, f"unexpected file {name}"
        assert_same(path, reference[name], work, ref)
    for folder in (work / ".parts").glob("*"):
        parts = Parts(work, folder.name)
        for key, fp in parts.stored():
            assert parts.load(key, fp) is not None, (folder, key)
    for path in work.rglob("*.part"):
        assert path.name.startswith("."), path


def kill_points(stage, renames):
    """Two seeded kill points: (N-th rename, before or after it), the second further on."""
    rng = random.Random(f"{SEED}-{stage}")
    first = rng.randint(1, renames)
    return [(first, rng.choice(["before", "after"])),
            (rng.randint(1, renames), rng.choice(["before", "after"]))]


@pytest.mark.parametrize("upto", [pytest.param(list(STAGES)[:i + 1], id=s)
                                  for i, s in enumerate(STAGES)])
def test_a_killed_stage_leaves_no_half_file_and_its_rerun_equals_an_uninterrupted_run(
        reference, tmp_path, upto):
    root, ref, renames, produced = reference
    work = tmp_path / "work"
    *before, stage = upto
    for earlier in before:  # the stages before, uninterrupted, as a user would have run them
        assert STAGES[earlier].main(stage_args(earlier, root, work)) == 0
    for attempt, (n, phase) in enumerate(kill_points(stage, renames[stage])):
        run = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, f"tools.{stage}", str(n),
                              phase, *stage_args(stage, root, work)], cwd=REPO,
                             env={**env(), "WORK": str(work)}, capture_output=True, text=True,
                             timeout=120)
        # The first run has all of the stage's renames to make, so it is killed; a rerun has
        # fewer (finished units are reused) and may finish before its kill point.
        expected = (-signal.SIGKILL,) if attempt == 0 else (-signal.SIGKILL, 0)
        assert run.returncode in expected, run.stderr
        assert_nothing_half_written(work, ref)
    run = subprocess.run([sys.executable, "-m", f"tools.{stage}",
                          *stage_args(stage, root, work)],
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert_nothing_half_written(work, ref)
    assert set(artifacts(work)) == produced[stage]
    assert not list(work.rglob("*.part")), "temporaries of killed runs were left behind"


# Training --------------------------------------------------------------------------------------

# Runs `python -m tools.train ARGS`, holding the run (and its lock) after step N until killed.
HOLD_AT_STEP = textwrap.dedent("""
    import dataclasses, runpy, sys, time
    import training.loop as loop
    hold_at, marker = int(sys.argv[1]), sys.argv[2]
    real = loop.train
    def train(*args, **kwargs):
        hooks = kwargs["hooks"]
        def hold(step):
            if hooks.after_step is not None:
                hooks.after_step(step)
            if step == hold_at:
                open(marker, "w").close()
                time.sleep(600)
        return real(*args, **{**kwargs, "hooks": dataclasses.replace(hooks, after_step=hold)})
    loop.train = train
    sys.argv = ["tools.train", *sys.argv[3:]]
    runpy.run_module("tools.train", run_name="__main__", alter_sys=True)
""")
MAX_STEPS, EVAL_EVERY = 12, 4


def train_args(work, runs, name):
    return ["--net", "lenet5", "--name", name, "--work", str(work), "--runs", str(runs),
            "--max-steps", str(MAX_STEPS), "--eval-every", str(EVAL_EVERY), "--batch-size", "8",
            "--min-steps", "1000", "--lr", "0.001", "--seed", "0", "--deterministic"]


def wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"exited with {process.returncode} before {path}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def checkpoint_weights(run):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run / "ckpt"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_killed_training_resumes_to_the_same_weights_and_a_second_run_is_locked_out(tmp_path):
    from tests.test_training_helpers import write_dataset  # imports TensorFlow: only here

    work, runs = write_dataset(tmp_path / "work", sizes=(24, 6, 6), image=64), tmp_path / "runs"
    between = [s for s in range(EVAL_EVERY + 1, MAX_STEPS) if s % EVAL_EVERY]
    hold_at = random.Random(SEED).choice(between)
    marker = tmp_path / "holding"
    # Files, not pipes, for what the runs print: nobody reads a pipe while they train.
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("whole", "held")}
    whole = subprocess.Popen([sys.executable, "-m", "tools.train",
                              *train_args(work, runs, "whole")],
                             cwd=REPO, env=env(), stdout=logs["whole"], stderr=subprocess.STDOUT)
    held = subprocess.Popen([sys.executable, "-c", HOLD_AT_STEP, str(hold_at), str(marker),
                             *train_args(work, runs, "cut")],
                            cwd=REPO, env=env(), stdout=logs["held"], stderr=subprocess.STDOUT)
    try:
        wait_for(marker, held)
        second = subprocess.run([sys.executable, "-m", "tools.train",
                                 *train_args(work, runs, "cut"), "--resume"],
                                cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"in use by pid {held.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        held.send_signal(signal.SIGKILL)
        held.wait()
        logs["held"].close()
    cut = runs / "cut"
    saved = json.loads((cut / "metrics.json").read_text())
    assert not saved.get("finished") and saved["step"] == hold_at - hold_at % EVAL_EVERY
    resumed = subprocess.run([sys.executable, "-m", "tools.train", "--name", "cut", "--resume",
                              "--work", str(work), "--runs", str(runs)],
                             cwd=REPO, env=env(), capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert whole.wait(timeout=180) == 0, (tmp_path / "whole.log").read_text()
    logs["whole"].close()
    finals = [json.loads((runs / name / "metrics.json").read_text()) for name in ("whole", "cut")]
    assert [m["step"] for m in finals] == [MAX_STEPS, MAX_STEPS]
    assert all(m["finished"] for m in finals)
    a, b = checkpoint_weights(runs / "whole"), checkpoint_weights(cut)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# Runs six units on two workers with lidc.workers.run_units (in a pool kept for the process when
# SHARED is 1); unit KILL (if any) SIGKILLs its worker (as the kernel's out-of-memory killer
# would), every unit sleeps SLEEP seconds first.
UNITS = textwrap.dedent("""
    import contextlib, os, signal, sys, time
    from lidc.resume import Parts
    from lidc import workers
    from lidc.workers import Unit
    from tools import cli
    work, kill, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    shared = workers.shared_pools() if sys.argv[4] == "1" else contextlib.nullcontext()
    def unit(i):
        time.sleep(sleep)
        if i == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        return i * i
    def main(argv):
        units = [Unit(f"unit {i}", "fp", i) for i in range(6)]
        with shared:
            reused, done, failed = workers.run_units(Parts(work, "t"), units, unit, 2)
        print(f"reused {reused} done {done} failed {len(failed)}")
    cli.run(main)
""")


def run_units_script(work, kill=-1, sleep=0.0, shared=False, **popen):
    return subprocess.Popen([sys.executable, "-c", UNITS, str(work), str(kill), str(sleep),
                             str(int(shared))],
                            env=env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("shared", [False, True])
def test_a_worker_killed_by_the_system_ends_the_stage_with_a_message_and_the_rerun_resumes(
        tmp_path, shared):
    # The process pool we used before waited forever for the item of a dead worker.
    first = run_units_script(tmp_path, kill=3, shared=shared)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 1, err
    assert "a worker process died" in err and "run again to resume" in err
    saved = len(Parts(tmp_path, "t").stored())
    assert saved < 6
    second = run_units_script(tmp_path)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out.strip() == f"reused {saved} done {6 - saved} failed 0"


@pytest.mark.parametrize("shared", [False, True])
def test_ctrl_c_lets_running_units_finish_keeps_them_and_prints_no_worker_traceback(tmp_path,
                                                                                    shared):
    proc = run_units_script(tmp_path, sleep=0.4, shared=shared, start_new_session=True)
    deadline = time.monotonic() + 30
    while not Parts(tmp_path, "t").stored() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the whole foreground group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: finished work is kept" in err
    assert "Traceback" not in err
    saved = len(Parts(tmp_path, "t").stored())
    assert 1 <= saved < 6
    rerun = run_units_script(tmp_path)
    assert rerun.communicate(timeout=60)[0].strip() == f"reused {saved} done {6 - saved} failed 0"
