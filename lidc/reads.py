"""The radiologists' XML reads (LidcReadMessage) parsed into Mark records.

LIDC-IDRI keeps each CT series' reads in one XML file, but some series have several: copies that
repeat the same reading sessions (LIDC-IDRI-0777 has six), and one TCIA correction
(`161-resubmitted-correction-3-9-12.xml`, which replaces `161.xml`). Each reading session counts
once however many files carry it (`unique_sessions`), and a correction is read instead of the
file it corrects (`replace_corrected`). Elements live in the namespace `http://www.nih.gov`,
though some files and tools drop it, so names are matched on their local part. The header spells
`SeriesInstanceUid` but `StudyInstanceUID`. xCoord is the column and yCoord the row, 0-based from
the top-left.

    read = parse_read("072.xml")
    read.series_uid, [m.label for m in read.marks], read.problems

A file that is not a usable CT read (not well-formed, a chest X-ray read, no SeriesInstanceUid)
raises LidcError naming the file. A fault inside one element (a coordinate that is not a number,
a region without points, a rating off its scale) drops that element only, and the reason (file,
line, what was left out) is in `Read.problems`; nothing else escapes.
"""
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lxml import etree

from lidc.errors import LidcError
from lidc.records import NODULE, NON_NODULE, SMALL_NODULE, STRAY, Mark, Roi

# The largest real read is under 1 MB; anything far larger is not a read.
MAX_XML_BYTES = 64 * 1024 * 1024
# Each characteristic's scale (LIDC's rating guide): a rating is a whole number from 1 to this.
CHARACTERISTICS = {"subtlety": 5, "internalStructure": 4, "calcification": 6, "sphericity": 5,
                   "margin": 5, "lobulation": 5, "spiculation": 5, "texture": 5, "malignancy": 5}


@dataclass
class Session:
    """One readingSession of one file: its marks, what was dropped from it, and digests of its
    content (`key` of the whole, `parts` of each child element in order) to find its copies."""
    path: str
    position: int
    reader: str
    key: str
    parts: tuple
    marks: list
    dropped: list  # why each element left out was ("line N: ...: ... is left out")
    faulty: frozenset  # positions in `parts` of the children with a problem
    mark_positions: frozenset  # positions in `parts` of the mark elements

    @property
    def problems(self):
        """(path, reason) of each element left out, for the skip report."""
        return [(self.path, f"reading session {self.position}, {reason}; the rest of the file "
                            "is read") for reason in self.dropped]


@dataclass
class Read:
    """One XML file: its series and its reading sessions."""
    path: str
    series_uid: str
    study_uid: str
    sessions: list
    misplaced: list = field(default_factory=list)  # (path, reason): sessions, marks out of place

    @property
    def marks(self):
        """Every mark of every session of the file, in file order."""
        return [m for s in self.sessions for m in s.marks]

    @property
    def problems(self):
        """(path, reason) of every element left out of the file."""
        return self.misplaced + [p for s in self.sessions for p in s.problems]


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
    if header is None:
        raise LidcError(path, "no ResponseHeader, so no SeriesInstanceUid: the series it reads "
                              "is unknown")
    series = _text(header, "SeriesInstanceUid")
    if not series:
        raise LidcError(path, "no SeriesInstanceUid in the ResponseHeader: the series it reads "
                              "is unknown")
    return series, _text(header, "StudyInstanceUID") or ""


def parse_read(path, patient_id=""):
    """Parses every reading session of one CT read into Marks (slice indices left empty).

    Args:
      path: the XML file.
      patient_id: recorded on each mark (the XML does not name the patient).
    Returns:
      a Read; elements it had to leave out are in its `problems`.
    Raises:
      LidcError: the file is not a usable CT read; the message names the file and the reason.
    """
    root = load_root(path)
    series_uid, study_uid = header_uids(path, root)
    base = dict(patient_id=patient_id, series_uid=series_uid, xml_file=str(path))
    sessions = [_session(path, position, el, base)
                for position, el in enumerate(_children(root, "readingSession"))]
    return Read(path=str(path), series_uid=series_uid, study_uid=study_uid, sessions=sessions,
                misplaced=_misplaced(path, root))


