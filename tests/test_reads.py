"""lidc.reads: LIDC XML reads, with and without namespace, the files a CT pipeline skips, the
elements it leaves out of a file it reads, and the sessions it reads once."""
import re

import numpy as np
import pytest
from lxml import etree

from lidc import reads
from lidc.errors import LidcError
from lidc.records import NODULE, NON_NODULE, SMALL_NODULE, STRAY
from tests.helpers import SERIES_UID, lidc_xml, square

NODULE_MARK = {"kind": "nodule", "id": "Nodule 001", "malignancy": 4,
               "rois": [(-10.0, "s1", True, square(40, 30, 3)),
                        (-12.5, "s2", True, square(40, 30, 4)),
                        (-12.5, "s2", False, square(40, 30, 1))]}
POINT_MARK = {"kind": "nodule", "id": "IL057_127364", "rois": [(-10.0, "s1", True, [(70, 80)])]}
NON_MARK = {"kind": "non", "id": "_Non-nodule 001", "z": -15.0, "sop": "s3", "xy": (100, 20)}


def write(tmp_path, text, name="001.xml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("namespace", [True, False])
def test_parses_every_kind_with_and_without_namespace(tmp_path, namespace):
    path = write(tmp_path, lidc_xml([[NODULE_MARK, POINT_MARK], [NON_MARK]], namespace=namespace))
    read = reads.parse_read(path, "LIDC-IDRI-0001")
    assert read.series_uid == SERIES_UID and len(read.sessions) == 2
    nodule, point, non = read.marks
    assert (nodule.label, point.label, non.label) == (NODULE, SMALL_NODULE, NON_NODULE)
    assert (nodule.reader, point.reader, non.reader) == ("001:0", "001:0", "001:1")
    assert nodule.characteristics == {"malignancy": 4}
    assert nodule.nodule_id == "Nodule 001" and point.nodule_id == "IL057_127364"
    assert non.rois[0].points.tolist() == [[20, 100]]  # (row, col) = (yCoord, xCoord)
    assert point.rois[0].centroid == (80.0, 70.0)


def test_contour_centroid_and_bbox_use_rows_for_y(tmp_path):
    read = reads.parse_read(write(tmp_path, lidc_xml([[NODULE_MARK]])))
    roi = read.marks[0].rois[0]
    assert roi.centroid == pytest.approx((30.0, 40.0))
    assert roi.bbox == (27, 37, 33, 43)


def test_inclusion_false_is_a_hole_not_a_slice(tmp_path):
    mark = reads.parse_read(write(tmp_path, lidc_xml([[NODULE_MARK]]))).marks[0]
    assert [r.inclusion for r in mark.rois] == [True, True, False]
    assert len(mark.included) == 2


def test_single_point_with_characteristics_is_still_small(tmp_path):
    point = dict(POINT_MARK, malignancy=3)
    assert reads.parse_read(write(tmp_path, lidc_xml([[point]]))).marks[0].label == SMALL_NODULE


def test_empty_reading_session_counts_but_has_no_marks(tmp_path):
    read = reads.parse_read(write(tmp_path, lidc_xml([[], [NON_MARK]])))
    assert len(read.sessions) == 2 and len(read.marks) == 1


@pytest.mark.parametrize("text,reason", [
    (lidc_xml([[NON_MARK]], root="IdriReadMessage"), "chest X-ray"),
    ("", "empty file"),
    ("<LidcReadMessage><ResponseHeader>", "not well-formed"),
    ("<?xml version='1.0'?><Other/>", "not an LIDC read"),
    (lidc_xml([[NON_MARK]]).replace("<SeriesInstanceUid>", "<X>").replace(
        "</SeriesInstanceUid>", "</X>"), "no SeriesInstanceUid"),
    (lidc_xml([[NON_MARK]]).replace("ResponseHeader>", "Other>"), "no ResponseHeader"),
])
def test_unusable_files_raise_lidc_error_with_file_and_reason(tmp_path, text, reason):
    path = write(tmp_path, text)
    with pytest.raises(LidcError, match=reason) as err:
        reads.parse_read(path)
    assert err.value.path == str(path)


def test_external_entities_are_not_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    text = lidc_xml([[dict(NODULE_MARK, id="&xxe;")]]).replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM '
        f'"file://{secret}">]>')
    try:
        read = reads.parse_read(write(tmp_path, text))
    except LidcError:
        return  # refusing the file outright is as good
    assert "TOP-SECRET" not in read.marks[0].nodule_id


