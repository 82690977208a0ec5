"""Tests of the case viewer's data (lidc.cases), content, request handling and command."""
import base64
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest

from lidc.cases import Cohort, NotFound
from lidc.errors import LidcError
from lidc.io import read_csv
from tests import test_view_helpers as data
from tools import view
from training.viewer import content, models
from training.viewer.server import Viewer
from training.viewer.static import embed, write_static


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A work folder of the two patients of test_view_helpers."""
    return data.write_work(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def served(work, tmp_path_factory):
    """The viewer of `work` served (no runs); yields its base URL."""
    with data.serving(Viewer(work, tmp_path_factory.mktemp("runs"))) as url:
        yield url


def get(url):
    """(status, headers, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def readers(case):
    """The two readers of the case, as (reader A, reader B): A wrote the first session."""
    return tuple(case.readers())


# ---- lidc.cases: marks and patches by slice ----

def test_outlines_are_the_xml_points_as_row_col_on_their_slices(work):
    case = Cohort.load(work).case(data.PATIENT)
    a, b = readers(case)
    on_2 = {(o.reader, o.label): o.points for o in case.outlines_on(2)}
    assert on_2 == {(a, 0): data.xml_points(data.A_CONTOUR), (a, 1): data.xml_points([data.A_POINT]),
                    (b, 0): data.xml_points(data.B_CONTOUR)}
    assert [(o.reader, o.points) for o in case.outlines_on(3)] == [
        (a, data.xml_points(data.A_CONTOUR))]
    assert [(o.reader, o.label, o.points) for o in case.outlines_on(4)] == [
        (b, 2, data.xml_points([data.B_LOCUS]))]
    assert [case.outlines_on(i) for i in (0, 1, 5)] == [[], [], []]
    assert case.marked_slices() == [2, 3, 4]


def test_outlines_carry_the_lesion_and_reader_of_annotations_csv(work):
    case = Cohort.load(work).case(data.PATIENT)
    rows = {(int(r["mark_id"]), int(r["slice_index"])): r for r in read_csv(work / "annotations.csv")}
    for index in case.marked_slices():
        for outline in case.outlines_on(index):
            row = rows[(outline.mark_id, index)]
            assert (outline.reader, outline.label, outline.lesion_id, outline.nodule_id) == (
                row["reader"], int(row["label"]), int(row["lesion_id"]), row["nodule_id"])


def test_patches_by_slice_are_the_rows_of_patches_csv(work):
    cohort = Cohort.load(work)
    case = cohort.case(data.PATIENT)
    patches = read_csv(work / "patches" / "patches.csv")
    assert sorted(case.patch_indices()) == [int(r["patch_index"]) for r in patches]
    for index in case.marked_slices():
        for outline in case.outlines_on(index):
            row = patches[outline.patch.index]
            assert (int(row["mark_id"]), int(row["slice_index"])) == (outline.mark_id, index)
            assert (float(row["row"]), float(row["col"])) == (outline.patch.row, outline.patch.col)
    pixels = cohort.patch_pixels(case.patch_indices())
    stored = np.load(work / "patches" / "patches.npy")
    np.testing.assert_array_equal(pixels, stored[case.patch_indices()])
    assert cohort.patch_size == 64 and cohort.case(data.OTHER).patch_indices() == []


def test_a_slice_reads_as_hu_in_z_order(work):
    case = Cohort.load(work).case(data.PATIENT)
    hu = case.read_slice(2)
    assert hu.dtype == np.int16 and hu.shape == (128, 128)
    assert (hu[data.BLOCK] == data.BLOCK_HU).all() and hu[60, 60] == data.BACKGROUND_HU
    assert (case.read_slice(1) == data.BACKGROUND_HU).all()
    assert case.z == sorted(case.z)


def test_unknown_patient_series_or_slice_is_not_found(work):
    cohort = Cohort.load(work)
    with pytest.raises(NotFound, match="lists no patient"):
        cohort.case("LIDC-IDRI-9999")
    with pytest.raises(NotFound, match="no series"):
        cohort.case(data.PATIENT, data.OTHER_SERIES)
    assert cohort.case(data.PATIENT, data.SERIES).series_uid == data.SERIES
    case = cohort.case(data.PATIENT)
    for index in (-1, data.SLICES):
        with pytest.raises(NotFound, match="has slices 0 to 5"):
            case.read_slice(index)


def test_missing_or_stale_stages_leave_the_slices_and_a_note(work, tmp_path):
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    (copy / "patches" / "patches.csv").unlink()
    cohort = Cohort.load(copy)
    assert "run the crop stage" in " ".join(cohort.notes)
    assert cohort.case(data.PATIENT).patch_indices() == [] and cohort.patch_size is None
    made = json.loads((copy / "annotations.manifest.json").read_text())
    made["inputs"]["index"] = "an older index"
    (copy / "annotations.manifest.json").write_text(json.dumps(made))
    cohort = Cohort.load(copy)
    assert "made from another index" in " ".join(cohort.notes)
    assert cohort.case(data.PATIENT).marked_slices() == []
    (copy / "index.csv").unlink()
    with pytest.raises(LidcError, match="run the index stage first"):
        Cohort.load(copy)


# ---- what the page is sent ----

def test_reader_colours_are_distinct_and_never_grey():
    colours = content.reader_colours([f"r{k}" for k in range(len(content.READER_COLOURS))])
    assert len(set(colours.values())) == len(content.READER_COLOURS)
    for colour in colours.values():
        rgb = [int(colour[k:k + 2], 16) for k in (1, 3, 5)]
        assert max(rgb) - min(rgb) >= 150, colour
    assert content.reader_colours(["b", "a"]) == {"a": content.READER_COLOURS[0],
                                                  "b": content.READER_COLOURS[1]}


def test_case_payload_holds_marks_by_slice_with_points_as_row_col(work):
    cohort = Cohort.load(work)
    payload = json.loads(json.dumps(content.case_payload(cohort, cohort.case(data.PATIENT))))
    assert sorted(payload["marks"]) == ["2", "3", "4"]
    contours = [m["points"] for m in payload["marks"]["2"] if len(m["points"]) > 1]
    assert [list(p) for p in data.xml_points(data.A_CONTOUR)] in contours
    assert {r["reader"] for r in payload["readers"]} == set(readers(cohort.case(data.PATIENT)))
    assert payload["windows"][0] == {"name": "lung", "level": -600.0, "width": 1500.0}
    assert (payload["rows"], payload["cols"], len(payload["z"])) == (128, 128, data.SLICES)


def test_predictions_payload_leaves_cam_empty_for_grad_cam_to_fill():
    payload = content.predictions_payload("a", [7, 9], np.array([[0.7, 0.2, 0.1],
                                                                  [0.1, 0.1, 0.8]]))
    assert payload["patches"]["7"] == {"probabilities": [0.7, 0.2, 0.1], "predicted": 0,
                                       "cam": None}
    assert payload["patches"]["9"]["predicted"] == 2


def test_slices_are_int16_little_endian_plain_or_packed():
    hu = np.array([[-1000, 0], [3071, -2048]], np.int16)
    assert np.frombuffer(content.slice_bytes(hu), "<i2").tolist() == hu.ravel().tolist()
    packed = zlib.decompress(base64.b64decode(content.packed_slice(hu)))
    assert packed == content.slice_bytes(hu)


def test_embedded_data_cannot_close_its_script_element():
    data_ = {"reader": "</script><script>alert(1)</script>", "n": [1, 2]}
    page = embed("<head><!--VIEWER-DATA--></head>", data_)
    inside = page.split('type="application/json">', 1)[1].rsplit("</script>", 1)[0]
    assert "</" not in inside and "<" not in inside
    assert json.loads(inside) == data_


def test_runs_are_offered_when_they_hold_a_model(tmp_path):
    (tmp_path / "saved" / "saved_model").mkdir(parents=True)
    (tmp_path / "saved" / "saved_model" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "saved" / "config.json").write_text('{"net": "lenet5"}')
    (tmp_path / "checkpointed" / "best").mkdir(parents=True)
    (tmp_path / "checkpointed" / "best" / "checkpoint").write_text("")
    (tmp_path / "untrained").mkdir()
    (tmp_path / ".hidden" / "best").mkdir(parents=True)
    (tmp_path / ".hidden" / "best" / "checkpoint").write_text("")
    found = models.available(tmp_path)
    assert [(r.name, r.model, r.net) for r in found] == [("checkpointed", "checkpoint", ""),
                                                         ("saved", "saved model", "lenet5")]
    with pytest.raises(LookupError, match="no run 'untrained'"):
        models.Models(tmp_path).find("untrained")


# ---- request handling ----

BAD_REQUESTS = [
    ("/api/case?patient=LIDC-IDRI-9999", 404, "index.csv: lists no patient"),
    (f"/api/case?patient={data.PATIENT}&series=1.2.3", 404, "no series"),
    ("/api/case", 400, "missing parameter 'patient'"),
    (f"/api/case?patient={data.PATIENT}&file=/etc/passwd", 400, "unknown parameter"),
    (f"/api/case?patient={data.PATIENT}&patient={data.OTHER}", 400, "more than once"),
    (f"/api/slice?patient={data.PATIENT}&index=6", 404, "has slices 0 to 5"),
    (f"/api/slice?patient={data.PATIENT}&index=-1", 400, "whole number"),
    (f"/api/slice?patient={data.PATIENT}&index=1e3", 400, "whole number"),
    (f"/api/slice?patient={data.PATIENT}&index=%2e%2e", 400, "whole number"),
    (f"/api/slice?patient={data.PATIENT}", 400, "missing parameter 'index'"),
    (f"/api/predictions?run=..&patient={data.PATIENT}", 400, "must not begin with a dot"),
    (f"/api/predictions?run=..%2f..%2fetc&patient={data.PATIENT}", 400, "must not begin"),
    (f"/api/predictions?run=a%2fb&patient={data.PATIENT}", 400, "without slashes"),
    (f"/api/predictions?run=nope&patient={data.PATIENT}", 404, "no run 'nope'"),
    (f"/api/predictions?patient={data.PATIENT}", 400, "missing parameter 'run'"),
    ("/api/../../etc/passwd", 404, "no such page"),
    ("/page.html", 404, "no such page"),
]


@pytest.mark.parametrize("target,status,message", BAD_REQUESTS)
def test_a_bad_request_is_a_4xx_with_a_message(served, target, status, message):
    code, headers, body = get(served + target)
    assert code == status
    assert headers["Content-Type"] == "application/json"
    assert message in json.loads(body)["error"]
    assert b"Traceback" not in body


def test_good_requests_answer_the_page_the_case_and_the_slice(served):
    code, headers, body = get(served + "/")
    assert code == 200 and b"LIDC case viewer" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert b"http://" not in body and b"https://" not in body  # nothing fetched from elsewhere
    cases = json.loads(get(served + "/api/cases")[2])["cases"]
    assert [c["patient_id"] for c in cases] == [data.PATIENT, data.OTHER]
    code, _, body = get(f"{served}/api/slice?patient={data.PATIENT}&series={data.SERIES}&index=2")
    hu = np.frombuffer(body, "<i2").reshape(128, 128)
    assert code == 200 and hu[15, 110] == data.BLOCK_HU and hu[60, 60] == data.BACKGROUND_HU
    assert json.loads(get(served + "/api/runs")[2])["runs"] == []


def test_a_request_to_another_host_name_is_refused(served):
    request = urllib.request.Request(served + "/api/cases", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403


def test_the_viewer_loads_work_again_after_a_stage_rewrote_it(work, tmp_path):
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    viewer = Viewer(copy, tmp_path / "runs")
    first = viewer.cohort()
    assert viewer.cohort() is first
    (copy / "patches" / "patches.csv").unlink()
    (copy / "patches" / "manifest.json").unlink()
    assert viewer.cohort() is not first and viewer.cohort().patch_size is None


def test_tensorflow_waits_until_a_run_is_chosen(work, tmp_path):
    script = ("import sys\nfrom pathlib import Path\nfrom training.viewer.server import Viewer\n"
              f"v = Viewer(Path({str(work)!r}), Path({str(tmp_path)!r}))\n"
              "for target in ('/', '/api/cases', '/api/runs', "
              f"'/api/case?patient={data.PATIENT}', '/api/slice?patient={data.PATIENT}&index=2'):\n"
              "    assert v.answer(target).status == 200, target\n"
              "assert 'tensorflow' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


# ---- the command ----

def test_static_needs_a_patient_and_a_patient_needs_static(capsys):
    for argv in (["--static", "out"], ["--patient", data.PATIENT]):
        with pytest.raises(SystemExit) as exit_:
            view.main(argv)
        assert exit_.value.code == 2
    assert "--static needs --patient" in capsys.readouterr().err


def test_static_export_embeds_the_case_and_refuses_a_folder_it_did_not_write(work, tmp_path):
    out = tmp_path / "case"
    assert view.main(["--work", str(work), "--runs", str(tmp_path / "runs"), "--static",
                      str(out), "--patient", data.PATIENT]) == 0
    page = (out / "index.html").read_text()
    embedded = page.split('<script id="viewer-data" type="application/json">')[1]
    payload = json.loads(embedded.split("</script>")[0])
    assert payload["case"]["patient_id"] == data.PATIENT and sorted(payload["case"]["marks"]) == [
        "2", "3", "4"]
    assert sorted(p.name for p in (out / "slices").iterdir()) == [
        f"{k:04d}.js" for k in range(data.SLICES)]
    write_static(work, tmp_path / "runs", out, data.PATIENT)  # an export may be replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(LidcError, match="not an earlier viewer export"):
        write_static(work, tmp_path / "runs", tmp_path / "mine", data.PATIENT)
    with pytest.raises(NotFound):
        write_static(work, tmp_path / "runs", tmp_path / "new", "LIDC-IDRI-9999")


def test_the_command_stops_with_a_message_without_an_index(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        from tools import cli

        cli.run(view.main, ["--work", str(tmp_path), "--runs", str(tmp_path), "--port", "0"])
    assert exit_.value.code == 1
    assert "run the index stage first" in capsys.readouterr().err
