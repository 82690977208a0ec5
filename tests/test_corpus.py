"""The corpus of bad and odd inputs (issue 5), each built here and run through the real stages.

A small good cohort (4 patients, 6 slices of 128x128, one XML read each) is run once as the
reference. Each case builds the same cohort, adds one bad or odd input, and runs index,
annotations, crop and dataset. A bad input must leave every stage exiting 0, be named in
WORK/skipped/STAGE.csv with its reason, and leave the outputs for the good inputs exactly as
they were; an odd but valid input must give the outputs of its plain form.
"""
import os
import pickle
import re
import resource
import shutil
import socket
import threading
import time

import numpy as np
import pydicom
import pytest
from pydicom import uid as uids
from pydicom.encaps import encapsulate

from lidc import reads, series as dicom
from lidc import manifest
from lidc.io import read_csv
from lidc.records import OUTSIDE, SMALL_NODULE, UNMATCHED
from lidc.stages.index import read_index
from tests.helpers import lidc_xml, sop_uid, square, write_slice
from tools import annotations, cli, crop, dataset, index

PATIENTS = (1, 2, 3, 4)
Z = [-10.0 - 5.0 * k for k in range(6)]  # CT_small.dcm's slices are 5 mm thick


def extra_uid(k):
    """Series UIDs of added series: they sort after every good one, so the good marks keep their
    ids and order; distinct, so that every bad input can go into one cohort at once."""
    return f"1.2.826.0.1.3680043.8.498.9{k}"


def series_uid(n):
    return f"1.2.826.0.1.3680043.8.498.1{n}"


def patient_id(n):
    return f"LIDC-IDRI-{n:04d}"


def folder(root, n):
    return root / patient_id(n) / "study" / f"series{n}"


def xml_path(root, n):
    return folder(root, n) / f"{n:03d}.xml"


def image(n, k):
    """A distinct HU image per patient and slice, so that a patch from the wrong slice shows."""
    ramp = np.add.outer(np.arange(128), 2 * np.arange(128)) % 97
    return (-900 + 100 * n + 10 * k + ramp).astype(np.int16)


def sessions(n):
    """Two readers: a contoured nodule on two slices, a single-point nodule, a non-nodule."""
    s = lambda k: sop_uid(series_uid(n), k)  # noqa: E731
    nodule = {"kind": "nodule", "id": "N1", "malignancy": 4,
              "rois": [(Z[1], s(1), True, square(60, 50, 4)),
                       (Z[2], s(2), True, square(61, 50, 5))]}
    point = {"kind": "nodule", "id": "P1", "rois": [(Z[3], s(3), True, [(100, 30)])]}
    non = {"kind": "non", "id": "X1", "z": Z[4], "sop": s(4), "xy": (20, 110)}
    jittered = dict(nodule, rois=[(Z[1], s(1), True, square(59, 51, 4)),
                                  (Z[2], s(2), True, square(60, 51, 5))])
    return [[nodule, point, non], [jittered]]


def build(root):
    for n in PATIENTS:
        for k, z in enumerate(Z):
            write_slice(_mkdir(folder(root, n)) / f"1-{k + 1:03d}.dcm", z, k, series_uid(n),
                        hu=image(n, k), patient=patient_id(n))
        xml_path(root, n).write_text(lidc_xml(sessions(n), series_uid(n)))
    return root


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_stages(root, work, workers=1):
    common = ["--work", str(work), "--workers", str(workers)]
    assert index.main(["--root", str(root), *common]) == 0
    assert annotations.main(common) == 0
    assert crop.main(common) == 0
    assert dataset.main(["--work", str(work)]) == 0


class Outputs:
    """What a run produced for people and for training, with the root path made neutral."""

    def __init__(self, root, work):
        self.root, self.work = root, work
        self.annotations = self._rows("annotations.csv")
        self.patch_rows = self._rows("patches/patches.csv")
        self.patches = np.load(work / "patches" / "patches.npy")
        self.dataset = {side: dict(np.load(work / "dataset" / f"{side}.npz"))
                        for side in ("train", "val", "test")}

    def _rows(self, name):
        return [{k: v.replace(str(self.root), "ROOT") for k, v in r.items()}
                for r in read_csv(self.work / name)]

    def skipped(self, stage):
        return self._rows(f"skipped/{stage}.csv")

    def patch_by_key(self):
        """(mark_id, row, col) -> (label, patch bytes): patches independent of their order."""
        return {(r["mark_id"], r["row"], r["col"]): (r["label"], self.patches[i].tobytes())
                for i, r in enumerate(self.patch_rows)}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    base = tmp_path_factory.mktemp("good")
    root, work = build(base / "LIDC-IDRI"), base / "work"
    run_stages(root, work)
    out = Outputs(root, work)
    assert len(out.patch_rows) == 4 * 6 and not any(out.skipped(s) for s in ("crop",))
    return out