def test_other_encoding_declaration(tmp_path):
    text = lidc_xml([[NON_MARK]]).replace("UTF-8", "ISO-8859-1").replace(
        "_Non-nodule 001", "n\u00e9")
    path = tmp_path / "latin.xml"
    path.write_bytes(text.encode("latin-1"))
    assert reads.parse_read(path).marks[0].nodule_id == "n\u00e9"


def test_points_are_int_arrays(tmp_path):
    mark = reads.parse_read(write(tmp_path, lidc_xml([[NODULE_MARK]]))).marks[0]
    assert mark.rois[0].points.dtype == np.int32 and mark.rois[0].points.shape[1] == 2


# Element-level faults: the element goes, the file stays, the reason names the file and line. --

def test_a_bad_number_drops_only_its_non_nodule(tmp_path):
    other = dict(NON_MARK, id="keep", xy=(5, 6), z=-10.0)
    path = write(tmp_path, lidc_xml([[NODULE_MARK, NON_MARK, other]]).replace(
        "<imageZposition>-15.000000 </imageZposition>", "<imageZposition>minus</imageZposition>"))
    read = reads.parse_read(path)
    assert [m.nodule_id for m in read.marks] == ["Nodule 001", "keep"]
    [(where, reason)] = read.problems
    assert where == str(path)
    assert reason.startswith("reading session 0, line ") and "not a number: 'minus'" in reason
    assert "non-nodule '_Non-nodule 001'" in reason and "the rest of the file is read" in reason


@pytest.mark.parametrize("edit,reason", [
    (lambda x: x.replace("<roi>", "<other>").replace("</roi>", "</other>"), "has no region"),
    (lambda x: x.replace("<edgeMap>", "<e>").replace("</edgeMap>", "</e>"), "no usable region"),
])
def test_a_nodule_without_a_region_is_left_out_and_its_session_kept(tmp_path, edit, reason):
    # The edits touch only the nodule: a non-nodule has a locus, neither roi nor edgeMap.
    text = edit(lidc_xml([[NODULE_MARK, NON_MARK]]))
    read = reads.parse_read(write(tmp_path, text))
    assert [m.label for m in read.marks] == [NON_NODULE]
    assert any(reason in r and "'Nodule 001'" in r for _, r in read.problems), read.problems


def test_a_bad_region_leaves_the_rest_of_its_nodule_and_its_class(tmp_path):
    text = lidc_xml([[NODULE_MARK]]).replace("<imageZposition>-12.500000 </imageZposition>",
                                             "<imageZposition>nan</imageZposition>", 1)
    read = reads.parse_read(write(tmp_path, text))
    [mark] = read.marks
    # The dropped contour is still a contour: the nodule stays >= 3 mm.
    assert mark.label == NODULE and [r.z for r in mark.rois] == [-10.0, -12.5]
    [(_, reason)] = read.problems
    assert "not a finite number: 'nan'" in reason and "this region of nodule" in reason


@pytest.mark.parametrize("value,reason", [
    ("", "is empty"), (" ", "is empty"), ("twelve", "is not a number: 'twelve'"),
    ("-inf", "is not a finite number: '-inf'"), ("NaN", "is not a finite number: 'NaN'"),
    ("-1000000.5", "is out of range (beyond 1e6 mm or pixels): '-1000000.5'")])
def test_a_bad_z_is_refused_with_its_line_and_why(tmp_path, value, reason):
    text = lidc_xml([[NODULE_MARK]]).replace("<imageZposition>-12.500000 </imageZposition>",
                                             f"<imageZposition>{value}</imageZposition>", 1)
    line = text[:text.index(f"<imageZposition>{value}<")].count("\n") + 1
    read = reads.parse_read(write(tmp_path, text))
    [(_, problem)] = read.problems
    assert f"line {line}: <imageZposition> {reason}: this region of nodule" in problem
    assert [r.z for r in read.marks[0].rois] == [-10.0, -12.5]  # the other two regions


