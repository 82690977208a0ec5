"""The radiologists' XML reads (LidcReadMessage) parsed into Mark records.

LIDC-IDRI keeps each CT series' reads in one XML file (a few series have extra files from extra
reading panels; every session of every file counts). Elements live in the namespace
`http://www.nih.gov`, though some files and tools drop it, so names are matched on their local
part. The header spells `SeriesInstanceUid` but `StudyInstanceUID`. xCoord is the column and
yCoord the row, 0-based from the top-left.

    read = parse_read("072.xml")
    read.series_uid, [m.label for m in read.marks]

Chest X-ray reads (IdriReadMessage), files that are not well-formed, and numbers that are not
numbers raise LidcError naming the file; nothing else escapes.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lxml import etree

from lidc.errors import LidcError
from lidc.records import NODULE, NON_NODULE, SMALL_NODULE, Mark, Roi

# The largest real read is under 1 MB; anything far larger is not a read.
MAX_XML_BYTES = 64 * 1024 * 1024
CHARACTERISTICS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin",
                   "lobulation", "spiculation", "texture", "malignancy")


@dataclass
class Read:
    """One XML file: its series and every mark of every reading session in it."""
    path: str
    series_uid: str
    study_uid: str
    sessions: int
    marks: list


def _parser():
    # Entities are never resolved and nothing is fetched: an XML file cannot make the parser
    # read another file, reach the network, or expand entities into gigabytes.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True)


def load_root(path):
    """Parses `path` safely; returns its root element or raises LidcError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise LidcError(path, f"cannot read the file ({e.strerror})") from None
    if size == 0:
        raise LidcError(path, "empty file")
    if size > MAX_XML_BYTES:
        raise LidcError(path, f"{size} bytes is far larger than any LIDC read; refused")
    try:
        # Read here, at most the limit (a file may grow after its stat), and parsed from bytes:
        # lxml reading a file itself reports bad encodings as OSError, not as a syntax error.
        with open(path, "rb") as f:
            data = f.read(MAX_XML_BYTES + 1)
    except OSError as e:
        raise LidcError(path, f"cannot read the file ({e.strerror})") from None
    if len(data) > MAX_XML_BYTES:
        raise LidcError(path, "grew past the size of any LIDC read while being read; refused")
    try:
        tree = etree.ElementTree(etree.fromstring(data, _parser()))
    except etree.XMLSyntaxError as e:
        raise LidcError(path, f"not well-formed XML ({e})") from None
    # No LIDC read has a document type; one that declares entities or an external DTD is an
    # attack (XXE, entity expansion), not a read: refused rather than parsed around.
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise LidcError(path, "declares a document type (<!DOCTYPE>), which no LIDC read has: "
                              "refused (its entities are never expanded or fetched)")
    root = tree.getroot()
    if root is None:
        raise LidcError(path, "no root element")
    return root


def _local(el):
    # "{namespace}name" or "name"; comments and processing instructions have no string tag.
    tag = el.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _children(el, name):
    return [c for c in el if _local(c) == name]


def _text(el, name):
    for c in el:
        if _local(c) == name:
            return (c.text or "").strip()
    return None


def check_ct_read(path, root):
    """Raises LidcError unless `root` is a CT read (LidcReadMessage)."""
    kind = _local(root)
    if kind == "IdriReadMessage":
        raise LidcError(path, "chest X-ray read (IdriReadMessage), not a CT read")
    if kind != "LidcReadMessage":
        raise LidcError(path, f"root element <{kind}> is not an LIDC read (LidcReadMessage)")


def header_uids(path, root=None):
    """(series_uid, study_uid) of a CT read; LidcError for anything else."""
    root = load_root(path) if root is None else root
    check_ct_read(path, root)
    header = next(iter(_children(root, "ResponseHeader")), None)
    series = _text(header, "SeriesInstanceUid") if header is not None else None
    if not series:
        raise LidcError(path, "no SeriesInstanceUid in the ResponseHeader")
    return series, _text(header, "StudyInstanceUID") or ""


