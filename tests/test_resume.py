"""Stored unit results (lidc.resume.Parts): journals of framed records, read back whole or not at
all, from any process, compacted when old records outgrow the live ones."""
import multiprocessing
import os

import numpy as np
import pytest

from lidc import resume
from lidc.resume import Parts


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test starts as a process that has written no journal yet."""
    monkeypatch.setattr(resume, "_journals", {})


def result(i, size=10):
    return {"unit": i, "points": np.arange(size, dtype=np.int32).reshape(-1, 2) + i}


def assert_result(loaded, i, size=10):
    assert loaded["unit"] == i
    np.testing.assert_array_equal(loaded["points"], result(i, size)["points"])


def journals(work, stage="s"):
    return sorted((work / ".parts" / stage).glob("*.journal"))


def test_results_come_back_from_the_journal_by_key_and_fingerprint(tmp_path):
    parts = Parts(tmp_path, "s")
    for i in range(3):
        parts.save(f"unit {i}", "fp", result(i))
    again = Parts(tmp_path, "s")  # what the next run sees: the journal alone
    assert again.stored() == {(f"unit {i}", "fp") for i in range(3)}
    for i in range(3):
        assert_result(again.load(f"unit {i}", "fp"), i)
    assert again.load("unit 0", "another fingerprint") is None
    assert again.load("unit 9", "fp") is None
    assert len(journals(tmp_path)) == 1  # one file for the process, not one a unit


def saved(tmp_path, units):
    """The journal holding the results of `units` ({key: i}) saved by one process, and its bytes."""
    parts = Parts(tmp_path, "s")
    for key, i in units.items():
        parts.save(key, "fp", result(i))
    path, = journals(tmp_path)
    return path, path.read_bytes()


def test_a_record_cut_anywhere_is_not_read_and_those_before_it_are(tmp_path):
    path, whole = saved(tmp_path, {"first": 1, "second": 2})
    start = whole.index(resume._MAGIC, 1)  # where the second record begins
    for cut in range(start, len(whole)):
        path.write_bytes(whole[:cut])
        again = Parts(tmp_path, "s")
        assert again.stored() == {("first", "fp")}, cut
        assert_result(again.load("first", "fp"), 1)
        assert again.load("second", "fp") is None


def test_a_damaged_result_is_redone_not_read(tmp_path):
    Parts(tmp_path, "s").save("unit", "fp", result(1, size=1000))
    path, = journals(tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # a bit of the points
    path.write_bytes(bytes(data))
    assert Parts(tmp_path, "s").load("unit", "fp") is None


def test_a_damaged_key_never_hands_a_result_to_another_unit(tmp_path):
    path, data = saved(tmp_path, {"unit 1": 1, "unit 3": 3})
    path.write_bytes(data.replace(b"unit 1", b"unit 3", 1))  # the first record now says 3
    again = Parts(tmp_path, "s")
    assert again.load("unit 1", "fp") is None
    loaded = again.load("unit 3", "fp")
    assert loaded is None or loaded["unit"] == 3


def test_a_process_appends_after_a_journal_cut_short_by_a_killed_one(tmp_path):
    Parts(tmp_path, "s").save("first", "fp", result(1))
    path, = journals(tmp_path)
    path.write_bytes(path.read_bytes()[:-3])  # the writer was killed mid-record
    resume._journals.clear()  # the next run is another process
    Parts(tmp_path, "s").save("second", "fp", result(2))
    again = Parts(tmp_path, "s")
    assert again.stored() == {("second", "fp")}
    assert_result(again.load("second", "fp"), 2)


def test_a_write_that_fails_midway_sends_the_next_records_to_a_new_journal(tmp_path,
                                                                          monkeypatch):
    parts = Parts(tmp_path, "s")
    parts.save("first", "fp", result(1))
    real = resume.Parts._journal

    def failing_journal(self):
        f, path = real(self)
        f.write(b"LPR1 half a header")  # what a full disk could leave, then fail

        def full(_):
            raise OSError(28, "No space left on device")
        f.write = full
        return f, path

    monkeypatch.setattr(resume.Parts, "_journal", failing_journal)
    with pytest.raises(OSError):
        parts.save("second", "fp", result(2))
    monkeypatch.setattr(resume.Parts, "_journal", real)
    parts.save("third", "fp", result(3))
    again = Parts(tmp_path, "s")
    assert again.stored() == {("first", "fp"), ("third", "fp")}
    assert_result(again.load("third", "fp"), 3)
    assert len(journals(tmp_path)) == 2


def _save_in_a_worker(args):
    work, i = args
    Parts(work, "s").save(f"unit {i}", "fp", result(i))
    return os.getpid()


def test_each_worker_process_writes_its_own_journal_and_the_parent_reads_them_all(tmp_path):
    parent = Parts(tmp_path, "s")
    parent.save("unit parent", "fp", result(99))  # a journal the forked workers inherit a name of
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pids = set(pool.map(_save_in_a_worker, [(tmp_path, i) for i in range(8)]))
    assert len(journals(tmp_path)) == 1 + len(pids)
    assert parent.stored() == {(f"unit {i}", "fp") for i in range(8)} | {("unit parent", "fp")}
    for i in range(8):
        assert_result(parent.load(f"unit {i}", "fp"), i)


def test_a_journal_removed_meanwhile_is_started_again(tmp_path):
    parts = Parts(tmp_path, "s")
    parts.save("first", "fp", result(1))
    Parts(tmp_path, "s", force=True)  # --force from another run removes every part
    parts.save("second", "fp", result(2))
    again = Parts(tmp_path, "s")
    assert again.stored() == {("second", "fp")}
    assert_result(again.load("second", "fp"), 2)


def test_old_records_are_compacted_away_once_they_outgrow_the_live_ones(tmp_path):
    parts = Parts(tmp_path, "s")
    parts.save("kept", "fp", result(1, size=1000))
    parts.save("changed", "old", result(2, size=1000))
    parts.compact({("kept", "fp"), ("changed", "new")})
    assert len(journals(tmp_path)) == 1  # below a megabyte of old records: left as they are
    for n in range(3):  # a unit whose inputs changed, again and again
        parts.save("changed", f"old {n}", result(2, size=200_000))
    parts.save("changed", "new", result(3))
    before = sum(p.stat().st_size for p in journals(tmp_path))
    Parts(tmp_path, "s").compact({("kept", "fp"), ("changed", "new")})
    after = sum(p.stat().st_size for p in journals(tmp_path))
    assert len(journals(tmp_path)) == 1 and after < before / 100
    again = Parts(tmp_path, "s")
    assert again.stored() == {("kept", "fp"), ("changed", "new")}
    assert_result(again.load("kept", "fp"), 1, size=1000)
    assert_result(again.load("changed", "new"), 3)
    parts.save("later", "fp", result(4))  # the compacted journal is not written on
    assert Parts(tmp_path, "s").load("later", "fp") is not None


def test_parts_of_the_earlier_one_file_a_unit_form_and_temporaries_of_dead_writers_go(tmp_path):
    folder = tmp_path / ".parts" / "s"
    folder.mkdir(parents=True)
    old = folder / "0123456789abcdef0123.pkl"
    old.write_bytes(b"an earlier version's part")
    abandoned = folder / ".0123456789abcdef0123.pkl.999999999.x.part"
    abandoned.write_bytes(b"half")
    parts = Parts(tmp_path, "s")
    assert not old.exists() and not abandoned.exists()
    assert parts.stored() == set()


def _big(i):
    return result(i, size=400_000)


def test_a_stage_run_drops_the_records_its_units_no_longer_have(tmp_path):
    from lidc import workers
    from lidc.workers import Unit
    for fp in ("inputs before", "inputs now"):
        units = [Unit(f"unit {i}", fp, i) for i in range(3)]
        reused, done, failed = workers.run_units(Parts(tmp_path, "s"), units, _big, 1)
        assert (reused, done, failed) == (0, 3, [])
    assert Parts(tmp_path, "s").stored() == {(f"unit {i}", "inputs now") for i in range(3)}
    size = sum(p.stat().st_size for p in journals(tmp_path))
    assert size < 3 * 1.01 * _big(0)["points"].nbytes  # the old three are gone