@pytest.fixture
def cohort(tmp_path):
    return build(tmp_path / "LIDC-IDRI"), tmp_path / "work"


def assert_same_outputs(good, out, marks_added=False):
    """The good inputs' outputs are exactly the reference's; bad marks only ever come after."""
    if marks_added:
        n_good = len({r["mark_id"] for r in good.annotations})
        assert out.annotations[:len(good.annotations)] == good.annotations
        assert all(int(r["mark_id"]) >= n_good for r in out.annotations[len(good.annotations):])
    else:
        assert out.annotations == good.annotations
    assert out.patch_rows == good.patch_rows
    np.testing.assert_array_equal(out.patches, good.patches)
    for side, arrays in good.dataset.items():
        assert arrays.keys() == out.dataset[side].keys()
        for name, array in arrays.items():
            np.testing.assert_array_equal(out.dataset[side][name], array, err_msg=name)


def assert_reported(out, stage, path, reason):
    rows = out.skipped(stage)
    name = str(path).replace(str(out.root), "ROOT")
    assert any(name in r["path"] and re.search(reason, r["reason"]) for r in rows), rows


# A trap for hostile XML: a FIFO and a listening socket its entities point at. -----------------

def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trap:
    """Shows whether anything opened a local file (a FIFO: its writer end opens only while a
    reader waits) or connected to a local port, and whether memory blew up."""

    def __init__(self, folder):
        self.fifo = _mkdir(folder) / "secret.fifo"
        os.mkfifo(self.fifo)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/secret"
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        self.rss = max_rss_mb()

    def _watch(self):
        while not self._stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody is reading it
                time.sleep(0.005)
                continue
            self.opened.set()
            os.close(fd)  # the reader sees an empty file and goes on

    def assert_untouched(self):
        assert not self.opened.is_set(), "an XML entity made the parser open a local file"
        with pytest.raises(BlockingIOError):
            self.server.accept()  # a connection attempt would be waiting here
        assert max_rss_mb() - self.rss < 200, "memory grew while parsing"

    def close(self):
        self._stop.set()
        self._watcher.join()
        self.server.close()


@pytest.fixture
def trap(tmp_path):
    t = Trap(tmp_path / "trap")
    yield t
    t.close()


# The bad inputs: each adds one thing to the cohort and returns the path the report must name. ---

def extra_slice(root, name, uid=None, **kw):
    """A slice of patient 1's folder above every good slice, so dropping it changes nothing."""
    return write_slice(folder(root, 1) / name, 40.0, 90, uid or series_uid(1),
                       patient=patient_id(1), **kw)


def edit(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)
    return path


def truncated(root, trap):
    path = extra_slice(root, "1-900.dcm")
    path.write_bytes(path.read_bytes()[:20000])  # the pixels start at byte 6226
    return path


def no_pixel_data(root, trap):
    """A 16x16 image: its header alone outweighs its pixels, so the file size cannot tell."""
    def strip(ds):
        del ds.PixelData
    return edit(extra_slice(root, "1-901.dcm", hu=np.zeros((16, 16), np.int16)), strip)


def not_dicom(root, trap):
    path = folder(root, 1) / "1-902.dcm"
    path.write_bytes(b"GIF89a not a DICOM file at all\n" * 40)
    return path


def named_pipe(root, trap):
    path = folder(root, 1) / "1-907.dcm"
    os.mkfifo(path)
    return path


def non_ct_modality(root, trap):
    for k, z in enumerate((40.0, 45.0)):
        write_slice(folder(root, 1) / f"mr-{k}.dcm", z, k, extra_uid(1), modality="MR",
                    patient=patient_id(1))
    return folder(root, 1)


def non_image_object(root, trap):
    def strip(ds):
        ds.Modality = "SR"
        del ds.Rows, ds.Columns, ds.PixelData
    return edit(extra_slice(root, "sr.dcm", uid=extra_uid(2)), strip)


