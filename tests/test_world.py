"""World coordinates in LUNA16's convention: WORK/lesions.csv, patches.csv's world columns and
`python -m tools.luna16` (export, label), on a small series built here.

One series of 5 slices (2.5 mm apart, 5 mm thick), pixels 0.6 mm between rows and 0.9 mm between
columns: three readers outline one nodule >= 3 mm on slices 1-3 (squares, centred one column
apart), a fourth calls it a non-nodule, and two readers mark one nodule < 3 mm on slice 4.
Where each lands in the world is computed again here from the DICOM headers with pydicom.
"""
import csv
import math

import numpy as np
import pydicom
import pytest

from lidc.io import read_csv
from lidc.luna16 import LUNA16_COLUMNS
from lidc.records import PatchOrigin
from tests.helpers import lidc_xml, sop_uid, square, write_series
from tools import annotations, cli, crop, index, luna16

SERIES = "1.2.826.0.1.3680043.8.498.77"
PATIENT = "LIDC-IDRI-0101"
Z = [-100.0, -97.5, -95.0, -92.5, -90.0]
SPACING = (0.6, 0.9)  # PixelSpacing: between rows, between columns
ORIGIN = (30.5, -12.25)  # ImagePositionPatient x, y of every slice
CX, CY, HALF = 60, 50, 5  # the nodule's centre (column, row) and its squares' half side
SMALL = (100, 100)  # the small nodule's point (column, row)

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
TRANSPOSED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0)


def nodule(dx):
    return {"kind": "nodule", "id": "n1",
            "rois": [(Z[k], sop_uid(SERIES, k), True, square(CX + dx, CY, HALF))
                     for k in (1, 2, 3)]}


SMALL_MARK = {"kind": "nodule", "id": "s1", "rois": [(Z[4], sop_uid(SERIES, 4), True, [SMALL])]}
SESSIONS = [[nodule(-1), SMALL_MARK], [nodule(0), SMALL_MARK], [nodule(1)],
            [{"kind": "non", "id": "x1", "z": Z[2], "sop": sop_uid(SERIES, 2), "xy": (CX, CY)}]]


def build(root, orientation):
    """Writes the series with `orientation` and its read under `root`; returns the slice paths
    (slice k at Z[k])."""
    folder = root / PATIENT / "study" / "series"
    paths = write_series(folder, Z, SERIES, patient=PATIENT)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], float(ds.ImagePositionPatient[2])]
        ds.PixelSpacing = list(SPACING)
        ds.save_as(path)
    (folder / "001.xml").write_text(lidc_xml(SESSIONS, SERIES))
    return paths