def _misplaced(path, root):
    """(path, reason) of each reading session not directly in the root, and each mark not
    directly in a session: no reader is known for them, so they are left out, never silently."""
    out = []
    for el in root.iter("{*}readingSession", *(f"{{*}}{name}" for name in _MARKS)):
        parent = el.getparent()
        if _local(el) == "readingSession":
            misplaced = parent is not root
        else:  # a mark inside a misplaced session goes with it, and is not named again
            misplaced = _local(parent) != "readingSession"
        if misplaced:
            out.append((str(path), f"line {el.sourceline}: <{_local(el)}> lies inside "
                                   f"<{_local(parent)}>, not where LIDC reads put it: left out"))
    return out


def _session(path, position, el, base):
    reader = f"{Path(path).stem}:{position}"
    base = dict(base, reader=reader, radiologist_id=_text(el, "servicingRadiologistID") or "")
    marks, dropped, faulty, parts, positions, lines = [], [], set(), [], set(), {}
    for index, child in enumerate(el):
        parts.append(_digest(child))
        read_mark = _MARKS.get(_local(child))
        if read_mark is None:
            continue
        positions.add(index)
        if parts[-1] in lines:  # one reader's mark twice over is one mark
            dropped.append(f"line {child.sourceline}: <{_local(child)}> repeats the one at line "
                           f"{lines[parts[-1]]} of this session: read once")
            continue
        lines[parts[-1]] = child.sourceline
        mark, reasons = read_mark(path, child, base)
        if mark is not None:
            marks.append(mark)
        if reasons:
            faulty.add(index)
            dropped.extend(reasons)
    key = hashlib.sha1("\0".join([_local(el), *parts]).encode()).hexdigest()
    return Session(str(path), position, reader, key, tuple(parts), marks, dropped,
                   frozenset(faulty), frozenset(positions))


def _digest(el):
    """A digest of an element's content as this module reads it: names without their namespace,
    attributes, and texts without surrounding blanks (so a re-indented copy is the same)."""
    h = hashlib.sha1()
    for event, e in etree.iterwalk(el, events=("start", "end")):
        if event == "end":
            h.update(b"\2" + (e.tail or "").strip().encode())
            continue
        attributes = sorted((etree.QName(k).localname, v) for k, v in e.attrib.items())
        h.update(f"\1{_local(e)}\3{attributes!r}\3{(e.text or '').strip()}".encode())
    return h.hexdigest()


def _nodule(path, el, base):
    """(Mark or None, reasons for what was left out) of an unblindedReadNodule."""
    nodule_id = _text(el, "noduleID") or ""
    what = f"nodule {nodule_id!r} (line {el.sourceline})"
    elements = _children(el, "roi")
    # The label comes from the element structure, not from the regions that parse: a contour
    # dropped for a bad number leaves a nodule >= 3 mm, never turns it into a small one.
    contoured = any(len(_children(r, "edgeMap")) > 1 for r in elements)
    rois, dropped = _regions(path, elements, contoured, what)
    characteristics, bad = _characteristics(el)
    dropped.extend(f"{reason}, for {what}" for reason in bad)
    if not rois:
        missing = "usable region" if elements else "region (roi)"
        return None, dropped + [f"line {el.sourceline}: {what} has no {missing}: the mark is "
                                f"left out"]
    mark = Mark(**base, label=NODULE if contoured else SMALL_NODULE, nodule_id=nodule_id,
                rois=rois, characteristics=characteristics, line=el.sourceline)
    return mark, dropped


