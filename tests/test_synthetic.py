"""Tests of the demo cohort generator (lidc.synthetic) and its command (tools/synthesize.py).

One tiny cohort (4 patients of 128 x 128 x 16, covering the four pixel storages, a descriptive
folder layout and a chest X-ray study) is written once per module and read back the way the
pipeline reads the real collection: pydicom for the slices, lxml for the reads.
"""
import json

import numpy as np
import pydicom
import pytest
from lxml import etree

from lidc import synthetic
from lidc.errors import LidcError
from lidc.records import CLASS_NAMES
from tools import synthesize

SIZE, SLICES, PATIENTS = 128, 16, 4
NS = {"n": synthetic.LIDC_NS}
REQUIRED_TAGS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                 "FrameOfReferenceUID", "Modality", "PatientID", "ImagePositionPatient",
                 "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SliceLocation",
                 "Rows", "Columns", "BitsAllocated", "PixelRepresentation", "RescaleSlope",
                 "RescaleIntercept", "WindowCenter", "WindowWidth", "InstanceNumber")


def write(root, patients=PATIENTS, **kwargs):
    kwargs = {"size": SIZE, "slices": SLICES, **kwargs}
    return synthetic.write_cohort(root, patients=patients, **kwargs)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("lidc")
    summary = write(root)
    return root, summary, json.loads((root / "cohort.json").read_text())