def two_series_in_one_folder(root, trap):
    for k, z in enumerate((40.0, 45.0, 50.0)):
        write_slice(folder(root, 1) / f"2-{k:03d}.dcm", z, k, extra_uid(3),
                    patient=patient_id(1))
    return folder(root, 1)


def duplicated_slice(root, trap):
    copy = folder(root, 1) / "1-999.dcm"
    shutil.copyfile(folder(root, 1) / "1-003.dcm", copy)
    return copy


def other_spacing(root, trap):
    return extra_slice(root, "1-903.dcm", spacing=0.5)


def other_matrix(root, trap):
    return extra_slice(root, "1-904.dcm", hu=np.full((64, 64), -850, np.int16))


def _compressed(path, syntax, frame):
    def compress(ds):
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    return edit(path, compress)


def undecodable_compression(root, trap):
    missing = [s for s in (uids.JPEGLSLossless, uids.JPEG2000Lossless, uids.JPEGLosslessSV1)
               if dicom._missing_decoder(s)]
    if not missing:
        pytest.skip("every compression tried has a decoder installed here")
    return _compressed(extra_slice(root, "1-905.dcm"), missing[0], b"\xff\x4f" + b"junk" * 64)


def damaged_compressed_pixels(root, trap):
    """Decodable syntax, junk data: only reading the pixels shows it, so a marked slice of an
    extra series carries it (the crop stage must report it and keep everything else)."""
    target = root / "LIDC-IDRI-0094" / "study" / "series94"
    path = _compressed(write_slice(_mkdir(target) / "1-001.dcm", Z[0], 0, extra_uid(4),
                                   patient="LIDC-IDRI-0094"),
                       uids.RLELossless, b"\x01\x00\x00\x00" + b"junk" * 50)
    non = {"kind": "non", "id": "X", "z": Z[0], "sop": sop_uid(extra_uid(4), 0), "xy": (64, 64)}
    (target / "094.xml").write_text(lidc_xml([[non]], extra_uid(4)))
    return path


def short_pixel_data(root, trap):
    return edit(extra_slice(root, "1-906.dcm"),
                lambda ds: setattr(ds, "PixelData", ds.PixelData[:-1000]))


def extra_xml(name, text):
    def add(root, trap):
        path = folder(root, 1) / name
        content = text(trap) if callable(text) else text
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path
    return add


def with_doctype(doctype, entity="&e;"):
    """Patient 1's own read, with a document type whose entity stands in a nodule id."""
    def text(trap):
        marks = sessions(1)
        marks[0][0] = dict(marks[0][0], id=entity)
        return lidc_xml(marks, series_uid(1)).replace(
            "?>", "?>\n" + doctype.format(fifo=trap.fifo, url=trap.url), 1)
    return text


LAUGHS = ('<!DOCTYPE r [<!ENTITY a "lollollollollollollollollollol">' + "".join(
    f'<!ENTITY {b} "{("&" + a + ";") * 10}">' for a, b in zip("abcdefghi", "bcdefghij"))
    + '<!ENTITY e "&j;">]>')


def too_large(root, trap):
    path = folder(root, 1) / "huge.xml"
    with open(path, "wb") as f:
        f.truncate(reads.MAX_XML_BYTES + 1)  # sparse: costs no disk and is never read
    return path


def patient4_read(*extra_sessions):
    """Patient 4's read (the last series) with extra reading sessions after the good ones."""
    def rewrite(root, trap):
        xml_path(root, 4).write_text(lidc_xml(sessions(4) + list(extra_sessions), series_uid(4)))
        return xml_path(root, 4)
    return rewrite


def second_read_of_patient4(text):
    def add(root, trap):
        path = folder(root, 4) / "zz.xml"
        path.write_text(text)
        return path
    return add


def series_without_xml(root, trap):
    target = root / "LIDC-IDRI-0095" / "study" / "series95"
    for k, z in enumerate(Z[:3]):
        write_slice(_mkdir(target) / f"1-{k:03d}.dcm", z, k, extra_uid(5),
                    patient="LIDC-IDRI-0095")
    return target


UNMATCHED_MARK = {"kind": "non", "id": "far", "z": 500.0, "sop": "1.2.3.404", "xy": (64, 64)}
OUTSIDE_MARK = {"kind": "nodule", "id": "out", "malignancy": 3,
                "rois": [(Z[1], sop_uid(series_uid(4), 1), True, square(900, 700, 4))]}
