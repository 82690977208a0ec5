"""Checks against the real LIDC-IDRI samples in ../shared/lidc-samples (skipped when absent)."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lidc import reads
from lidc.errors import LidcError
from lidc.io import read_csv
from tools import annotations, crop, index

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
