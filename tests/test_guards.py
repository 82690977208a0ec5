"""No silently wrong result, on the command line and between artifacts: every bad option, run
name, stale or half-replaced artifact, full disk and non-finite number is refused with its
cause, and what is refused leaves nothing half-done.

Each case asserts the exact outcome: the exit code (2 for a usage error, 1 for input the command
cannot use) and the words of the message that name the cause, or the right output.
"""
import errno
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from lidc import manifest
from lidc.errors import LidcError
from lidc.io import current_umask
from lidc.synthetic import write_cohort
from lidc.windows import LUNG
from tests.test_training_helpers import tiny_net, train_config, write_dataset
from tools import annotations, cli, compare, crop, dataset, evaluate, index, predict, \
    preprocess, train
from training import runner
from training.loop import Hooks
from training.rundir import RunDir, locked, run_folder

QUIET = Hooks(log=lambda *a: None)


def exit_code(main, argv, capsys):
    """(exit code, stderr) of a command run as from the shell."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, argv)
    return exit_.value.code, capsys.readouterr().err


# Numeric and other options: exit 2 with the option's name -----------------------------------

@pytest.mark.parametrize("main, argv, words", [
    (dataset.main, ["--test-share", "1.5"], "--test-share: must be over 0 and under 1, not 1.5"),
    (dataset.main, ["--test-share", "0"], "--test-share: must be over 0"),
    (dataset.main, ["--val-share", "2"], "--val-share: must be over 0 and under 1, not 2"),
    (dataset.main, ["--max-train", "0"], "--max-train: must be at least 1, not 0"),
    (dataset.main, ["--seed", "-1"], "--seed: must be at least 0, not -1"),
    (index.main, ["--workers", "0"], "--workers: must be at least 1, not 0"),
    (crop.main, ["--size", "7"], "--size: must be at least 8, not 7"),
    (crop.main, ["--size", "65"], "--size: must be even, not 65"),
    (preprocess.main, ["--size", "ten"], "--size: 'ten' is not an integer"),
    (train.main, ["--net", "lenet5", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (train.main, ["--net", "lenet5", "--lr", "nan"], "--lr: 'nan' is not a finite number"),
    (train.main, ["--net", "lenet5", "--lr", "0"], "--lr: must be over 0, not 0"),
    (train.main, ["--net", "lenet5", "--stop-accuracy", "1.2"], "--stop-threshold: must be"),
    (train.main, ["--net", "lenet5", "--eval-every", "0"], "--eval-every: must be at least 1"),
    (train.main, ["--net", "lenet5", "--resume", "--force"], "give one of them"),
    (compare.main, ["--sizes", "ten,20"], "--sizes: 'ten' is not an integer"),
    (compare.main, ["--sizes", "0,20"], "--sizes: must be at least 1, not 0"),
    (compare.main, ["--sizes", ","], "--sizes: an empty list"),
    (compare.main, ["--train-size", "10"], "unrecognized arguments: --train-size"),
    (train.main, ["--net", "lenet5", "--max", "10"], "unrecognized arguments: --max"),
    (evaluate.main, ["--name", "x", "--batch-size", "-3"], "--batch-size: must be at least 1"),
])
def test_a_bad_option_exits_2_naming_it(tmp_path, capsys, main, argv, words):
    code, err = exit_code(main, [*argv, "--work", str(tmp_path)], capsys)
    assert code == 2
    assert words in err


# Run names: one plain path component; --force removes only what the run wrote ----------------

@pytest.mark.parametrize("name", [".", "..", "../x", "a/b", ".hidden", "", " x", "a\nb"])
def test_a_run_name_that_is_not_one_plain_folder_name_is_refused(tmp_path, capsys, name):
    code, err = exit_code(train.main, ["--net", "lenet5", "--name", name,
                                       "--runs", str(tmp_path)], capsys)
    assert code == 2 and "--name: a run name" in err
    with pytest.raises(LidcError, match="a run name"):
        run_folder(tmp_path, name)


def test_force_removes_only_what_the_run_wrote(tmp_path):
    write_dataset(tmp_path / "work")
    config = train_config(tmp_path, max_steps=10)
    runner.run_training(config, builder=tiny_net, hooks=QUIET)
    run_dir = tmp_path / "runs" / "tiny"
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "mine").mkdir()
    other = tmp_path / "runs" / "other"
    other.mkdir()
    logged = []
    runner.run_training(config, force=True, builder=tiny_net, hooks=Hooks(log=logged.append))
    assert (run_dir / "notes.txt").read_text() == "mine" and (run_dir / "mine").is_dir()
    assert other.is_dir()
    assert any("kept what the run did not write: mine, notes.txt" in line for line in logged)


def test_a_folder_holding_only_other_files_is_not_taken_for_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "readme.txt").write_text("hello")
    assert not RunDir(tmp_path / "x").started()


# Sets of artifacts that belong together ------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A small cohort through the four stages; returns (root, work)."""
    root = tmp_path_factory.mktemp("guards") / "LIDC-IDRI"
    write_cohort(root, patients=4, size=96, slices=12, seed=3)
    work = root.parent / "work"
    common = ["--work", str(work), "--workers", "1"]
    assert index.main(["--root", str(root), *common]) == 0
    assert annotations.main(common) == 0
    assert crop.main(common) == 0
    assert dataset.main(["--work", str(work)]) == 0
    return root, work