def test_a_z_at_the_limit_is_read():
    root = etree.fromstring(b"<roi><imageZposition>-1000000</imageZposition></roi>")
    assert reads._number("f.xml", root, "imageZposition", {"imageZposition": root[0]}) == -1e6


@pytest.mark.parametrize("value", ["high", "3.5", "inf", "0", "7", ""])
def test_a_rating_off_its_scale_is_left_empty_not_rounded(tmp_path, value):
    text = lidc_xml([[NODULE_MARK]]).replace("<malignancy>4</malignancy>",
                                             f"<malignancy>{value}</malignancy><texture>5"
                                             "</texture>")
    read = reads.parse_read(write(tmp_path, text))
    [mark] = read.marks
    assert mark.characteristics == {"texture": 5}
    assert [("malignancy" in r) for _, r in read.problems] == ([True] if value else [])


def test_an_inclusion_that_is_neither_true_nor_false_drops_the_region(tmp_path):
    text = lidc_xml([[NODULE_MARK]]).replace("<inclusion>FALSE</inclusion>",
                                             "<inclusion>maybe</inclusion>")
    read = reads.parse_read(write(tmp_path, text))
    assert [r.inclusion for r in read.marks[0].rois] == [True, True]
    assert "neither TRUE nor FALSE" in read.problems[0][1]


def test_a_single_point_beside_contours_is_a_stray_click(tmp_path):
    stray = dict(NODULE_MARK, rois=NODULE_MARK["rois"] + [(-15.0, "s3", True, [(90, 90)])])
    [mark] = reads.parse_read(write(tmp_path, lidc_xml([[stray, POINT_MARK]]))).marks[:1]
    assert mark.label == NODULE
    assert [r.status for r in mark.rois] == ["", "", "", STRAY]
    point = reads.parse_read(write(tmp_path, lidc_xml([[POINT_MARK]]))).marks[0]
    assert point.rois[0].status == ""  # a small nodule's one point is its mark, not a stray


# Sessions read once; corrections read instead of what they correct. -------------------------

def sessions_of(*paths):
    return [s for p in paths for s in reads.parse_read(p).sessions]


def test_identical_sessions_in_other_files_are_read_once(tmp_path):
    text = lidc_xml([[NODULE_MARK], [NON_MARK]])
    a = write(tmp_path, text, "173.xml")
    b = write(tmp_path, text.replace("><", ">\n  <"), "174.xml")  # re-indented
    c = write(tmp_path, lidc_xml([[NODULE_MARK], [NON_MARK]], namespace=False), "175.xml")
    kept, skipped = reads.unique_sessions(sessions_of(a, b, c))
    assert [s.reader for s in kept] == ["173:0", "173:1"]
    assert [(p, r.split(":")[0]) for p, r in skipped] == \
        [(str(b), "reading session 0 repeats " + str(a) + " session 0"),
         (str(b), "reading session 1 repeats " + str(a) + " session 1"),
         (str(c), "reading session 0 repeats " + str(a) + " session 0"),
         (str(c), "reading session 1 repeats " + str(a) + " session 1")]


def test_a_damaged_copy_gives_way_to_the_intact_session(tmp_path):
    text = lidc_xml([[NODULE_MARK, NON_MARK]])
    damaged = write(tmp_path, text.replace("<xCoord>100</xCoord>", "<xCoord>x</xCoord>"),
                    "000.xml")
    intact = write(tmp_path, text, "001.xml")
    kept, skipped = reads.unique_sessions(sessions_of(damaged, intact))
    assert [(s.reader, len(s.marks)) for s in kept] == [("001:0", 2)]
    [(path, reason)] = skipped
    assert path == str(damaged) and "but for elements damaged here" in reason
    assert "not a number: 'x'" in reason


def test_sessions_that_differ_are_all_read_and_keep_distinct_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write(tmp_path / "a", lidc_xml([[NODULE_MARK]]), "072.xml")
    two = write(tmp_path / "b", lidc_xml([[POINT_MARK]]), "072.xml")
    kept, skipped = reads.unique_sessions(sessions_of(one, two))
    assert skipped == []
    assert [s.reader for s in kept] == ["072:0", f"{tmp_path / 'b' / '072'}:0"]
    assert kept[1].marks[0].reader == kept[1].reader


