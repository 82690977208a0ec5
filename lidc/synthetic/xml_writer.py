"""LIDC XML reads written as the collection's are: the CT read (LidcReadMessage) and the chest
X-ray read (IdriReadMessage) that a CT pipeline must skip.

A CT read holds a ResponseHeader and one readingSession per radiologist; each session lists its
unblindedReadNodule elements (a nodule: its noduleID, characteristics, and one roi per slice with
imageZposition, imageSOP_UID, inclusion and an edgeMap per point) and then its nonNodule elements
(an ID, imageZposition, imageSOP_UID and a single locus). Elements are in the namespace
http://www.nih.gov; xCoord is the column and yCoord the row. The marks written are
lidc.records.Mark objects, so `lidc.reads.parse_read` gives back what was written here.

    message = ReadMessage(uid="1.2.3", header=ReadHeader(series_uid, study_uid),
                          sessions=[ReadingSession("anon", marks)])
    Path("001.xml").write_bytes(lidc_read_message(message))
"""
import dataclasses

from lxml import etree

from lidc.records import NON_NODULE

LIDC_NS = "http://www.nih.gov"
IDRI_NS = "http://www.nih.gov/idri"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# How reading stations printed imageZposition: six decimals; six decimals and a trailing space;
# Python's shortest form. Under "fixed", every third non-nodule's z has the trailing space too,
# as some files mix the two.
Z_FORMATS = ("fixed", "fixed space", "short")


@dataclasses.dataclass
class ReadHeader:
    """The ResponseHeader of a CT read. The header spells `SeriesInstanceUid` but
    `StudyInstanceUID`; a pipeline matches a read to its series by the former."""
    series_uid: str
    study_uid: str
    version: str = "1.8.1"
    message_id: int = 0
    date: str = "2000-01-01"
    time: str = "00:00:00"


@dataclasses.dataclass
class ReadingSession:
    """One radiologist's session: its marks (lidc.records.Mark) in the order written, and how
    its station printed z positions (one of Z_FORMATS)."""
    radiologist_id: str
    marks: list
    z_format: str = "short"
    annotation_version: str = "3.12"


@dataclasses.dataclass
class ReadMessage:
    """A whole CT read: the message `uid`, its header and sessions; `namespace` False writes
    the elements without one (as some tools did), `schema_location` adds the xsi attribute."""
    uid: str
    header: ReadHeader
    sessions: list
    namespace: bool = True
    schema_location: bool = False


def _sub(parent, tag, text=None, ns=LIDC_NS):
    element = etree.SubElement(parent, f"{{{ns}}}{tag}" if ns else tag)
    if text is not None:
        element.text = str(text)
    return element


def _z_text(z, z_format, with_space):
    if isinstance(z, str):  # a test's deliberately odd text ('1e999', 'abc'), written as given
        return z
    if z_format == "short":
        return repr(float(z))
    return f"{z:.6f}" + (" " if z_format == "fixed space" or with_space else "")


def lidc_read_message(message):
    """The CT read as XML bytes (UTF-8, with its declaration): a LidcReadMessage."""
    ns = LIDC_NS if message.namespace else None
    nsmap = {None: LIDC_NS} if ns else {}
    if ns and message.schema_location:
        nsmap["xsi"] = XSI_NS
    root = etree.Element(f"{{{ns}}}LidcReadMessage" if ns else "LidcReadMessage", nsmap=nsmap)
    root.set("uid", message.uid)
    if ns and message.schema_location:
        root.set(f"{{{XSI_NS}}}schemaLocation",
                 f"{LIDC_NS}  http://troll.rad.med.umich.edu/lidc/LidcReadMessage.xsd")
    header, h = _sub(root, "ResponseHeader", ns=ns), message.header
    for tag, text in (("Version", h.version), ("MessageId", h.message_id),
                      ("DateRequest", h.date), ("TimeRequest", h.time),
                      ("RequestingSite", "removed"), ("ServicingSite", "removed"),
                      ("TaskDescription", "Second unblinded read"),
                      ("CtImageFile", "removed"), ("SeriesInstanceUid", h.series_uid),
                      ("DateService", h.date), ("TimeService", h.time),
                      ("ResponseDescription", "1 - Reading complete"),
                      ("StudyInstanceUID", h.study_uid)):
        _sub(header, tag, text, ns)
    for session in message.sessions:
        _session(root, session, ns)
    return DECLARATION + etree.tostring(root, pretty_print=True)


def _session(root, session, ns):
    element = _sub(root, "readingSession", ns=ns)
    _sub(element, "annotationVersion", session.annotation_version, ns)
    _sub(element, "servicingRadiologistID", session.radiologist_id, ns)
    others = 0
    for mark in session.marks:
        if mark.label == NON_NODULE:
            _non_nodule(element, mark, _z_text(mark.rois[0].z, session.z_format,
                                               others % 3 == 1), ns)
            others += 1
        else:
            _nodule(element, mark, session.z_format, ns)