def pydicom_world(path, row, col):
    """DICOM PS3.3 C.7.6.2.1.1, from the file's own header: where pixel (row, col) is."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    position = np.array(ds.ImagePositionPatient, float)
    orientation = np.array(ds.ImageOrientationPatient, float)
    spacing = [float(v) for v in ds.PixelSpacing]
    return position + orientation[:3] * spacing[1] * col + orientation[3:] * spacing[0] * row


def run(root, work, *stages):
    common = ["--work", str(work), "--workers", "1"]
    for stage in stages:
        args = ["--root", str(root), *common] if stage is index else common
        assert stage.main(args) == 0


@pytest.fixture(scope="module", params=[IDENTITY, FLIPPED, TRANSPOSED],
                ids=["identity", "flipped", "transposed"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("world")
    paths = build(base / "LIDC-IDRI", request.param)
    run(base / "LIDC-IDRI", base / "work", index, annotations, crop)
    return paths, base / "work", request.param


def test_lesions_csv_has_luna16s_columns_first_and_one_row_per_lesion_and_class(world):
    _, work, _ = world
    header = (work / "lesions.csv").read_text().splitlines()[0]
    assert header.startswith("seriesuid,coordX,coordY,coordZ,diameter_mm,")
    rows = read_csv(work / "lesions.csv")
    assert [(r["lesion_id"], r["label"], r["readers"]) for r in rows] == \
        [("0", "0", "3"), ("0", "2", "1"), ("1", "1", "2")]
    assert rows[0]["reader_names"] == '["001:0", "001:1", "001:2"]'
    assert rows[1]["reader_names"] == '["001:3"]'
    assert [(r["slice_first"], r["slice_last"], r["z_first"], r["z_last"]) for r in rows] == \
        [("1", "3", "-97.5", "-92.5"), ("2", "2", "-95", "-95"), ("4", "4", "-90", "-90")]
    assert {r["seriesuid"] for r in rows} == {SERIES} and {r["patient_id"] for r in rows} == \
        {PATIENT}


def test_lesion_centres_are_where_pydicom_places_them(world):
    paths, work, orientation = world
    nodule_row, non_nodule, small = read_csv(work / "lesions.csv")
    # The readers' squares are centred on columns CX-1, CX, CX+1 of slices 1-3: their mean is
    # the centre of column CX on the middle slice.
    expected = pydicom_world(paths[2], CY, CX)
    for row in (nodule_row, non_nodule):
        assert centre(row) == pytest.approx(expected, abs=1e-6)
    assert centre(small) == pytest.approx(pydicom_world(paths[4], SMALL[1], SMALL[0]), abs=1e-6)
    if orientation == FLIPPED:  # written out: columns go along -x, rows along -y
        assert expected == pytest.approx((30.5 - CX * 0.9, -12.25 - CY * 0.6, -95))
    if orientation == TRANSPOSED:  # columns go along +y, rows along +x
        assert expected == pytest.approx((30.5 + CY * 0.6, -12.25 + CX * 0.9, -95))


def centre(row):
    return np.array([float(row[k]) for k in ("coordX", "coordY", "coordZ")])


def test_the_diameter_is_the_readers_mean_volume_equivalent_one(world):
    _, work, _ = world
    nodule_row, non_nodule, small = read_csv(work / "lesions.csv")
    # Inside each square outline: (2 * HALF - 1)^2 pixels (the outline is not the nodule's),
    # on 3 slices 2.5 mm apart (their distance, not the 5 mm SliceThickness).
    volume = 3 * (2 * HALF - 1) ** 2 * SPACING[0] * SPACING[1] * 2.5
    assert float(nodule_row["diameter_mm"]) == pytest.approx((6 * volume / math.pi) ** (1 / 3),
                                                             rel=1e-9)
    # A non-nodule and a nodule < 3 mm are points: no size, LUNA16's -1.
    assert non_nodule["diameter_mm"] == small["diameter_mm"] == "-1"


def test_patch_centres_in_the_world_are_pydicoms(world):
    paths, work, _ = world
    rows = read_csv(work / "patches" / "patches.csv")
    assert list(rows[0])[-3:] == ["world_x", "world_y", "world_z"]
    assert len(rows) == 3 * 3 + 1 + 2
    for r in rows:
        at = pydicom_world(paths[int(r["slice_index"])], float(r["row"]), float(r["col"]))
        assert [float(r[k]) for k in ("world_x", "world_y", "world_z")] == \
            pytest.approx(at, abs=1e-4)


def test_export_then_label_round_trips(world, tmp_path):
    _, work, _ = world
    out = tmp_path / "annotations.csv"
    assert luna16.main(["export", "--work", str(work), "--min-readers", "3", "--out",
                        str(out)]) == 0
    lines = out.read_text().splitlines()
    [nodule_row] = [r for r in read_csv(work / "lesions.csv") if r["label"] == "0"]
    assert lines == ["seriesuid,coordX,coordY,coordZ,diameter_mm",
                     ",".join(nodule_row[k] for k in LUNA16_COLUMNS)]
    assert all(len(v.replace("-", "").replace(".", "")) <= 10 for v in lines[1].split(",")[1:])
    candidates = tmp_path / "candidates.csv"
    small = next(r for r in read_csv(work / "lesions.csv") if r["label"] == "1")
    write_rows(candidates, ["seriesuid", "coordX", "coordY", "coordZ", "class"],
               [[SERIES, *(nodule_row[k] for k in ("coordX", "coordY", "coordZ")), 1],
                [SERIES, *(small[k] for k in ("coordX", "coordY", "coordZ")), 0]])
    labels = tmp_path / "labels.csv"
    assert luna16.main(["label", "--work", str(work), "--annotations", str(out),
                        "--candidates", str(candidates), "--out", str(labels)]) == 0
    patches = read_csv(work / "patches" / "patches.csv")
    rows = read_csv(labels)
    assert [r["patch_index"] for r in rows] == [p["patch_index"] for p in patches]
    for patch, row in zip(patches, rows):
        in_nodule = patch["lesion_id"] == "0"  # the nodule's 9 patches and the non-nodule's
        assert (row["in_nodule"], row["nodule_row"]) == (("1", "1") if in_nodule else ("0", ""))
        assert row["candidate_class"] == ("1" if in_nodule else "0")
        assert float(row["nodule_distance_mm"]) < float(nodule_row["diameter_mm"]) / 2 \
            if in_nodule else float(row["nodule_distance_mm"]) > 10


def write_rows(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_export_keeps_the_nodules_enough_readers_marked(world, tmp_path):
    _, work, _ = world
    out = tmp_path / "four.csv"
    assert luna16.main(["export", "--work", str(work), "--min-readers", "4", "--out",
                        str(out)]) == 0
    assert out.read_text().splitlines() == ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    assert luna16.main(["export", "--work", str(work)]) == 0  # LUNA16's 3 of 4, into WORK
    assert len((work / "luna16" / "annotations.csv").read_text().splitlines()) == 2


def refused(argv, capsys):
    """What tools.luna16 says on stderr when it exits 1 for `argv`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.run(luna16.main, argv)
    assert exit_.value.code == 1
    return capsys.readouterr().err