def test_header_alone_does_not_make_a_damaged_session_a_copy(tmp_path):
    bad = lambda mark: lidc_xml([[mark]]).replace("<xCoord>", "<xCoord>junk", 1)  # noqa: E731
    one = write(tmp_path, bad(NON_MARK), "001.xml")
    two = write(tmp_path, bad(dict(NON_MARK, id="other")), "002.xml")
    kept, skipped = reads.unique_sessions(sessions_of(one, two))
    assert len(kept) == 2 and skipped == []


def test_a_correction_is_read_instead_of_the_file_it_corrects(tmp_path):
    old = write(tmp_path, lidc_xml([[NODULE_MARK], [NON_MARK]]), "161.xml")
    new = write(tmp_path, lidc_xml([[POINT_MARK], [NON_MARK]]),
                "161-resubmitted-correction-3-9-12.xml")
    unrelated = write(tmp_path, lidc_xml([[NON_MARK]]), "1610.xml")
    kept, skipped = reads.replace_corrected([reads.parse_read(p) for p in (old, new, unrelated)])
    assert [r.path for r in kept] == [str(new), str(unrelated)]
    [(path, reason)] = skipped
    assert path == str(old) and str(new) in reason and "read instead" in reason


def test_a_session_that_differs_where_a_damaged_third_is_damaged_is_another_read(tmp_path):
    text = lidc_xml([[NODULE_MARK, NON_MARK]])
    intact = write(tmp_path, text, "001.xml")
    damaged = write(tmp_path, text.replace("<xCoord>100</xCoord>", "<xCoord>x</xCoord>"),
                    "002.xml")
    other = write(tmp_path, text.replace("<xCoord>100</xCoord>", "<xCoord>101</xCoord>"),
                  "003.xml")
    kept, skipped = reads.unique_sessions(sessions_of(intact, damaged, other))
    assert [s.reader for s in kept] == ["001:0", "003:0"]
    assert [p for p, _ in skipped] == [str(damaged)]


def test_a_mark_or_region_given_twice_over_is_read_once_and_reported(tmp_path):
    twice = dict(NODULE_MARK, rois=NODULE_MARK["rois"] + NODULE_MARK["rois"][:1])
    read = reads.parse_read(write(tmp_path, lidc_xml([[twice, NON_MARK, NON_MARK]])))
    assert [m.label for m in read.marks] == [NODULE, NON_NODULE]
    assert [r.z for r in read.marks[0].rois] == [-10.0, -12.5, -12.5]
    reasons = [r for _, r in read.problems]
    assert len(reasons) == 2 and "this region of nodule 'Nodule 001'" in reasons[0]
    assert re.search(r"line \d+: <nonNodule> repeats the one at line \d+ of this session: read "
                     r"once", reasons[1])


def test_sessions_and_marks_out_of_place_are_reported_not_ignored(tmp_path):
    text = lidc_xml([[NODULE_MARK], [NON_MARK]])
    lost_mark = re.sub(r"</unblindedReadNodule>(\s*)</readingSession>",
                       r"</unblindedReadNodule></group>\1</readingSession>",
                       text.replace("<readingSession>", "<readingSession><group>", 1), count=1)
    read = reads.parse_read(write(tmp_path, lost_mark))
    assert [m.label for m in read.marks] == [NON_NODULE]
    [(_, reason)] = read.problems
    assert "<unblindedReadNodule> lies inside <group>" in reason and "left out" in reason
    lost_session = text.replace("<readingSession>", "<wrapper><readingSession>", 1).replace(
        "</readingSession>", "</readingSession></wrapper>", 1)
    read = reads.parse_read(write(tmp_path, lost_session, "002.xml"))
    assert [m.label for m in read.marks] == [NON_NODULE]
    assert [r.split(": ", 1)[1] for _, r in read.problems] == [
        "<readingSession> lies inside <wrapper>, not where LIDC reads put it: left out"]