def _regions(path, elements, contoured, what):
    """(Rois, reasons for what was left out) of a nodule's <roi> elements: a region that does not
    parse, or repeats one already read (it would give the same patch twice), is left out."""
    rois, dropped, lines = [], [], {}
    for el in elements:
        try:
            roi = _roi(path, el, contoured)
        except LidcError as e:
            dropped.append(f"{e.reason}: this region of {what} is left out")
            continue
        key = (roi.z, roi.sop_uid, roi.inclusion, roi.points.tobytes())
        if key in lines:
            dropped.append(f"line {el.sourceline}: this region of {what} repeats the one at line "
                           f"{lines[key]}: read once")
            continue
        lines[key] = el.sourceline
        rois.append(roi)
    return rois, dropped


def _non_nodule(path, el, base):
    """(Mark or None, reasons for what was left out) of a nonNodule."""
    nodule_id = _text(el, "nonNoduleID") or ""
    try:
        locus = [_point(path, p) for p in _children(el, "locus")]
        if not locus:
            raise LidcError(path, f"line {el.sourceline}: <nonNodule> has no <locus>")
        roi = Roi(z=_number(path, el, "imageZposition"), sop_uid=_text(el, "imageSOP_UID") or "",
                  inclusion=True, points=np.array(locus, np.int32), line=el.sourceline)
    except LidcError as e:
        return None, [f"{e.reason}: non-nodule {nodule_id!r} (line {el.sourceline}) is left out"]
    return Mark(**base, label=NON_NODULE, nodule_id=nodule_id, rois=[roi],
                line=el.sourceline), []


_MARKS = {"unblindedReadNodule": _nodule, "nonNodule": _non_nodule}


def _roi(path, el, contoured):
    points = [_point(path, p) for p in _children(el, "edgeMap")]
    if not points:
        raise LidcError(path, f"line {el.sourceline}: <roi> has no <edgeMap> point")
    inclusion = (_text(el, "inclusion") or "TRUE").upper()
    if inclusion not in ("TRUE", "FALSE"):
        raise LidcError(path, f"line {el.sourceline}: <inclusion> is {inclusion!r}, neither "
                              "TRUE nor FALSE")
    return Roi(z=_number(path, el, "imageZposition"), sop_uid=_text(el, "imageSOP_UID") or "",
               inclusion=inclusion == "TRUE", points=np.array(points, np.int32),
               status=STRAY if contoured and len(points) == 1 else "", line=el.sourceline)


def _point(path, el):
    """(row, col) from an edgeMap/locus: yCoord is the row, xCoord the column."""
    # One pass over the children (a read holds thousands of points): the first of each wins.
    found = {}
    for c in el:
        found.setdefault(_local(c), c)
    return (int(round(_parse_number(path, el, "yCoord", found.get("yCoord")))),
            int(round(_parse_number(path, el, "xCoord", found.get("xCoord")))))


def _number(path, el, name):
    return _parse_number(path, el, name, next(iter(_children(el, name)), None))


