"""lidc.reads: LIDC XML reads, with and without namespace, and the files a CT pipeline skips."""
import numpy as np
import pytest

from lidc import reads
from lidc.errors import LidcError
from lidc.records import NODULE, NON_NODULE, SMALL_NODULE
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
    assert read.series_uid == SERIES_UID and read.sessions == 2
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
    assert read.sessions == 2 and len(read.marks) == 1


@pytest.mark.parametrize("text,reason", [
    (lidc_xml([[NON_MARK]], root="IdriReadMessage"), "chest X-ray"),
    ("", "empty file"),
    ("<LidcReadMessage><ResponseHeader>", "not well-formed"),
    (lidc_xml([[NON_MARK]]).replace("-15.0", "minus fifteen"), "not a number"),
    ("<?xml version='1.0'?><Other/>", "not an LIDC read"),
    (lidc_xml([[NON_MARK]]).replace("<SeriesInstanceUid>", "<X>").replace(
        "</SeriesInstanceUid>", "</X>"), "no SeriesInstanceUid"),
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