ROW = [SERIES, "1.5", "-2.25", "-95", "8"]
BAD_ANNOTATIONS = [
    pytest.param([["1.2.3.4", *ROW[1:]]], "line 2: series 1.2.3.4 is not in the index",
                 id="unknown-series"),
    pytest.param([ROW, [SERIES, "nan", *ROW[2:]]], "line 3: coordX 'nan' is not a finite number",
                 id="nan"),
    pytest.param([[*ROW[:4], "inf"]], "line 2: diameter_mm 'inf' is not a finite number",
                 id="infinite"),
    pytest.param([[*ROW[:3], "", ROW[4]]], "line 2: no value in column coordZ", id="empty"),
]


@pytest.mark.parametrize("rows, message", BAD_ANNOTATIONS)
def test_label_refuses_a_bad_annotations_csv(world, tmp_path, capsys, rows, message):
    _, work, _ = world
    path = tmp_path / "annotations.csv"
    write_rows(path, ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], rows)
    err = refused(["label", "--work", str(work), "--annotations", str(path)], capsys)
    assert f"{path}: {message}" in err


def test_label_refuses_a_missing_column_and_a_class_that_is_no_integer(world, tmp_path,
                                                                        capsys):
    _, work, _ = world
    path = tmp_path / "annotations.csv"
    write_rows(path, ["seriesuid", "coordX", "coordY", "coordZ"], [ROW[:4]])
    err = refused(["label", "--work", str(work), "--annotations", str(path)], capsys)
    assert "no column diameter_mm" in err
    write_rows(path, ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], [ROW])
    candidates = tmp_path / "candidates.csv"
    write_rows(candidates, ["seriesuid", "coordX", "coordY", "coordZ", "class"],
               [[*ROW[:4], "nodule"]])
    err = refused(["label", "--work", str(work), "--annotations", str(path), "--candidates",
                   str(candidates)], capsys)
    assert f"{candidates}: line 2: class 'nodule' is not an integer" in err


def test_commands_refuse_a_work_without_their_inputs(tmp_path, capsys):
    root, work = tmp_path / "LIDC-IDRI", tmp_path / "work"
    build(root, IDENTITY)
    run(root, work, index, annotations)
    path = tmp_path / "annotations.csv"
    write_rows(path, ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], [ROW])
    err = refused(["label", "--work", str(work), "--annotations", str(path)], capsys)
    assert "patches.csv: missing: run the crop stage first" in err
    # lesions.csv belongs to the annotations set: changed by hand, it is refused.
    with open(work / "lesions.csv", "a") as f:
        f.write(f"{SERIES},1,2,3,4,{PATIENT},9,0,3,[],,,,\n")
    err = refused(["export", "--work", str(work)], capsys)
    assert "lesions.csv: changed since the annotations stage wrote it" in err


def test_without_images_lesions_csv_has_the_xml_z_and_no_coordinates(tmp_path, capsys):
    root, work = tmp_path / "LIDC-IDRI", tmp_path / "xml-work"
    build(root, IDENTITY)
    assert annotations.main(["--xml", str(root), "--work", str(work), "--workers", "1"]) == 0
    rows = read_csv(work / "lesions.csv")
    assert [(r["lesion_id"], r["label"], r["readers"], r["z_first"], r["z_last"])
            for r in rows] == [("0", "0", "3", "-97.5", "-92.5"), ("0", "2", "1", "-95", "-95"),
                               ("1", "1", "2", "-90", "-90")]
    for r in rows:
        assert [r[k] for k in ("coordX", "coordY", "coordZ", "diameter_mm", "slice_first",
                               "slice_last")] == [""] * 6
    assert "lesions.csv" in (work / "annotations.manifest.json").read_text()
    run(root, work, index)  # an index, so that only the missing geometry stops export
    err = refused(["export", "--work", str(work)], capsys)
    assert "come from the XML-only archive: they have no world coordinates" in err


def test_a_subcommand_is_required(capsys):
    with pytest.raises(SystemExit) as exit_:
        luna16.main([])
    assert exit_.value.code == 2


def test_patch_origins_of_before_world_coordinates_still_load():
    origin = PatchOrigin(mark_id=1, patient_id=PATIENT, series_uid=SERIES, slice_index=2,
                         row=50.0, col=60.0, label=0, lesion_id=0, reader="001:0")
    assert (origin.world_x, origin.world_y, origin.world_z) == (None, None, None)