def parse_read(path, patient_id=""):
    """Parses every reading session of one CT read into Marks (slice indices left empty).

    Args:
      path: the XML file.
      patient_id: recorded on each mark (the XML does not name the patient).
    Returns:
      a Read.
    Raises:
      LidcError: the file is not a usable CT read; the message names the file and the reason.
    """
    root = load_root(path)
    series_uid, study_uid = header_uids(path, root)
    sessions = _children(root, "readingSession")
    marks = []
    for position, session in enumerate(sessions):
        reader = f"{Path(path).stem}:{position}"
        radiologist = _text(session, "servicingRadiologistID") or ""
        base = dict(patient_id=patient_id, series_uid=series_uid, xml_file=str(path),
                    reader=reader, radiologist_id=radiologist)
        for el in session:
            name = _local(el)
            if name == "unblindedReadNodule":
                marks.append(_nodule(path, el, base))
            elif name == "nonNodule":
                marks.append(_non_nodule(path, el, base))
    return Read(path=str(path), series_uid=series_uid, study_uid=study_uid,
                sessions=len(sessions), marks=marks)


def _nodule(path, el, base):
    rois = [_roi(path, r) for r in _children(el, "roi")]
    rois = [r for r in rois if r is not None]
    if not rois:
        raise LidcError(path, f"line {el.sourceline}: nodule without any region (roi)")
    # A contour (more than one point on some slice) is a nodule >= 3 mm; a single point, < 3 mm.
    label = NODULE if any(len(r.points) > 1 for r in rois) else SMALL_NODULE
    chars = next(iter(_children(el, "characteristics")), None)
    return Mark(**base, label=label, nodule_id=_text(el, "noduleID") or "", rois=rois,
                characteristics=_characteristics(path, chars))


def _non_nodule(path, el, base):
    locus = [_point(path, p) for p in _children(el, "locus")]
    if not locus:
        raise LidcError(path, f"line {el.sourceline}: non-nodule without a locus")
    roi = Roi(z=_number(path, el, "imageZposition"), sop_uid=_text(el, "imageSOP_UID") or "",
              inclusion=True, points=np.array(locus, np.int32))
    return Mark(**base, label=NON_NODULE, nodule_id=_text(el, "nonNoduleID") or "", rois=[roi])


def _roi(path, el):
    points = [_point(path, p) for p in _children(el, "edgeMap")]
    if not points:
        return None
    inclusion = (_text(el, "inclusion") or "TRUE").upper() != "FALSE"
    return Roi(z=_number(path, el, "imageZposition"), sop_uid=_text(el, "imageSOP_UID") or "",
               inclusion=inclusion, points=np.array(points, np.int32))


def _point(path, el):
    """(row, col) from an edgeMap/locus: yCoord is the row, xCoord the column."""
    # One pass over the children (a read holds thousands of points): the first of each wins.
    texts = {}
    for c in el:
        texts.setdefault(_local(c), c.text or "")
    return (int(round(_parse_number(path, el, "yCoord", texts.get("yCoord")))),
            int(round(_parse_number(path, el, "xCoord", texts.get("xCoord")))))


def _number(path, el, name):
    return _parse_number(path, el, name, _text(el, name))


def _parse_number(path, el, name, text):
    if text is None:
        raise LidcError(path, f"line {el.sourceline}: <{_local(el)}> has no <{name}>")
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        raise LidcError(path, f"line {el.sourceline}: <{name}> is not a number: {text!r}") \
            from None
    if not math.isfinite(value) or abs(value) > 1e6:
        raise LidcError(path, f"line {el.sourceline}: <{name}> is out of range: {text!r}")
    return value


def _characteristics(path, el):
    if el is None:
        return {}
    out = {}
    for name in CHARACTERISTICS:
        text = _text(el, name)
        if text:
            try:
                out[name] = int(float(text))
            except ValueError:
                raise LidcError(path, f"line {el.sourceline}: characteristic {name} is not a "
                                      f"number: {text!r}") from None
    return out
