"""End to end: a tiny synthetic cohort through index, annotations, crop and dataset."""
import csv
import filecmp
import json
import shutil

import numpy as np
import pytest

from lidc.stages.index import read_index
from lidc.synthetic import write_cohort
from tests.helpers import lock_held_elsewhere
from tools import annotations, cli, crop, dataset, index, preprocess


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_stages(root, work, workers=1, extra=()):
    common = ["--work", str(work), "--workers", str(workers), *extra]
    assert index.main(["--root", str(root), *common]) == 0
    assert annotations.main(common) == 0
    assert crop.main(common) == 0
    assert dataset.main(["--work", str(work)]) == 0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "LIDC-IDRI"
    write_cohort(root, patients=5, size=128, slices=20, seed=1)
    work = root.parent / "work"
    run_stages(root, work)
    return root, work


def expected_patches(root):
    truth = json.loads((root / "cohort.json").read_text())["patients"]
    out = np.zeros(3, int)
    for entry in truth.values():
        for kind, n in entry["patches_expected"].items():
            out[int(kind)] += n
    return out


def test_counts_agree_from_stage_to_stage(cohort):
    root, work = cohort
    series = read_index(work)
    assert len(series) == 5 and all(r.xml for r in series)
    marks = rows(work / "annotations.csv")
    placed = [r for r in marks if not r["status"]]
    patches = rows(work / "patches" / "patches.csv")
    assert len(placed) == len(marks) == len(patches) > 0
    assert np.load(work / "patches" / "patches.npy", mmap_mode="r").shape == (len(patches), 64, 64)
    labels = np.bincount([int(r["label"]) for r in patches], minlength=3)
    np.testing.assert_array_equal(labels, expected_patches(root))
    sides = [np.load(work / "dataset" / f"{s}.npz") for s in ("train", "val", "test")]
    # One unit per lesion per slice (the default --unit slice), shown by one of its patches.
    units = {(p["lesion_id"], p["slice_index"]) for p in patches}
    assert sum(len(s["x"]) for s in sides) == len(units)
    shown = np.concatenate([s["patch_index"] for s in sides])
    assert {(patches[i]["lesion_id"], patches[i]["slice_index"]) for i in shown} == units
    patients = [set(s["patient_id"]) for s in sides]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_patch_rows_match_their_marks(cohort):
    _, work = cohort
    marks = {(r["mark_id"], r["slice_index"]): r for r in rows(work / "annotations.csv")}
    for p in rows(work / "patches" / "patches.csv"):
        m = marks[(p["mark_id"], p["slice_index"])]
        assert (p["label"], p["lesion_id"], p["reader"]) == (m["label"], m["lesion_id"],
                                                             m["reader"])
        assert float(p["row"]) == pytest.approx(float(m["row"]), abs=0.01)


def test_non_ct_series_and_cxr_reads_are_skipped_and_reported(cohort):
    root, work = cohort
    truth = json.loads((root / "cohort.json").read_text())["patients"]
    cxr = [e["cxr"] for e in truth.values() if e["cxr"]]
    assert cxr, "the tiny cohort should include a chest X-ray study"
    reasons = " ".join(r["reason"] for r in rows(work / "skipped" / "index.csv"))
    assert "IdriReadMessage" in reasons and "not CT" in reasons
    assert {r["series_uid"] for r in rows(work / "index.csv")}.isdisjoint(
        {c["series_uid"] for c in cxr})


def test_two_workers_give_the_same_outputs_and_reruns_resume(cohort, tmp_path, capsys):
    root, work = cohort
    other = tmp_path / "work2"
    run_stages(root, other, workers=2)
    for name in ["index.csv", "annotations.csv", "patches/patches.csv", "patches/patches.npy"]:
        a, b = (w / name for w in (work, other))
        assert filecmp.cmp(a, b, shallow=False), name
    capsys.readouterr()
    assert crop.main(["--work", str(other), "--workers", "2"]) == 0
    assert "series reused from an earlier run: 5" in capsys.readouterr().out
    assert filecmp.cmp(work / "patches/patches.npy", other / "patches/patches.npy",
                       shallow=False)