def fresh(cohort, tmp_path):
    """A copy of the cohort's work folder to spoil."""
    work = tmp_path / "work"
    shutil.copytree(cohort[1], work)
    return work


def test_patches_from_two_crops_are_refused_by_the_dataset_stage(cohort, tmp_path, capsys):
    work = fresh(cohort, tmp_path)
    # What a kill between the two renames of a crop would leave: a new patches.csv beside the
    # old patches.npy (here: the rows of another crop, one patch fewer).
    rows = (work / "patches" / "patches.csv").read_text().splitlines()
    (work / "patches" / "patches.csv").write_text("\n".join(rows[:-1]) + "\n")
    code, err = exit_code(dataset.main, ["--work", str(work)], capsys)
    assert code == 1
    assert "patches.csv: changed since the crop stage wrote it" in err


def test_a_crop_interrupted_between_its_writes_leaves_no_set_and_is_refused(cohort, tmp_path,
                                                                            capsys):
    work = fresh(cohort, tmp_path)
    (work / "patches" / "manifest.json").unlink()  # removed first, written last: never written
    code, err = exit_code(dataset.main, ["--work", str(work)], capsys)
    assert code == 1 and "manifest.json: missing: the crop stage was interrupted" in err


def test_annotations_placed_on_an_older_index_are_refused_by_crop(cohort, tmp_path, capsys):
    root, _ = cohort
    work = fresh(cohort, tmp_path)
    moved = tmp_path / "moved"
    series = sorted(p.parent for p in root.rglob("*.dcm"))[0]
    shutil.copytree(root, tmp_path / "root")
    victim = sorted((tmp_path / "root").rglob("*.dcm"))[0]
    victim.rename(moved)  # one slice fewer: every later slice index of that series moves
    assert index.main(["--root", str(tmp_path / "root"), "--work", str(work),
                       "--workers", "1"]) == 0
    code, err = exit_code(crop.main, ["--work", str(work), "--workers", "1"], capsys)
    assert code == 1 and series
    assert "annotations.pkl: was made from another index than the current one" in err
    assert "run the annotations stage again" in err


def test_patches_cut_before_the_annotations_ran_again_are_refused_by_dataset(cohort, tmp_path,
                                                                            capsys):
    root, _ = cohort
    work = fresh(cohort, tmp_path)
    shutil.copytree(root, tmp_path / "root")
    sorted((tmp_path / "root").rglob("*.xml"))[0].unlink()  # one read fewer
    assert index.main(["--root", str(tmp_path / "root"), "--work", str(work),
                       "--workers", "1"]) == 0
    assert annotations.main(["--work", str(work), "--workers", "1"]) == 0
    code, err = exit_code(dataset.main, ["--work", str(work)], capsys)
    assert code == 1
    assert "patches.csv: was made from another annotations than the current one" in err
    assert "run the crop stage again" in err