JUNK_READ = lidc_xml(sessions(4), series_uid(4)).replace("<xCoord>20</xCoord>",
                                                         "<xCoord>twenty</xCoord>")

# (add the input, stage that reports it, reason, whether its marks appear in annotations.csv)
BAD = [
    pytest.param(truncated, "index", "truncated", False, id="dicom-truncated"),
    pytest.param(no_pixel_data, "index", "without pixel data", False, id="dicom-no-pixels"),
    pytest.param(not_dicom, "index", "not a readable DICOM", False, id="not-dicom"),
    pytest.param(named_pipe, "index", "not a regular file", False, id="named-pipe"),
    pytest.param(non_ct_modality, "index", "modality MR, not CT", False, id="dicom-non-ct"),
    pytest.param(non_image_object, "index", "without an image", False, id="dicom-no-image"),
    pytest.param(two_series_in_one_folder, "annotations", "has no XML read", False,
                 id="dicom-two-series-one-folder"),
    pytest.param(duplicated_slice, "index", "duplicate slice", False, id="dicom-duplicate"),
    pytest.param(other_spacing, "index", "spacing/matrix", False, id="dicom-other-spacing"),
    pytest.param(other_matrix, "index", "spacing/matrix", False, id="dicom-other-matrix"),
    pytest.param(undecodable_compression, "index", "no installed decoder", False,
                 id="dicom-no-decoder"),
    pytest.param(damaged_compressed_pixels, "crop", "cannot decode the pixel data", True,
                 id="dicom-damaged-compressed"),
    pytest.param(short_pixel_data, "index", "shorter than", False, id="dicom-short-pixels"),
    pytest.param(extra_xml("bad.xml", "<LidcReadMessage><ResponseHeader>"), "index",
                 "not well-formed", False, id="xml-malformed"),
    pytest.param(extra_xml("empty.xml", ""), "index", "empty file", False, id="xml-empty"),
    pytest.param(extra_xml("cxr.xml", lidc_xml(sessions(1), series_uid(1),
                                               root="IdriReadMessage")),
                 "index", "chest X-ray", False, id="xml-cxr"),
    pytest.param(extra_xml("other.xml", lidc_xml(sessions(1), "1.2.3.4.5")), "index",
                 "no CT series with SeriesInstanceUid", False, id="xml-unknown-series"),
    pytest.param(too_large, "index", "far larger", False, id="xml-too-large"),
    pytest.param(extra_xml("xxe-file.xml",
                           with_doctype('<!DOCTYPE r [<!ENTITY e SYSTEM "file://{fifo}">]>')),
                 "index", "document type", False, id="xxe-file"),
    pytest.param(extra_xml("xxe-http.xml",
                           with_doctype('<!DOCTYPE r [<!ENTITY e SYSTEM "{url}">]>')),
                 "index", "document type", False, id="xxe-http"),
    pytest.param(extra_xml("xxe-param.xml",
                           with_doctype('<!DOCTYPE r [<!ENTITY % p SYSTEM "{url}"> %p;]>',
                                        entity="N1")),
                 "index", "document type", False, id="xxe-parameter-entity"),
    pytest.param(extra_xml("xxe-dtd.xml", with_doctype('<!DOCTYPE r SYSTEM "{url}">',
                                                       entity="N1")),
                 "index", "document type", False, id="xxe-external-dtd"),
    pytest.param(extra_xml("laughs.xml", with_doctype(LAUGHS)), "index", "document type", False,
                 id="billion-laughs"),
    pytest.param(second_read_of_patient4(JUNK_READ), "annotations", "not a number", False,
                 id="xml-junk-number"),
    pytest.param(patient4_read([UNMATCHED_MARK]), "crop", re.escape(UNMATCHED), True,
                 id="xml-mark-matches-no-slice"),
    pytest.param(patient4_read([OUTSIDE_MARK]), "crop", OUTSIDE, True,
                 id="xml-mark-outside-image"),
    pytest.param(series_without_xml, "annotations", "has no XML read", False,
                 id="series-without-xml"),
]


