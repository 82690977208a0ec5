"""Small inputs the tests build themselves: CT slices from pydicom's real CT_small.dcm (in any
storage and transfer syntax), LIDC XML, folders nested past the path limit; and a lock held by
another process."""
import contextlib
import copy
import os
import subprocess
import sys

from xml.sax.saxutils import escape

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from lidc.records import NODULE, NON_NODULE, SMALL_NODULE, Mark, Roi
from lidc.synthetic import xml_writer

_TEMPLATE = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
SERIES_UID = "1.2.826.0.1.3680043.8.498.1"
STUDY_UID = "1.2.826.0.1.3680043.8.498.2"


def sop_uid(series_uid, k):
    return f"{series_uid}.{k + 1}"


def write_slice(path, z, k, series_uid=SERIES_UID, hu=None, instance=None, modality="CT",
                spacing=None, slope=1, intercept=-1024, patient="LIDC-IDRI-9999"):
    """Writes a real CT file (CT_small.dcm's header) at height z; hu is an HU image (128x128
    unless given)."""
    ds = copy.deepcopy(_TEMPLATE)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid(series_uid, k)
    ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, STUDY_UID
    ds.PatientID = patient
    ds.Modality = modality
    ds.ImagePositionPatient = [-80.0, -80.0, float(z)]
    ds.InstanceNumber = k + 1 if instance is None else instance
    if spacing is not None:
        ds.PixelSpacing = [spacing, spacing]
    if hu is None:
        hu = np.full((128, 128), -850, np.int16)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    stored = np.rint((np.asarray(hu, np.float64) - intercept) / slope).astype(np.int16)
    ds.PixelRepresentation = 1
    ds.Rows, ds.Columns = stored.shape
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder, z_values, series_uid=SERIES_UID, names=None, **kw):
    """Writes one slice per z; `names` gives the file names (default 1-NNN.dcm, highest z first)."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.argsort(-np.asarray(z_values))
    names = names or {int(k): f"1-{rank + 1:03d}.dcm" for rank, k in enumerate(order)}
    return [write_slice(folder / names[k], z, k, series_uid, **kw) for k, z in
            enumerate(z_values)]


def lidc_xml(sessions, series_uid=SERIES_UID, namespace=True, root="LidcReadMessage"):
    """A LIDC read, written by lidc.synthetic's XML writer. sessions: lists of marks, each a dict:
    {"kind": "nodule", "id": "1", "rois": [(z, sop, inclusion, [(x, y), ...]), ...],
     "malignancy": 4} or {"kind": "non", "id": "n1", "z": z, "sop": sop, "xy": (x, y)}.

    Returns the XML text. `namespace` False writes no namespace; `root` renames the root element
    (an IdriReadMessage root makes a chest X-ray read). An id is written as markup, so "&e;"
    stays a reference to an entity that a test declares in a <!DOCTYPE>.
    """
    message = xml_writer.ReadMessage(
        uid="1.2.3", header=xml_writer.ReadHeader(series_uid, STUDY_UID), namespace=namespace,
        sessions=[xml_writer.ReadingSession("anon", [_mark(m, series_uid) for m in marks],
                                            z_format="fixed space") for marks in sessions])
    text = xml_writer.lidc_read_message(message).decode()
    for raw in {m["id"] for marks in sessions for m in marks if "&" in m["id"]}:
        text = text.replace(escape(raw), raw)
    return text.replace("LidcReadMessage>", f"{root}>").replace("<LidcReadMessage", f"<{root}")


def _mark(m, series_uid):
    """The dict of a mark as the lidc.records.Mark the writer takes (points become (row, col))."""
    if m["kind"] == "non":
        x, y = m["xy"]
        rois = [Roi(z=m["z"], sop_uid=m["sop"], inclusion=True, points=np.array([[y, x]]))]
        label, chars = NON_NODULE, {}
    else:
        rois = [Roi(z=z, sop_uid=sop, inclusion=inc, points=np.array(pts)[:, ::-1])
                for z, sop, inc, pts in m["rois"]]
        label = NODULE if any(len(r.points) > 1 for r in rois) else SMALL_NODULE
        chars = {"malignancy": m["malignancy"]} if "malignancy" in m else {}
    return Mark(patient_id="", series_uid=series_uid, xml_file="", reader="",
                radiologist_id="anon", label=label, nodule_id=m["id"], rois=rois,
                characteristics=chars)


def square(cx, cy, half):
    """A closed square outline (x, y) around (cx, cy), one point per pixel like LIDC edge maps."""
    xs = list(range(cx - half, cx + half + 1))
    ys = list(range(cy - half, cy + half + 1))
    return ([(x, cy - half) for x in xs] + [(cx + half, y) for y in ys[1:]] +
            [(x, cy + half) for x in reversed(xs[:-1])] + [(cx - half, y) for y in reversed(ys[1:-1])])


def new_uid():
    return generate_uid()


@contextlib.contextmanager
def lock_held_elsewhere(imports, lock):
    """Runs another Python process that holds the lock `lock` (an expression, e.g.
    "locked('runs/x')", after `imports`) until the block ends; yields that process's pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; {imports}\n"
         f"with {lock}:\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def store(ds, stored, slope=1, intercept=-1024):
    """Puts the array `stored` (int16, uint16, int8, uint8, int32 or uint32) into `ds` as its
    pixels, with the header that describes them and the rescale to HU."""
    stored = np.asarray(stored)
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = ds.BitsStored = stored.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(stored.dtype.kind == "i")
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if "PixelPaddingValue" in ds:  # CT_small.dcm's, an SS: gone unless a test sets its own
        del ds.PixelPaddingValue
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if stored.dtype.itemsize > 1 else "OB"
    return ds


def save_encoded(ds, path, syntax):
    """Writes `ds` in the transfer syntax `syntax` (implicit or explicit VR, little or big
    endian, deflated), with its pixel bytes in that byte order."""
    ds.file_meta.TransferSyntaxUID = syntax
    if not syntax.is_little_endian:
        bits = ds.BitsAllocated
        dtype = np.dtype(f"{'i' if ds.PixelRepresentation else 'u'}{bits // 8}")
        pixels = np.frombuffer(ds.PixelData, dtype.newbyteorder("<"))
        ds.PixelData = pixels.astype(dtype.newbyteorder(">")).tobytes()
    pydicom.dcmwrite(path, ds, implicit_vr=syntax.is_implicit_VR,
                     little_endian=syntax.is_little_endian, force_encoding=True)
    return path


def make_deep_folder(parent, depth, name="d" * 250):
    """Makes folders `name` nested `depth` deep under `parent` (their path may pass the system's
    limit, so they are made relative to open folders) and writes a file `1.dcm` in the deepest
    with the bytes of CT_small.dcm. Returns the path of the first of them."""
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    fd = os.open(parent, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open("1.dcm", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)
    return os.path.join(parent, name)