def read_series(folder):
    """(datasets sorted by ascending z, HU volume), as the pipeline's convention has it."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    datasets.sort(key=lambda dataset: float(dataset.ImagePositionPatient[2]))
    hu = np.stack([dataset.pixel_array * float(dataset.RescaleSlope)
                   + float(dataset.RescaleIntercept) for dataset in datasets])
    return datasets, hu


def patient_series(root, truth, name):
    return read_series(root / truth["patients"][name]["folder"])


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_summary_counts_every_kind(cohort):
    _, summary, truth = cohort
    assert summary["patients_written"] == PATIENTS and summary["patients_skipped"] == 0
    assert sorted(truth["patients"]) == [synthetic.patient_id(k) for k in range(1, PATIENTS + 1)]
    for name in CLASS_NAMES:
        assert summary["lesions"][name] > 0
        assert summary["marks"][name] > 0
    assert summary["patches_expected"]["nodule >= 3 mm"] > summary["marks"]["nodule >= 3 mm"]


def test_tcia_layout(cohort):
    root, _, truth = cohort
    assert not list(root.glob(".*")), "no temporary folders are left behind"
    for name, entry in truth["patients"].items():
        folder = root / entry["folder"]
        names = sorted(p.name for p in folder.glob("*.dcm"))
        assert names == [f"1-{i:03d}.dcm" for i in range(1, SLICES + 1)]
        assert (root / entry["xml"]).parent == folder
        study, series = folder.parent.name, folder.name
        if int(name[-4:]) % 3 == 0:
            assert study.startswith("01-01-2000-NA-") and ".000000-NA-" in series
        else:
            assert (study, series) == (entry["study_uid"], entry["series_uid"])


def test_dicom_headers_and_unique_uids(cohort):
    root, _, truth = cohort
    sops = set()
    numbering_differs = False
    for name, entry in truth["patients"].items():
        folder = root / entry["folder"]
        first = pydicom.dcmread(folder / "1-001.dcm")
        last = pydicom.dcmread(folder / f"1-{SLICES:03d}.dcm")
        assert float(first.ImagePositionPatient[2]) > float(last.ImagePositionPatient[2])
        for i, path in enumerate(sorted(folder.glob("*.dcm")), start=1):
            dataset = pydicom.dcmread(path)
            for tag in REQUIRED_TAGS:
                assert tag in dataset, f"{path.name} lacks {tag}"
            assert dataset.file_meta.MediaStorageSOPClassUID == synthetic.CT_IMAGE_STORAGE
            assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
            assert dataset.SOPClassUID == synthetic.CT_IMAGE_STORAGE and dataset.Modality == "CT"
            assert dataset.PatientID == name and dataset.BitsAllocated == 16
            assert (dataset.StudyInstanceUID, dataset.SeriesInstanceUID) == (entry["study_uid"],
                                                                   entry["series_uid"])
            assert dataset.Rows == dataset.Columns == SIZE
            assert float(dataset.SliceLocation) == float(dataset.ImagePositionPatient[2])
            numbering_differs |= dataset.InstanceNumber != i
            sops.add(dataset.SOPInstanceUID)
    assert len(sops) == PATIENTS * SLICES
    assert numbering_differs, "InstanceNumber must not always follow the file order"


def test_storage_variants(cohort):
    root, _, truth = cohort
    seen = set()
    for k, name in enumerate(sorted(truth["patients"]), start=1):
        datasets, _ = patient_series(root, truth, name)
        dataset = datasets[0]
        storage = synthetic.STORAGE[(k - 1) % len(synthetic.STORAGE)]
        assert truth["patients"][name]["storage"] == storage.name
        assert dataset.pixel_array.dtype == np.dtype(storage.dtype)
        assert float(dataset.RescaleSlope) == storage.slope
        assert float(dataset.RescaleIntercept) == storage.intercept
        if storage.padding is not None:
            assert dataset.PixelPaddingValue == storage.padding
            assert dataset.pixel_array[0, 0] == storage.padding
        seen.add(storage.name)
    assert len(seen) == 4


@pytest.mark.parametrize("k", range(1, PATIENTS + 1))
def test_hounsfield_units_are_anatomical(cohort, k):
    root, _, truth = cohort
    name = synthetic.patient_id(k)
    _, hu = patient_series(root, truth, name)
    spacing = truth["patients"][name]["pixel_spacing"]
    mid, z = SIZE // 2, SLICES // 2
    air = hu[:, int(0.08 * SIZE):int(0.12 * SIZE), mid - 5:mid + 5]  # in front of the chest
    assert abs(np.mean(air) + 1000) < 30
    # The right lung (image left) lies about 66 mm from the midline at the image's middle row.
    col = int(round(mid - 66 / spacing))
    lung = hu[z, mid - 3:mid + 4, col - 3:col + 4]
    assert -920 < np.median(lung) < -780
    spine = hu[z, mid:, mid - 2:mid + 3]  # the posterior midline
    assert spine.max() > 300


def test_xml_is_lidc_and_matches_the_series(cohort):
    root, _, truth = cohort
    for name, entry in truth["patients"].items():
        datasets, hu = patient_series(root, truth, name)
        z_of = {dataset.SOPInstanceUID: (i, float(dataset.ImagePositionPatient[2]))
                for i, dataset in enumerate(datasets)}
        xml = etree.parse(str(root / entry["xml"])).getroot()
        assert xml.tag == f"{{{synthetic.LIDC_NS}}}LidcReadMessage" and xml.get("uid")
        header = xml.find("n:ResponseHeader", NS)
        assert header.findtext("n:SeriesInstanceUid", namespaces=NS) == entry["series_uid"]
        assert header.findtext("n:StudyInstanceUID", namespaces=NS) == entry["study_uid"]
        sessions = xml.findall("n:readingSession", NS)
        assert 1 <= len(sessions) <= 4 and len(sessions) == entry["readers"]
        for session in sessions:
            assert session.findtext("n:servicingRadiologistID", namespaces=NS)
            for element in session.findall("n:unblindedReadNodule", NS) + \
                    session.findall("n:nonNodule", NS):
                for roi in element.findall("n:roi", NS) or [element]:
                    sop = roi.findtext("n:imageSOP_UID", namespaces=NS)
                    assert sop in z_of
                    assert float(roi.findtext("n:imageZposition", namespaces=NS)) == z_of[sop][1]


def contours(xml):
    """(sop, inclusion, points) of every ROI with more than one edgeMap point."""
    for roi in xml.iterfind(".//n:unblindedReadNodule/n:roi", NS):
        points = np.array([[int(e.findtext("n:xCoord", namespaces=NS)),
                            int(e.findtext("n:yCoord", namespaces=NS))]
                           for e in roi.iterfind("n:edgeMap", NS)])
        if len(points) > 1:
            yield (roi.findtext("n:imageSOP_UID", namespaces=NS),
                   roi.findtext("n:inclusion", namespaces=NS) == "TRUE", points)


def test_contours_outline_dense_tissue(cohort):
    """Contours are dense closed outlines in the image around tissue denser than lung (-850).

    Readers also outline a nodule's faint end slices, as in LIDC, so a few centroids sit on
    partial-volume pixels barely above lung; most sit on the nodule."""
    root, _, truth = cohort
    centres = []
    for entry in truth["patients"].values():
        datasets, hu = read_series(root / entry["folder"])
        index = {dataset.SOPInstanceUID: i for i, dataset in enumerate(datasets)}
        xml = etree.parse(str(root / entry["xml"])).getroot()
        for sop, inclusion, points in contours(xml):
            assert points.min() >= 0 and points.max() < SIZE
            assert np.array_equal(points[0], points[-1]), "outlines are closed"
            steps = np.abs(np.diff(points, axis=0)).max(axis=1)
            assert steps.max() <= 1, "outlines are dense, pixel to pixel"
            if inclusion:
                col, row = np.round(points[:-1].mean(axis=0)).astype(int)
                centres.append(hu[index[sop], row - 1:row + 2, col - 1:col + 2].mean())
    centres = np.array(centres)
    assert len(centres) > 20
    assert np.median(centres) > -650
    assert np.mean(centres > -800) > 0.8


def test_marks_agree_with_ground_truth(cohort):
    root, _, truth = cohort
    for entry in truth["patients"].values():
        xml = etree.parse(str(root / entry["xml"])).getroot()
        rois = [r for r in xml.iterfind(".//n:unblindedReadNodule", NS)]
        points = sum(1 for r in rois if len(r.findall(".//n:edgeMap", NS)) == 1)
        assert points == entry["marks"]["1"]
        assert len(rois) - points == entry["marks"]["0"]
        assert len(xml.findall(".//n:nonNodule", NS)) == entry["marks"]["2"]
        for lesion in entry["lesions"]:
            assert lesion["readers"], "every lesion is marked by at least one reader"
            z, row, col = lesion["center"]
            assert 0 <= z < SLICES and 0 <= row < SIZE and 0 <= col < SIZE
            if lesion["kind"] == 0:
                assert 3.0 <= lesion["diameter_mm"] <= 35.0
            if lesion["kind"] == 1:
                assert lesion["diameter_mm"] < 3.0


def test_chest_xray_study_is_present(cohort):
    root, _, truth = cohort
    cxr = truth["patients"]["LIDC-IDRI-0002"]["cxr"]
    assert cxr is not None and truth["patients"]["LIDC-IDRI-0001"]["cxr"] is None
    (image,) = (root / cxr["folder"]).glob("*.dcm")
    dataset = pydicom.dcmread(image)
    assert dataset.Modality in ("CR", "DX") and dataset.pixel_array.ndim == 2
    assert dataset.SeriesInstanceUID == cxr["series_uid"]
    assert dataset.StudyInstanceUID != truth["patients"]["LIDC-IDRI-0002"]["study_uid"]
    xml = etree.parse(str(root / cxr["xml"])).getroot()
    assert xml.tag == f"{{{synthetic.IDRI_NS}}}IdriReadMessage"
    ct_series = xml.findtext(f"{{{synthetic.IDRI_NS}}}ResponseHeader/"
                             f"{{{synthetic.IDRI_NS}}}CTSeriesInstanceUid")
    assert ct_series == truth["patients"]["LIDC-IDRI-0002"]["series_uid"]
    assert xml.findall(f"{{{synthetic.IDRI_NS}}}CXRreadingSession")


def test_same_seed_same_files_other_seed_different(tmp_path):
    write(tmp_path / "a", patients=1, size=96, slices=8)
    write(tmp_path / "b", patients=1, size=96, slices=8)
    write(tmp_path / "c", patients=1, size=96, slices=8, seed=1)
    a, b = (files_of(tmp_path / r / "LIDC-IDRI-0001") for r in "ab")
    assert a == b
    (dcm_a,) = [v for k, v in a.items() if k.name == "1-004.dcm"]
    (dcm_c,) = [v for p, v in files_of(tmp_path / "c" / "LIDC-IDRI-0001").items()
                if p.name == "1-004.dcm"]
    assert dcm_a != dcm_c


def test_adding_patients_leaves_earlier_ones_unchanged(cohort, tmp_path):
    root, _, _ = cohort
    write(tmp_path, patients=1)
    assert files_of(tmp_path / "LIDC-IDRI-0001") == files_of(root / "LIDC-IDRI-0001")


def test_two_workers_write_the_same_files_as_one(cohort, tmp_path):
    root, summary, _ = cohort
    seen = []
    again = write(tmp_path, workers=2, on_patient=lambda name, written: seen.append(name))
    assert files_of(tmp_path) == files_of(root)  # cohort.json included
    assert again["files"] == summary["files"]
    assert seen == [synthetic.patient_id(k) for k in range(1, PATIENTS + 1)]


def test_resume_skips_complete_patients(tmp_path):
    first = write(tmp_path, patients=2, size=96, slices=8)
    assert (first["patients_written"], first["patients_skipped"]) == (2, 0)
    marker = next((tmp_path / "LIDC-IDRI-0001").rglob("1-001.dcm"))
    stamp = marker.stat().st_mtime_ns
    seen = []
    again = write(tmp_path, patients=3, size=96, slices=8,
                  on_patient=lambda name, written: seen.append((name, written)))
    assert (again["patients_written"], again["patients_skipped"]) == (1, 2)
    assert seen == [("LIDC-IDRI-0001", False), ("LIDC-IDRI-0002", False),
                    ("LIDC-IDRI-0003", True)]
    assert marker.stat().st_mtime_ns == stamp
    forced = write(tmp_path, patients=3, size=96, slices=8, force=True)
    assert forced["patients_written"] == 3
    assert not list(tmp_path.glob(".*"))


def test_a_smaller_cohort_removes_the_patients_past_it_and_nothing_else(tmp_path):
    write(tmp_path, patients=3, size=64, slices=8)
    (tmp_path / "notes.txt").write_text("mine")
    smaller = write(tmp_path, patients=2, size=96, slices=8)  # another recipe, fewer patients
    assert (smaller["patients_written"], smaller["patients_removed"]) == (2, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["LIDC-IDRI-0001", "LIDC-IDRI-0002", "cohort.json", "notes.txt"]
    truth = json.loads((tmp_path / "cohort.json").read_text())
    assert {e["made_with"]["size"] for e in truth["patients"].values()} == {96}
    assert sorted(truth["patients"]) == ["LIDC-IDRI-0001", "LIDC-IDRI-0002"]


def test_interrupted_patient_is_rewritten(tmp_path):
    write(tmp_path, patients=1, size=96, slices=8)
    truth = json.loads((tmp_path / "cohort.json").read_text())
    truth["patients"]["LIDC-IDRI-0001"]["state"] = "writing"  # killed before it was recorded
    (tmp_path / "cohort.json").write_text(json.dumps(truth))
    (tmp_path / ".LIDC-IDRI-0001.part").mkdir()  # and a half-written copy beside it
    result = write(tmp_path, patients=1, size=96, slices=8)
    assert result["patients_written"] == 1
    assert not (tmp_path / ".LIDC-IDRI-0001.part").exists()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "LIDC-IDRI-0001").mkdir()
    with pytest.raises(LidcError, match="LIDC-IDRI-0001"):
        write(tmp_path, patients=1, size=96, slices=8)


def test_command_line(tmp_path, capsys):
    assert synthesize.main(["--root", str(tmp_path), "--patients", "1", "--size", "64",
                            "--slices", "8"]) == 0
    assert "patients written: 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        synthesize.main(["--root", str(tmp_path), "--size", "10"])
    assert exit_.value.code == 2