def test_preprocess_runs_the_three_stages_in_one_process_with_the_same_outputs(cohort, tmp_path,
                                                                               capsys):
    root, work = cohort
    other = tmp_path / "work"
    assert preprocess.main(["--root", str(root), "--work", str(other), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "index: " in out and "annotations: " in out and "crop: " in out
    for name in ["index.csv", "slices.csv", "annotations.csv", "patches/patches.csv",
                 "patches/patches.npy"]:
        assert filecmp.cmp(work / name, other / name, shallow=False), name
    assert preprocess.main(["--root", str(root), "--work", str(other), "--workers", "2"]) == 0
    assert "series reused from an earlier run: 5" in capsys.readouterr().out


def test_preprocess_stops_at_the_first_stage_that_cannot_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(preprocess.main, ["--root", str(tmp_path / "none"), "--work", str(tmp_path)])
    assert e.value.code == 1
    assert "the LIDC root does not exist" in capsys.readouterr().err
    assert not (tmp_path / "annotations.pkl").exists()


def test_stage_without_its_input_exits_1_naming_the_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(crop.main, ["--work", str(tmp_path)])
    assert e.value.code == 1
    assert f"{tmp_path / 'slices.csv'}: missing: run the index stage first" in \
        capsys.readouterr().err
    (tmp_path / "slices.csv").write_text("series_uid\n")
    with pytest.raises(SystemExit) as e:
        cli.run(crop.main, ["--work", str(tmp_path)])
    assert f"{tmp_path / 'annotations.pkl'}: missing: run the annotations stage first" in \
        capsys.readouterr().err


def test_a_stage_is_refused_while_another_run_holds_its_work_folder(cohort, tmp_path, capsys):
    root, work = cohort
    other = tmp_path / "work"
    shutil.copytree(work, other)
    before = (other / "patches" / "patches.npy").stat().st_mtime_ns
    with lock_held_elsewhere("from lidc.stages import work_lock",
                             f"work_lock({str(other)!r})") as pid:
        with pytest.raises(SystemExit) as e:
            cli.run(crop.main, ["--work", str(other), "--force"])
        assert e.value.code == 1
        assert f"{other}: in use by pid {pid}; wait for it to finish or choose another " \
               "--work" in capsys.readouterr().err
        assert (other / "patches" / "patches.npy").stat().st_mtime_ns == before
    assert crop.main(["--work", str(other), "--force"]) == 0  # the holder's exit freed WORK
    assert (other / "patches" / "patches.npy").stat().st_mtime_ns != before


def test_units_and_consensus_of_the_dataset_stage(cohort, tmp_path):
    _, work = cohort
    other = tmp_path / "work"
    shutil.copytree(work, other)
    patches = rows(other / "patches" / "patches.csv")

    def sides():
        return [np.load(other / "dataset" / f"{s}.npz") for s in ("train", "val", "test")]

    assert dataset.main(["--work", str(other), "--unit", "mark"]) == 0
    assert sum(len(s["x"]) for s in sides()) == len(patches)
    assert all((s["readers"] == 1).all() for s in sides())
    assert dataset.main(["--work", str(other), "--min-readers", "2"]) == 0
    readers = {}
    for p in patches:
        readers.setdefault((p["lesion_id"], p["label"]), set()).add(p["reader"])
    kept = {key for key, who in readers.items() if len(who) >= 2}
    shown = set()
    for side in sides():  # readers counts those who marked the lesion on the unit's slice
        for lesion, label, count in zip(side["lesion_id"], side["label"], side["readers"]):
            assert (str(lesion), str(label)) in kept and 1 <= count <= 4
            shown.add((str(lesion), str(label)))
    assert shown and shown <= kept  # a class outvoted on every slice of its lesion shows not