def _nodule(session, mark, z_format, ns):
    element = _sub(session, "unblindedReadNodule", ns=ns)
    _sub(element, "noduleID", mark.nodule_id, ns)
    if mark.characteristics:
        ratings = _sub(element, "characteristics", ns=ns)
        for name, value in mark.characteristics.items():
            _sub(ratings, name, value, ns)
    for roi in mark.rois:
        region = _sub(element, "roi", ns=ns)
        _sub(region, "imageZposition", _z_text(roi.z, z_format, False), ns)
        _sub(region, "imageSOP_UID", roi.sop_uid, ns)
        _sub(region, "inclusion", "TRUE" if roi.inclusion else "FALSE", ns)
        for row, col in roi.points:
            edge = _sub(region, "edgeMap", ns=ns)
            _sub(edge, "xCoord", int(col), ns)
            _sub(edge, "yCoord", int(row), ns)


def _non_nodule(session, mark, z_text, ns):
    roi = mark.rois[0]
    element = _sub(session, "nonNodule", ns=ns)
    _sub(element, "nonNoduleID", mark.nodule_id, ns)
    _sub(element, "imageZposition", z_text, ns)
    _sub(element, "imageSOP_UID", roi.sop_uid, ns)
    locus = _sub(element, "locus", ns=ns)
    row, col = roi.points[0]
    _sub(locus, "xCoord", int(col), ns)
    _sub(locus, "yCoord", int(row), ns)


@dataclasses.dataclass
class CxrNoduleRead:
    """One radiologist's mark of a nodule on a chest radiograph, with its three ratings."""
    nodule_id: str
    confidence: int
    subtlety: int
    obscuration: int
    x: int
    y: int


@dataclasses.dataclass
class CxrRead:
    """A chest X-ray read: the CT series it belongs to, the radiograph's study, series and
    image, and per session a list of CxrNoduleRead."""
    uid: str
    message_id: int
    ct_series_uid: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sessions: list


def idri_read_message(read):
    """A chest X-ray read as XML bytes: an IdriReadMessage in namespace http://www.nih.gov/idri,
    like the collection's 186/001.xml.

    Its header names the CT series too (CTSeriesInstanceUid): a pipeline that matches XML to
    series by any element ending in SeriesInstanceUid would wrongly take it for the CT read."""
    root = etree.Element(f"{{{IDRI_NS}}}IdriReadMessage", nsmap={None: IDRI_NS, "xsi": XSI_NS})
    root.set("uid", read.uid)
    root.set(f"{{{XSI_NS}}}schemaLocation",
             f"{IDRI_NS}  http://troll.rad.med.umich.edu/idri/IdriReadMessage.xsd")
    header = _sub(root, "ResponseHeader", ns=IDRI_NS)
    for tag, text in (("Version", "1.4"), ("MessageId", read.message_id),
                      ("DateRequest", "2009-11-04"), ("TimeRequest", "11:07:09"),
                      ("RequestingSite", "removed"), ("ServicingSite", "removed"),
                      ("TaskDescription", "CXR read"), ("CTImageFile", "removed"),
                      ("CTSeriesInstanceUid", read.ct_series_uid), ("CXRImageFile", "removed"),
                      ("CXRSeriesInstanceUid", read.series_uid), ("Modality", "CXR"),
                      ("DateService", "2010-10-10"), ("TimeService", "12:00:00"),
                      ("ResponseDescription", "1 - Reading complete"), ("ResponseComments", ""),
                      ("StudyInstanceUID", read.study_uid),
                      ("SeriesInstanceUID", read.series_uid)):
        _sub(header, tag, text, IDRI_NS)
    for nodules in read.sessions:
        session = _sub(root, "CXRreadingSession", ns=IDRI_NS)
        _sub(session, "servicingRadiologistID", "anonymous", IDRI_NS)
        for nodule in nodules:
            element = _sub(session, "unblindedRead", ns=IDRI_NS)
            _sub(element, "noduleID", nodule.nodule_id, IDRI_NS)
            ratings = _sub(element, "characteristics", ns=IDRI_NS)
            for name in ("confidence", "subtlety", "obscuration"):
                _sub(ratings, name, getattr(nodule, name), IDRI_NS)
            roi = _sub(element, "roi", ns=IDRI_NS)
            _sub(roi, "imageSOP_UID", read.sop_uid, IDRI_NS)
            edge = _sub(roi, "edgeMap", ns=IDRI_NS)
            _sub(edge, "xCoord", nodule.x, IDRI_NS)
            _sub(edge, "yCoord", nodule.y, IDRI_NS)
    return DECLARATION + etree.tostring(root, pretty_print=True)