@pytest.mark.parametrize("add,stage,reason,marks_added", BAD)
def test_a_bad_input_is_reported_and_the_rest_is_unchanged(good, cohort, trap, add, stage,
                                                          reason, marks_added):
    root, work = cohort
    bad = add(root, trap)
    run_stages(root, work)
    out = Outputs(root, work)
    assert_reported(out, stage, bad, reason)
    assert_same_outputs(good, out, marks_added)
    trap.assert_untouched()


# Odd but valid: the outputs of the plain form, and nothing reported. --------------------------

def encoded(codec, declared):
    def rewrite(root, trap):
        text = lidc_xml(sessions(4), series_uid(4)).replace("UTF-8", declared).replace(
            "<Version>1.8.1</Version>", "<Version>1.8.1 \u00e9\u00e8</Version>")
        xml_path(root, 4).write_bytes(text.encode(codec))
    return rewrite


def no_namespace(root, trap):
    xml_path(root, 4).write_text(lidc_xml(sessions(4), series_uid(4), namespace=False))


@pytest.mark.parametrize("rewrite", [
    pytest.param(no_namespace, id="no-namespace"),
    pytest.param(encoded("latin-1", "ISO-8859-1"), id="latin-1"),
    pytest.param(encoded("utf-16", "UTF-16"), id="utf-16"),
    pytest.param(patient4_read([]), id="empty-reading-session"),
])
def test_an_odd_but_valid_read_gives_the_outputs_of_its_plain_form(good, cohort, trap, rewrite):
    root, work = cohort
    rewrite(root, trap)
    run_stages(root, work)
    out = Outputs(root, work)
    assert_same_outputs(good, out)
    for stage in ("index", "annotations", "crop"):
        assert out.skipped(stage) == good.skipped(stage)


def test_a_one_point_contour_with_characteristics_is_a_small_nodule(good, cohort, trap):
    root, work = cohort
    big = {"kind": "nodule", "id": "B1", "malignancy": 5,
           "rois": [(Z[3], sop_uid(series_uid(4), 3), True, [(30, 100)])]}
    patient4_read([big])(root, trap)
    run_stages(root, work)
    out = Outputs(root, work)
    [row] = [r for r in out.annotations if r["nodule_id"] == "B1"]
    assert (row["label"], row["malignancy"], row["status"]) == (str(SMALL_NODULE), "5", "")
    assert [r["label"] for r in out.patch_rows if r["mark_id"] == row["mark_id"]] == ["1"]
    assert_same_outputs(good, _without_new_marks(out, good))


def test_two_xml_files_for_one_series_both_count(good, cohort, trap):
    root, work = cohort
    panel = {"kind": "non", "id": "panel", "z": Z[2], "sop": sop_uid(series_uid(4), 2),
             "xy": (110, 110)}
    second_read_of_patient4(lidc_xml([[panel]], series_uid(4)))(root, trap)
    run_stages(root, work)
    out = Outputs(root, work)
    [row] = [r for r in read_index(work) if r.series_uid == series_uid(4)]
    assert row.xml == (str(xml_path(root, 4)), str(folder(root, 4) / "zz.xml"))
    assert [(r["reader"], r["status"]) for r in out.annotations if r["nodule_id"] == "panel"] \
        == [("zz:0", "")]
    assert_same_outputs(good, _without_new_marks(out, good))


def _without_new_marks(out, good):
    """`out` with the patches of marks the reference lacks taken out (they come after its marks
    in id, but not in patch order: patches go slice by slice)."""
    n_good = len({r["mark_id"] for r in good.annotations})
    keep = [i for i, r in enumerate(out.patch_rows) if int(r["mark_id"]) < n_good]
    assert len(keep) < len(out.patch_rows), "the new mark gave no patch"
    out.annotations = [r for r in out.annotations if int(r["mark_id"]) < n_good]
    out.patch_rows = [dict(out.patch_rows[i], patch_index=str(j)) for j, i in enumerate(keep)]
    out.patches = out.patches[keep]
    out.dataset = good.dataset  # the dataset of a changed patch list is another dataset
    return out