def test_resuming_a_run_on_a_rebuilt_dataset_is_refused(tmp_path):
    write_dataset(tmp_path / "work")
    config = train_config(tmp_path, max_steps=10)
    runner.run_training(config, builder=tiny_net, hooks=QUIET)
    write_dataset(tmp_path / "work", seed=7)  # the dataset stage run again, differently
    with pytest.raises(LidcError, match="cannot resume with other options.*the dataset"):
        runner.run_training({**config, "max_steps": 20}, resume=True, builder=tiny_net,
                            hooks=QUIET)


def test_a_dataset_file_replaced_by_hand_is_refused_when_training(tmp_path):
    write_dataset(tmp_path / "work")
    other = tmp_path / "other"
    write_dataset(other, seed=9)
    shutil.copy(other / "dataset" / "val.npz", tmp_path / "work" / "dataset" / "val.npz")
    with pytest.raises(LidcError, match="val.npz: changed since the dataset stage wrote it"):
        runner.run_training(train_config(tmp_path, max_steps=10), builder=tiny_net,
                            hooks=QUIET)


def test_png_exports_are_rebuilt_when_the_patches_change(cohort, tmp_path):
    work = fresh(cohort, tmp_path)
    common = ["--work", str(work), "--workers", "1"]
    assert crop.main([*common, "--png"]) == 0
    pngs = work / "patches" / "png"
    count = len(list(pngs.glob("*.png")))
    (pngs / "999999.png").write_bytes(b"stale")
    assert crop.main([*common, "--png"]) == 0  # nothing changed: the folder is kept
    assert (pngs / "999999.png").exists()
    assert crop.main([*common, "--png", "--size", "32"]) == 0  # new patches: a new folder
    assert not (pngs / "999999.png").exists()
    assert len(list(pngs.glob("*.png"))) == count
    assert cv2.imread(str(pngs / "000000.png"), cv2.IMREAD_UNCHANGED).shape == (32, 32)


def test_slice_pngs_of_a_series_no_longer_indexed_are_removed(cohort, tmp_path):
    root, _ = cohort
    work = tmp_path / "work"
    shutil.copytree(root, tmp_path / "root")
    common = ["--work", str(work), "--workers", "1", "--png"]
    assert index.main(["--root", str(tmp_path / "root"), *common]) == 0
    patients = sorted(p.name for p in (work / "png").iterdir())
    shutil.rmtree(tmp_path / "root" / patients[0])
    assert index.main(["--root", str(tmp_path / "root"), *common]) == 0
    assert not list((work / "png" / patients[0]).glob("*/*.png"))
    assert list((work / "png" / patients[1]).glob("*/*.png"))


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_artifacts_honour_the_umask(cohort, tmp_path, mask):
    work = tmp_path / "work"
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        assert index.main(["--root", str(cohort[0]), "--work", str(work), "--workers", "1"]) == 0
    finally:
        os.umask(old)
    for name in ("index.csv", "slices.csv", "index.manifest.json"):
        assert (work / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_full_disk_stops_crop_with_a_message_and_leaves_nothing(cohort, tmp_path, capsys,
                                                                   monkeypatch):
    work = fresh(cohort, tmp_path)
    before = (work / "patches" / "patches.npy").read_bytes()

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    code, err = exit_code(crop.main, ["--work", str(work), "--workers", "1", "--force"], capsys)
    assert code == 1
    assert "cannot allocate" in err and "No space left on device" in err
    assert "free space and run crop again" in err
    assert not list(work.rglob("*.part")), "a temporary was left behind"
    assert (work / "patches" / "patches.npy").read_bytes() == before


def test_an_os_error_is_a_message_not_a_traceback(tmp_path, capsys):
    def main(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))

    code, err = exit_code(main, [], capsys)
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'x'}: No space left on device; free space")


# Numbers nobody checked ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run on 64x64 blobs (the size PNG patches come in)."""
    root = tmp_path_factory.mktemp("trained")
    write_dataset(root / "work", image=64)
    runner.run_training(train_config(root, max_steps=40, eval_every=20), builder=tiny_net,
                        hooks=QUIET)
    return root


