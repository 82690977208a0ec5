"""Checks against the real LIDC-IDRI samples in ../shared/lidc-samples (skipped when absent)."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lidc import reads
from lidc.errors import LidcError
from lidc.io import read_csv
from tools import annotations, crop, index, luna16

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "lidc-samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="no ../shared/lidc-samples here")


def test_xml_reads_give_the_independent_counts():
    counts, sessions, series, cxr = np.zeros(3, int), 0, set(), 0
    for path in sorted((SAMPLES / "xml").rglob("*.xml")):
        try:
            read = reads.parse_read(path)
        except LidcError as e:
            assert "chest X-ray" in e.reason
            cxr += 1
            continue
        assert read.problems == []  # nothing in a real read is left out
        sessions += len(read.sessions)
        series.add(read.series_uid)
        counts += np.bincount([m.label for m in read.marks], minlength=3)
    # The samples' README, counting every copy of every session in every file: 37 contoured,
    # 81 single-point, 193 non-nodule marks, 39 sessions of 7 series in 9 CT reads; two chest
    # X-ray reads. (Each session once: tests/test_corpus_reads.py.)
    assert counts.tolist() == [37, 81, 193]
    assert (sessions, len(series), cxr) == (39, 7, 2)


def test_real_series_through_index_annotations_crop(tmp_path):
    root, work = SAMPLES / "LIDC-IDRI", tmp_path
    assert index.main(["--root", str(root), "--work", str(work), "--workers", "2"]) == 0
    lines = (work / "index.csv").read_text().splitlines()
    assert len(lines) == 2 and ",140,512,512,0.820312,2.5,-379,-31.5," in lines[1]
    assert annotations.main(["--work", str(work), "--workers", "1"]) == 0
    rows = read_csv(work / "annotations.csv")
    # Every region of the real read is on the slice both its SOP UID and its z name; each lesion
    # holds one mark per reader; nodules >= 3 mm group as pylidc's cluster_annotations has them.
    assert {(r["status"], r["note"]) for r in rows} == {("", "")}
    assert len({(r["lesion_id"], r["reader"]) for r in rows}) == len({r["mark_id"] for r in rows})
    nodules = Counter(r["lesion_id"] for r in {r["mark_id"]: r for r in rows}.values()
                      if r["label"] == "0")
    assert sorted(nodules.values(), reverse=True) == [4, 4, 4, 1]
    assert crop.main(["--work", str(work), "--workers", "1"]) == 0
    patches = np.load(work / "patches" / "patches.npy").astype(float)
    labels = np.array([int(line.split(",")[7]) for line in
                       (work / "patches" / "patches.csv").read_text().splitlines()[1:]])

    def centre_and_border(kind):
        p = patches[labels == kind]
        return (p[:, 24:40, 24:40].mean(),
                np.concatenate([p[:, :8], p[:, -8:]], axis=1).mean())

    # The samples' README: contoured nodules -416 HU in the centre against -577 along the top
    # and bottom rows; non-nodules -464 against -561.
    np.testing.assert_allclose(centre_and_border(0), (-416, -577), atol=5)
    np.testing.assert_allclose(centre_and_border(2), (-464, -561), atol=5)


def test_real_lesions_in_the_world_agree_with_luna16(tmp_path):
    """LIDC-IDRI-0003's three LUNA16 nodules (>= 3 mm, marked by 3 or 4 readers): our centres
    (the mean of the readers' centroids in world mm) lie within 2 mm of LUNA16's, our diameters
    (the readers' mean volume-equivalent diameter) within 5% of LUNA16's; measured: 0.31, 0.10
    and 0.19 mm; +3.7%, +2.5% and +1.1%."""
    root, work = SAMPLES / "LIDC-IDRI", tmp_path / "work"
    common = ["--work", str(work), "--workers", "1"]
    assert index.main(["--root", str(root), *common]) == 0
    assert annotations.main(common) == 0
    ours = [r for r in read_csv(work / "lesions.csv") if r["label"] == "0" and
            int(r["readers"]) >= 3]
    luna = read_csv(SAMPLES / "luna16-annotations-0003.csv")
    assert len(ours) == len(luna) == 3

    def position(row):
        return np.array([float(row[k]) for k in ("coordX", "coordY", "coordZ")])

    matched = set()
    for nodule in luna:
        mine = min(ours, key=lambda r: np.linalg.norm(position(r) - position(nodule)))
        matched.add(mine["lesion_id"])
        assert np.linalg.norm(position(mine) - position(nodule)) < 2.0
        assert float(mine["diameter_mm"]) == pytest.approx(float(nodule["diameter_mm"]),
                                                           rel=0.05)
    assert len(matched) == 3
    out = tmp_path / "annotations.csv"
    assert luna16.main(["export", "--work", str(work), "--out", str(out)]) == 0
    exported = out.read_text().splitlines()
    assert exported[0] == (SAMPLES / "luna16-annotations-0003.csv").read_text().splitlines()[0]
    assert len(exported) == 4
    # Patches labelled by LUNA16's own file and by ours: the same patches lie in a nodule, all of
    # them of the three nodules (their end slices may lie beyond the volume-equivalent sphere).
    assert crop.main(common) == 0
    inside = []
    for annotations_csv in (SAMPLES / "luna16-annotations-0003.csv", out):
        labels = tmp_path / "labels.csv"
        assert luna16.main(["label", "--work", str(work), "--annotations",
                            str(annotations_csv), "--out", str(labels)]) == 0
        inside.append({r["patch_index"] for r in read_csv(labels) if r["in_nodule"] == "1"})
    assert inside[0] == inside[1]
    patches = read_csv(work / "patches" / "patches.csv")
    of_nodules = {p["patch_index"] for p in patches
                  if p["lesion_id"] in matched and p["label"] == "0"}
    assert inside[0] <= of_nodules and len(inside[0]) >= 0.85 * len(of_nodules)