def test_a_missing_slice_loses_only_the_marks_on_it(good, cohort):
    root, work = cohort
    missing = folder(root, 2) / "1-003.dcm"  # slice 2, which both readers' nodule covers
    missing.unlink()
    run_stages(root, work)
    out = Outputs(root, work)
    [row] = [r for r in read_csv(work / "index.csv") if r["series_uid"] == series_uid(2)]
    assert (row["slices"], row["gaps"]) == ("5", "1")
    on_it = str(len(Z) - 1 - 2)  # slices go up in z: Z[2] is the fourth from the bottom
    lost = {k for k, r in zip(good.patch_by_key(), good.patch_rows)
            if r["patient_id"] == patient_id(2) and r["slice_index"] == on_it}
    assert len(lost) == 2
    assert out.patch_by_key() == {k: v for k, v in good.patch_by_key().items() if k not in lost}
    unmatched = [r for r in out.skipped("crop") if UNMATCHED in r["reason"]]
    assert len(unmatched) == 2 and all(r["path"].endswith("002.xml") for r in unmatched)


# Everything at once, with one and two workers: the same files, byte for byte. ----------------

# Every bad input but the one that may skip here and one of the two that rewrite the same read.
ALL_AT_ONCE = [p.values[0] for p in BAD if p.id not in ("dicom-no-decoder",
                                                        "xml-mark-outside-image")]


def test_all_bad_inputs_at_once_give_the_same_files_with_one_or_two_workers(good, tmp_path, trap):
    runs = []
    for workers in (1, 2):
        base = tmp_path / f"workers{workers}"
        root, work = build(base / "LIDC-IDRI"), base / "work"
        for add in ALL_AT_ONCE:
            add(root, trap)
        run_stages(root, work, workers)
        runs.append(Outputs(root, work))
    one, two = runs
    assert_same_outputs(good, one, marks_added=True)
    for name in ("index.csv", "slices.csv", "annotations.csv", "patches/patches.csv",
                 "skipped/index.csv", "skipped/annotations.csv", "skipped/crop.csv"):
        assert one._rows(name) == two._rows(name), name
    np.testing.assert_array_equal(one.patches, two.patches)
    assert len(one.skipped("index")) >= 8


# Pickles: only what the stages wrote may come back, and nothing in one ever runs. -------------

class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def dotted_exploit(marker):
    """Protocol 4 resolves dotted names through a module's attributes: reaching os.system
    through the numpy module that lidc.records imports."""
    def text(s):
        data = s.encode()
        return b"\x8c" + bytes([len(data)]) + data
    return (b"\x80\x04" + text("lidc.records") + text("np.testing._private.utils.os.system")
            + b"\x93" + text(f"touch {marker}") + b"\x85R.")


class ObjectArray:
    """The plain-bytes form of an array (lidc.io._array) asked for objects: pickles from raw
    bytes would be pointers."""

    def __reduce__(self):
        from lidc import io
        return io._array, (b"\0" * 8, "|O", (1,))


EXPLOITS = [pytest.param(lambda m: pickle.dumps(Exploit(m)), id="os-system"),
            pytest.param(dotted_exploit, id="dotted-name"),
            pytest.param(lambda m: pickle.dumps(ObjectArray()), id="object-array")]


@pytest.mark.parametrize("exploit", EXPLOITS)
def test_a_tampered_annotations_pickle_is_refused_and_nothing_runs(cohort, tmp_path, capsys,
                                                                  exploit):
    root, work = cohort
    common = ["--work", str(work), "--workers", "1"]
    assert index.main(["--root", str(root), *common]) == 0
    assert annotations.main(common) == 0
    marker = tmp_path / "pwned"
    (work / "annotations.pkl").write_bytes(exploit(marker))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.run(crop.main, common)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert str(work / "annotations.pkl") in err and "changed since the annotations stage" in err
    # An attacker who also rewrites the manifest meets the restricted unpickler.
    index_set = manifest.read(work, "index.manifest.json")
    with manifest.file_set(work, "annotations.manifest.json", "annotations",
                           {"index": manifest.digest(index_set)}) as files:
        files.extend(["annotations.pkl", "annotations.csv"])
    with pytest.raises(SystemExit) as exit_:
        cli.run(crop.main, common)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert str(work / "annotations.pkl") in err and "not a pickle written by this project" in err
    assert not marker.exists()


@pytest.mark.parametrize("exploit", EXPLOITS)
def test_a_tampered_part_is_redone_and_nothing_runs(good, cohort, tmp_path, exploit):
    root, work = cohort
    run_stages(root, work)
    marker = tmp_path / "pwned"
    for part in (work / ".parts").rglob("*.pkl"):
        part.write_bytes(exploit(marker))
    run_stages(root, work)
    assert not marker.exists()
    assert_same_outputs(good, Outputs(root, work))