def _parse_number(path, parent, name, el):
    """The number in `el` (the child `name` of `parent`); LidcError naming its line if it is
    missing, empty, not a number, not finite or beyond any coordinate."""
    if el is None:
        raise LidcError(path, f"line {parent.sourceline}: <{_local(parent)}> has no <{name}>")
    where, text = f"line {el.sourceline}", (el.text or "").strip()
    if not text:
        raise LidcError(path, f"{where}: <{name}> is empty")
    try:
        value = float(text)
    except ValueError:
        raise LidcError(path, f"{where}: <{name}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise LidcError(path, f"{where}: <{name}> is not a finite number: {text!r}")
    if abs(value) > 1e6:
        raise LidcError(path, f"{where}: <{name}> is out of range (beyond 1e6 mm or pixels): "
                              f"{text!r}")
    return value


def _characteristics(el):
    """(ratings, reasons) of a nodule's characteristics: a rating that is not a whole number on
    its scale is left empty (never rounded or clipped into one) and named in a reason."""
    el = next(iter(_children(el, "characteristics")), None)
    ratings, bad, seen = {}, [], set()
    for c in (el if el is not None else ()):
        name, text = _local(c), (c.text or "").strip()
        top = CHARACTERISTICS.get(name)
        if top is None or not text or name in seen:  # the first of each counts
            continue
        seen.add(name)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if value.is_integer() and 1 <= value <= top:
            ratings[name] = int(value)
        else:
            bad.append(f"line {c.sourceline}: characteristic {name} {text!r} is not a whole "
                       f"number from 1 to {top}: left empty")
    return ratings, bad


def replace_corrected(reads):
    """TCIA's corrections, read instead of the reads they correct (as pylidc does).

    A correction is named after the file it corrects and reads the same series:
    `161-resubmitted-correction-3-9-12.xml` corrects `161.xml`. Where both are present, the
    corrected file is left out whole (the correction repeats its unchanged sessions).

    Args:
      reads: the Reads of one series.
    Returns:
      (the Reads to use, [(path, reason)] of the files left out).
    """
    kept, skipped = [], []
    for read in reads:
        prefix = Path(read.path).stem + "-"
        correction = next((r for r in reads if r.series_uid == read.series_uid
                           and Path(r.path).stem.startswith(prefix)), None)
        if correction is None:
            kept.append(read)
        else:
            skipped.append((read.path, f"corrected by TCIA's {correction.path} (same series, "
                                       "named after this file): the correction is read instead"))
    return kept, skipped


def unique_sessions(sessions):
    """Each reading session once, however many files (or folders) carry it.

    A session repeats another when their contents are the same (namespace and blanks aside), or
    the same but for elements left out as damaged in either: of such copies the one with fewer
    damaged elements is read, else the first. Readers keep the name of the file that carries the
    session read; a name two different sessions would share gets the file's folder.

    Args:
      sessions: the Sessions of one series, in file order.
    Returns:
      (the Sessions to read, [(path, reason)] of the copies left out).
    """
    groups = []
    for session in sessions:
        # A copy of every session of a group (damage aside), not just of one: two sessions that
        # differ where neither is damaged are two reads, whatever a damaged third resembles.
        group = next((g for g in groups if all(_same_session(m, session) for m in g)), None)
        if group is None:
            groups.append([session])
        else:
            group.append(session)
    # In each group the first of the least damaged is read.
    kept = [min(g, key=lambda s: len(s.dropped)) for g in groups]
    _distinct_readers(kept)
    read_for = {id(s): read for g, read in zip(groups, kept) for s in g}
    skipped = [(s.path, _repeat_reason(s, read_for[id(s)])) for s in sessions
               if read_for[id(s)] is not s]
    return kept, skipped


def _same_session(a, b):
    if a.key == b.key:
        return True
    if not (a.faulty or b.faulty) or len(a.parts) != len(b.parts):
        return False
    intact = [i for i in range(len(a.parts)) if i not in a.faulty | b.faulty]
    # Agreeing on the session's header alone (version, an anonymous radiologist id) is not
    # being the same read: at least one intact mark must agree too.
    return all(a.parts[i] == b.parts[i] for i in intact) and \
        any(i in a.mark_positions for i in intact)


def _repeat_reason(copy, original):
    where = f"{original.path} session {original.position}"
    if copy.key == original.key:
        return (f"reading session {copy.position} repeats {where}: read once, as reader "
                f"{original.reader}")
    damage = "; ".join(copy.dropped)
    return (f"reading session {copy.position} repeats {where} but for elements damaged here "
            f"({damage}): read once, from the copy with fewer damaged elements, as reader "
            f"{original.reader}")


def _distinct_readers(sessions):
    """Renames readers whose name another kept session already has (two different files of one
    series with the same name, in two folders): one name must never stand for two readers."""
    taken = set()
    for session in sessions:
        if session.reader in taken:
            session.reader = f"{Path(session.path).with_suffix('')}:{session.position}"
            for mark in session.marks:
                mark.reader = session.reader
        taken.add(session.reader)