@pytest.mark.parametrize("values, words", [
    (np.full((2, 64, 64), np.nan, np.float32), "not finite numbers"),
    (np.full((1, 64, 64), np.inf, np.float64), "not finite numbers"),
    (np.full((1, 64, 64), True), "holds bool values, not HU numbers"),
])
def test_predict_refuses_patches_that_are_not_finite_numbers(trained, tmp_path, capsys, values,
                                                              words):
    np.save(tmp_path / "p.npy", values)
    code, err = exit_code(predict.main, ["--runs", str(trained / "runs"), "--name", "tiny",
                                         str(tmp_path / "p.npy")], capsys)
    assert code == 1 and "p.npy" in err and words in err


def test_predict_refuses_a_colour_png(trained, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((64, 64, 3), np.uint8))
    code, err = exit_code(predict.main, ["--runs", str(trained / "runs"), "--name", "tiny",
                                         str(tmp_path / "c.png")], capsys)
    assert code == 1 and "is not an 8-bit grayscale image" in err


def test_a_patch_and_its_png_get_the_same_answer(trained, tmp_path):
    from training.prediction import predict_files

    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 300, size=(6, 64, 64)).astype(np.int16)
    hu[:, 20:44, 20:44] = rng.integers(-100, 100, size=(6, 24, 24))
    np.save(tmp_path / "hu.npy", hu)
    paths = []
    for i, patch in enumerate(hu):  # as crop --png writes them
        cv2.imwrite(str(tmp_path / f"{i}.png"), LUNG.to_u8(patch))
        paths.append(tmp_path / f"{i}.png")
    (from_npy,) = predict_files(trained / "runs", "tiny", [tmp_path / "hu.npy"],
                                log=lambda *a: None)
    from_png = np.concatenate(predict_files(trained / "runs", "tiny", paths,
                                            log=lambda *a: None))
    np.testing.assert_array_equal(from_npy.argmax(1), from_png.argmax(1))
    np.testing.assert_allclose(from_npy, from_png, atol=0.02)


def test_a_diverging_run_stops_with_exit_1_naming_the_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "resolve_net", lambda name: tiny_net)
    from tensorflow.compat import v1
    monkeypatch.setattr(v1, "disable_eager_execution", lambda: None)
    write_dataset(tmp_path / "work")
    code, err = exit_code(train.main, ["--net", "tiny", "--lr", "1e38", "--work",
                                       str(tmp_path / "work"), "--runs", str(tmp_path / "runs"),
                                       "--max-steps", "40", "--eval-every", "10"], capsys)
    assert code == 1
    assert "the training loss became nan at step" in err and "Lower --lr" in err
    metrics = json.loads((tmp_path / "runs" / "tiny" / "metrics.json").read_text())
    assert metrics["status"].startswith("failed: the training loss became nan")
    assert not metrics["finished"]


def test_a_finished_run_resumed_says_so_and_writes_no_new_events(tmp_path):
    write_dataset(tmp_path / "work")
    config = train_config(tmp_path, max_steps=10)
    runner.run_training(config, builder=tiny_net, hooks=QUIET)
    events = sorted((tmp_path / "runs" / "tiny").rglob("events.*"))
    logged = []
    metrics = runner.run_training(config, resume=True, builder=tiny_net,
                                  hooks=Hooks(log=logged.append))
    assert metrics["finished"] and "finished earlier" in logged[-1]
    assert sorted((tmp_path / "runs" / "tiny").rglob("events.*")) == events


def test_manifest_check_names_a_file_missing_from_the_set(tmp_path):
    with manifest.file_set(tmp_path, "m.json", "crop") as files:
        (tmp_path / "a").write_text("a")
        files.append("a")
    (tmp_path / "b").write_text("b")
    assert manifest.check(tmp_path, "m.json", ["a"], "crop")["stage"] == "crop"
    with pytest.raises(LidcError, match="b: is not part of the set its manifest lists"):
        manifest.check(tmp_path, "m.json", ["a", "b"], "crop")


def test_locked_run_is_refused_for_a_name_with_a_slash(tmp_path):
    with pytest.raises(LidcError, match="a run name"):
        with locked(tmp_path / "a\\b"):
            pass
