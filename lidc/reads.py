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

Each file is parsed once. Its edge-map points (nearly all of a read), where they are written the
one way every real read writes them, are cut out of the file before the parse and read with a
regular expression and numpy (`_without_points`); the parser then builds a tenth of the tree.
Points left in the tree are taken from it in bulk and converted with numpy (`_bulk_points`); any
region where that path sees something unusual (a text split by a processing instruction or an
element, a coordinate missing, doubled or out of place, a number that does not parse or is out
of range) is read point by point instead, which names the line of what is wrong. Texts are read
by XML's rules: a number split by a comment, a CDATA section, a character reference or a
processing instruction is one number.

A file that is not a usable CT read (not well-formed, a chest X-ray read, no SeriesInstanceUid)
raises LidcError naming the file. A fault inside one element (a coordinate that is not a number,
a region without points, a rating off its scale) drops that element only, and the reason (file,
line, what was left out) is in `Read.problems`; nothing else escapes.
"""
import hashlib
import itertools
import math
import operator
import re
from collections import defaultdict
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
    """One readingSession of one file: its marks, what was dropped from it, and what finds its
    copies: `keys`, a cheap signature of each child element in order (two children whose
    digests agree always have equal keys), and `parts`, the digests themselves, computed from
    the elements only where keys agree (see `part`)."""
    path: str
    position: int
    reader: str
    keys: tuple
    marks: list
    dropped: list  # why each element left out was ("line N: ...: ... is left out")
    faulty: frozenset  # positions in `keys` of the children with a problem
    mark_positions: frozenset  # positions in `keys` of the mark elements
    children: list = field(default_factory=list, repr=False, compare=False)
    markers: dict = field(default_factory=dict, repr=False, compare=False)  # marker: its run
    _digests: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def problems(self):
        """(path, reason) of each element left out, for the skip report."""
        return [(self.path, f"reading session {self.position}, {reason}; the rest of the file "
                            "is read") for reason in self.dropped]

    def part(self, index):
        """The digest of child `index` (`_digest`), computed once."""
        if index not in self._digests:
            self._digests[index] = _digest(self.children[index], self.markers)
        return self._digests[index]

    @property
    def parts(self):
        """The digests of every child, in order."""
        return tuple(self.part(i) for i in range(len(self.keys)))


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


# Entities are never resolved and nothing is fetched: an XML file cannot make the parser read
# another file, reach the network, or expand entities into gigabytes.
_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False,
                       dtd_validation=False, huge_tree=False, remove_comments=True)
# The header is in the first few kilobytes of every read.
_HEADER_CHUNK = 4096


def _parser():
    return etree.XMLParser(**_PARSER_OPTIONS)


def load_root(path):
    """Parses `path` safely; returns its root element or raises LidcError."""
    return _parse(path, _file_bytes(path))


def _file_bytes(path):
    """The bytes of an XML file no larger than any read; LidcError otherwise."""
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
    return data


def _parse(path, data):
    """The root element of the XML `data` read from `path`; LidcError if it is not one."""
    try:
        tree = etree.ElementTree(etree.fromstring(data, _parser()))
    except etree.XMLSyntaxError as e:
        raise LidcError(path, f"not well-formed XML ({e})") from None
    if _declares_doctype(tree):
        raise LidcError(path, "declares a document type (<!DOCTYPE>), which no LIDC read has: "
                              "refused (its entities are never expanded or fetched)")
    root = tree.getroot()
    if root is None:
        raise LidcError(path, "no root element")
    return root


def _declares_doctype(tree):
    # No LIDC read has a document type; one that declares entities or an external DTD is an
    # attack (XXE, entity expansion), not a read: refused rather than parsed around.
    return bool(tree.docinfo.doctype) or tree.docinfo.internalDTD is not None


class _LocalNames(dict):
    """{tag: its local name}, filled as tags are met: "{namespace}name" or "name" gives "name";
    comments and processing instructions (whose tag is not a string) give "". A lookup costs a
    fifth of splitting the tag each time, for the half a million elements of the archive."""

    def __missing__(self, tag):
        name = tag.rpartition("}")[2] if isinstance(tag, str) else ""
        if len(self) < _LOCAL_NAMES_KEPT:  # a file of made-up names cannot grow it forever
            self[tag] = name
        return name


_LOCAL_NAMES_KEPT = 10_000
_LOCAL = _LocalNames()


def _local(el):
    return _LOCAL[el.tag]


def _children(el, name):
    # "{*}name" matches the local name in any namespace or none, in C.
    return list(el.iterchildren(f"{{*}}{name}"))


def _first(el, name):
    return next(el.iterchildren(f"{{*}}{name}"), None)


def _string(el):
    """The text of `el` by XML's rules: all of its text, however split (XPath's string value).
    Comments, CDATA sections and character references never split a text in lxml's tree; a
    processing instruction or an element inside does, and then `.text` is only the first piece."""
    return (el.text or "") if not len(el) else el.xpath("string()")


def _text(el, name):
    return _value(_first(el, name))


def _value(el):
    """The stripped text of `el`, or None for no element."""
    return None if el is None else _string(el).strip()


def _fields(el, names):
    """{name: the first child of `el` with that local name} for those of `names` it has, in one
    pass over the children that stops once each is found (a region's points come after)."""
    found = {}
    for c in el:
        name = _LOCAL[c.tag]
        if name in names and name not in found:
            found[name] = c
            if len(found) == len(names):
                break
    return found


def check_ct_read(path, root):
    """Raises LidcError unless `root` is a CT read (LidcReadMessage)."""
    kind = _local(root)
    if kind == "IdriReadMessage":
        raise LidcError(path, "chest X-ray read (IdriReadMessage), not a CT read")
    if kind != "LidcReadMessage":
        raise LidcError(path, f"root element <{kind}> is not an LIDC read (LidcReadMessage)")


def header_uids(path, root=None):
    """(series_uid, study_uid) of a CT read; LidcError for anything else.

    Without `root`, only the start of the file is parsed, up to the end of its ResponseHeader:
    the rest of a file is then not yet known to be well-formed (parse_read, which reads it all,
    refuses it if it is not). Any file the start does not settle (no header there, another root
    element, a document type, an error before the header ends) is parsed whole, so that what it
    is refused for is what a whole parse says.
    """
    if root is None:
        uids = _header_from_start(path)
        if uids is not None:
            return uids
        root = load_root(path)
    check_ct_read(path, root)
    header = _first(root, "ResponseHeader")
    if header is None:
        raise LidcError(path, "no ResponseHeader, so no SeriesInstanceUid: the series it reads "
                              "is unknown")
    return _uids(path, header)


def _uids(path, header):
    series = _text(header, "SeriesInstanceUid")
    if not series:
        raise LidcError(path, "no SeriesInstanceUid in the ResponseHeader: the series it reads "
                              "is unknown")
    return series, _text(header, "StudyInstanceUID") or ""


def _header_from_start(path):
    """(series_uid, study_uid) from the first ResponseHeader of a CT read, parsed incrementally
    and no further than its end; None for anything else (the caller then parses it whole)."""
    try:
        if not 0 < Path(path).stat().st_size <= MAX_XML_BYTES:
            return None
        # Only the headers' end events reach Python: the elements before them cost no call.
        parser = etree.XMLPullParser(events=("end",), tag="{*}ResponseHeader",
                                     **_PARSER_OPTIONS)
        with open(path, "rb") as f:
            while chunk := f.read(_HEADER_CHUNK):
                parser.feed(chunk)
                for _, el in parser.read_events():
                    root = el.getparent()
                    if root is None or root.getparent() is not None:
                        continue  # the root itself, or deeper than its children
                    if _declares_doctype(el.getroottree()) or _local(root) != "LidcReadMessage":
                        return None
                    return _uids(path, el)
    except (OSError, etree.XMLSyntaxError, LidcError):
        return None
    return None


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
    data = _file_bytes(path)
    stripped = _without_points(data)
    if stripped is not None:
        try:
            root = _parse(path, stripped[0])
        except LidcError:
            root = None  # refused below for what the file as written says (lines, columns)
        if root is not None:
            try:
                return _read(path, patient_id, root, stripped[1])
            except _RunOutOfPlace:
                pass
    return _read(path, patient_id, _parse(path, data), [])


def _read(path, patient_id, root, runs):
    """The Read of a parsed file; `runs` are the point runs `_without_points` took out of it."""
    series_uid, study_uid = header_uids(path, root)
    base = dict(patient_id=patient_id, series_uid=series_uid, xml_file=str(path))
    elements = _children(root, "readingSession")
    markers = dict(zip(root.iter(_MARKER_TAG), runs)) if runs else {}
    if len(markers) != len(runs):
        raise _RunOutOfPlace  # a run inside a comment, a CDATA section, ...
    points = _bulk_points(_regions_of(elements), markers)
    sessions = [_session(path, position, el, base, points, markers)
                for position, el in enumerate(elements)]
    return Read(path=str(path), series_uid=series_uid, study_uid=study_uid, sessions=sessions,
                misplaced=_misplaced(path, root))


# Nearly all of a read is its points, and every real read writes them one way: runs of
# <edgeMap> (or <locus>) elements without a prefix, each an xCoord then a yCoord holding a whole
# number in its one plain form, blanks between the tags. Such a run says nothing but its
# numbers, so it is taken out of the file before the parse (which then builds a tenth of the
# tree) and read with one regular expression and numpy; an empty <lidc-points/> takes its place
# in the tree, with the run's line breaks after it so that every line number stays right. The
# file is parsed as written instead when anything of a point is left outside the runs (another
# form, a prefix, a stray coordinate), when the marker's name is in the file already, or when a
# marker does not end up where its holders belong (a run inside a comment or CDATA section,
# holders outside a region): `_RunOutOfPlace`.
_BLANKS = rb"[ \t\r\n]*"
# One text per value, so that digests stay exact: a leading zero is refused after the match
# (_run_points), which cost less than a choice here.
_WHOLE = rb"[0-9]{1,6}"


def _run_pattern(holder):
    one = (rb"<%s>%s<xCoord>%s</xCoord>%s<yCoord>%s</yCoord>%s</%s>"
           % (holder, _BLANKS, _WHOLE, _BLANKS, _WHOLE, _BLANKS, holder))
    # Possessive: nothing follows the repeat, so it never gives back a point, and the engine
    # keeps no state to do so (a third faster).
    return rb"%s(?:%s%s)*+" % (one, _BLANKS, one)


# Each begins with its literal tag, which the engine finds fast (a choice of the two is 3x slower).
_RUNS = (re.compile(_run_pattern(b"edgeMap")), re.compile(_run_pattern(b"locus")))
_MARKER = "lidc-points"
_MARKER_TAG = "{*}" + _MARKER
_POINT_WORDS = (b"edgeMap", b"locus", b"xCoord", b"yCoord")
_POINT_NAMES = frozenset(("edgeMap", "locus", _MARKER))
_ALL_BYTES = bytes(range(256))
_NOT_LINE_BREAKS = _ALL_BYTES.translate(None, b"\r\n")
# Digits kept, tags' "<" turned into separators, everything else dropped: a few bytes a point.
_NUMBERS = bytes(0x20 if c == 0x3C else c for c in _ALL_BYTES)
_NOT_NUMBERS = bytes(c for c in _ALL_BYTES if not (0x30 <= c <= 0x39 or c in b"<-"))
_BETWEEN_RUNS = b"<-1<"
_BLANK_RUN = re.compile(rb"[ \t\r\n]+")
_LEADING_ZERO = re.compile(rb" 0[0-9]")


class _RunOutOfPlace(Exception):
    """A marker of `_without_points` is not where the holders of its run belong, or its run
    holds a number with a leading zero: the file is read as written."""


def _without_points(data):
    """(data with each run of plainly written points replaced by a marker, [the runs' matches])
    or None when there is none, or something of a point is left outside them."""
    pieces, runs, last = [], [], 0
    found = [run for pattern in _RUNS for run in pattern.finditer(data)]
    crlf = b"\r" in data
    for run in sorted(found, key=lambda run: run.start()) if found else ():
        start, end = run.span()
        breaks = data[start:end].translate(None, _NOT_LINE_BREAKS) if crlf else \
            b"\n" * data.count(b"\n", start, end)
        pieces += (data[last:start], b"<lidc-points/>", breaks)
        runs.append(run)
        last = end
    if not runs:
        return None
    pieces.append(data[last:])
    out = b"".join(pieces)
    if any(word in out for word in _POINT_WORDS) or out.count(b"lidc-points") != len(runs):
        return None
    return out, runs


def _run_holder(run):
    return "edgeMap" if run.re is _RUNS[0] else "locus"


def _run_points(regions):
    """{region: (a range as long as its points, its (row, col) points)} of (region, its runs)
    pairs: the numbers of every run at once."""
    runs = [run for _, own in regions for run in own]
    if not runs:
        return {}
    # The runs' numbers, each run's ended by -1 (their only negative number).
    text = _BETWEEN_RUNS.join(run.group() for run in runs) + _BETWEEN_RUNS
    digits = text.translate(_NUMBERS, _NOT_NUMBERS)
    if _LEADING_ZERO.search(digits):
        raise _RunOutOfPlace  # "007" would read as 7, but its digest is not that of "7"
    values = np.fromstring(digits, dtype=np.int32, sep=" ")
    ends = np.flatnonzero(values < 0)
    if len(ends) != len(runs) or np.any(np.diff(ends, prepend=-1) % 2 == 0):
        raise _RunOutOfPlace  # never: the pattern holds two numbers a point
    points = np.delete(values, ends).reshape(-1, 2)[:, ::-1].copy()  # (yCoord, xCoord)
    ends = (ends - np.arange(len(ends))) // 2  # where each run's points end
    found, start, k = {}, 0, 0
    for el, own in regions:
        k += len(own)
        end = int(ends[k - 1])
        found[el] = (range(end - start), points[start:end])
        start = end
    return found


def _misplaced(path, root):
    """(path, reason) of each reading session not directly in the root, and each mark not
    directly in a session: no reader is known for them, so they are left out, never silently."""
    out = []
    sessions = set(root.iterchildren("{*}readingSession"))
    for el in root.iter("{*}readingSession", *(f"{{*}}{name}" for name in _MARKS)):
        parent = el.getparent()
        if parent in sessions:
            continue  # a mark where it belongs (most of them: no name to look up)
        if _local(el) == "readingSession":
            misplaced = parent is not root
        else:  # a mark inside a misplaced session goes with it, and is not named again
            misplaced = _local(parent) != "readingSession"
        if misplaced:
            out.append((str(path), f"line {el.sourceline}: <{_local(el)}> lies inside "
                                   f"<{_local(parent)}>, not where LIDC reads put it: left out"))
    return out


def _session(path, position, el, base, points, markers):
    reader = f"{Path(path).stem}:{position}"
    base = dict(base, reader=reader, radiologist_id=_text(el, "servicingRadiologistID") or "")
    children = list(el)
    keys, marks, dropped, faulty, positions, seen = [], [], [], set(), set(), {}
    session = Session(str(path), position, reader, (), marks, dropped, frozenset(), frozenset(),
                      children, markers)
    for index, child in enumerate(children):
        read_mark = _MARKS.get(_LOCAL[child.tag])
        if read_mark is None:  # a session's own fields (version, radiologist)
            keys.append((_LOCAL[child.tag], (child.text or "").strip(), len(child)))
            continue
        positions.add(index)
        mark, reasons, key = read_mark(path, child, base, points)
        keys.append(key)
        # One reader's mark twice over is one mark: the same digest as one read before it.
        first = next((i for i in seen.get(key, ()) if session.part(i) == session.part(index)),
                     None)
        if first is not None:
            dropped.append(f"line {child.sourceline}: <{_local(child)}> repeats the one at line "
                           f"{children[first].sourceline} of this session: read once")
            continue
        seen.setdefault(key, []).append(index)
        if mark is not None:
            marks.append(mark)
        if reasons:
            faulty.add(index)
            dropped.extend(reasons)
    session.keys, session.faulty, session.mark_positions = \
        tuple(keys), frozenset(faulty), frozenset(positions)
    return session


def _digest(el, markers=None):
    """A digest of an element's content as this module reads it: names without their namespace,
    attributes, and texts without surrounding blanks (so a re-indented copy is the same), its
    own tail included. Two elements have the same digest exactly when `_walk_digest` says so.

    Taken from lxml's serialisation (C speed) where that settles it: without attributes and
    processing instructions, the serialisation with namespace declarations and prefixes
    dropped, blanks next to tags removed and empty elements written one way holds exactly the
    names and stripped texts the walk hashes. Elements with attributes or processing
    instructions (which a copy has too, or it would not be the same) are walked. A marker of
    `_without_points` (in `markers`) stands for its run as the file has it.
    """
    text = _DECLARATIONS.sub("", etree.tostring(el, encoding=str))
    if "<?" in text or '="' in text:
        return "walk:" + _walk_digest(el, markers)
    # A carriage return, the one character lxml writes as a reference, is a blank to strip().
    text = text.replace("&#13;", "\r")
    if ":" in text:  # a prefix can only be there if a colon is
        text = _PREFIXES.sub(r"<\1", text)
    if "/>" in text:
        text = _EMPTY.sub(r"<\1></\1>", text)
    # Blanks after a tag, then before one: searched for in the reversed text, where the tag's
    # "<" comes first, which the regular expression engine finds much faster than a blank.
    text = _BLANKS_BEFORE_REVERSED.sub("<", _BLANKS_AFTER.sub(">", text)[::-1])[::-1]
    if markers and _MARKED in text:
        text = _with_runs(text, el, markers)
    return "text:" + hashlib.sha1(text.strip().encode()).hexdigest()


# Serialised, element text never holds "<" or ">" (lxml writes &lt; and &gt;), so these see tags.
_DECLARATIONS = re.compile(r' xmlns(?::[^\s=>]+)?="[^"]*"')
_PREFIXES = re.compile(r"<(/?)[^\s<>/:]+:")
_EMPTY = re.compile(r"<([^\s<>/]+)/>")
_BLANKS_AFTER = re.compile(r">\s+")
_BLANKS_BEFORE_REVERSED = re.compile(r"<\s+")


def _with_runs(text, el, markers):
    """`text` (serialised, blanks next to tags removed) with each marker in `el` replaced by its
    run, written the same way."""
    pieces = text.split(_MARKED)
    runs = [_BLANK_RUN.sub(b"", markers[m].group()).decode() for m in el.iter(_MARKER_TAG)]
    return "".join(itertools.chain.from_iterable(zip(pieces, runs + [""])))


_MARKED = f"<{_MARKER}></{_MARKER}>"


def _walk_digest(el, markers=None):
    """The digest of `_digest`, node by node: for each element its name, attributes and text,
    then its children, then its tail; a processing instruction (which etree.iterwalk, used
    before, passed over with the text after it) by its target and text, then its tail."""
    h = hashlib.sha1()
    _walk(el, h, markers or {})
    return h.hexdigest()


def _walk(el, h, markers):
    run = markers.get(el)
    if run is not None:
        _walk_run(run, el.tail, h)
        return
    if isinstance(el.tag, str):
        attributes = sorted((etree.QName(k).localname, v) for k, v in el.attrib.items())
        h.update(f"\1{_local(el)}\3{attributes!r}\3{(el.text or '').strip()}".encode())
    else:  # a processing instruction (the parser drops comments)
        h.update(f"\4{el.target}\3{(el.text or '').strip()}".encode())
    for child in el:
        _walk(child, h, markers)
    h.update(b"\2" + (el.tail or "").strip().encode())


def _walk_run(run, tail, h):
    """What `_walk` hashes for the holders of a run, the last of them followed by `tail`."""
    numbers = run.group().translate(_NUMBERS, _NOT_NUMBERS).split()
    holder = f"\1{_run_holder(run)}\3[]\3".encode()
    for x, y in zip(numbers[::2], numbers[1::2]):
        h.update(holder + b"\1xCoord\3[]\3" + x + b"\2\1yCoord\3[]\3" + y + b"\2\2")
    h.update((tail or "").strip().encode())


def _signature(el, points, holders=False):
    """A key of a mark element that two elements with the same `_digest` always share, cheap to
    get: its name, its children's own texts (stripped, as the digest has them: not their string
    values, which a processing instruction inside could make differ), and the points of each
    region read on the fast path (made from those same texts; None for a region read point by
    point, whose values could differ in that way). With `holders` (a non-nodule's, whose point
    holders are its children), the holders' texts are left out, since a run taken out of the
    file has none; a nodule's holders are its regions' children."""
    texts = (c.text for c in el if _LOCAL[c.tag] not in _POINT_NAMES) if holders else \
        (c.text for c in el)
    return _local(el), tuple((t or "").strip() for t in texts), tuple(points)


def _nodule(path, el, base, points):
    """(Mark or None, reasons for what was left out, signature) of an unblindedReadNodule;
    `points` is `_bulk_points` of the file's regions."""
    fields = _fields(el, ("noduleID", "characteristics"))
    nodule_id = _value(fields.get("noduleID")) or ""
    what = f"nodule {nodule_id!r} (line {el.sourceline})"
    elements = [(r, *points[r]) for r in _children(el, "roi")]
    # The label comes from the element structure, not from the regions that parse: a contour
    # dropped for a bad number leaves a nodule >= 3 mm, never turns it into a small one.
    contoured = any(len(edges) > 1 for _, edges, _ in elements)
    rois, dropped, fast = _regions(path, elements, contoured, what)
    characteristics, bad = _characteristics(fields.get("characteristics"))
    dropped.extend(f"{reason}, for {what}" for reason in bad)
    key = _signature(el, fast)
    if not rois:
        missing = "usable region" if elements else "region (roi)"
        return None, dropped + [f"line {el.sourceline}: {what} has no {missing}: the mark is "
                                f"left out"], key
    mark = Mark(**base, label=NODULE if contoured else SMALL_NODULE, nodule_id=nodule_id,
                rois=rois, characteristics=characteristics, line=el.sourceline)
    return mark, dropped, key


def _regions(path, elements, contoured, what):
    """(Rois, reasons for what was left out, the bytes of each region's points where the fast
    path read them, else None) of a nodule's (<roi>, its <edgeMap>s, its fast points or None):
    a region that does not parse, or repeats one already read (it would give the same patch
    twice), is left out."""
    rois, dropped, lines, fast = [], [], {}, []
    for el, edges, points in elements:
        fast.append(None if points is None else points.tobytes())
        try:
            roi = _roi(path, el, edges, contoured, points)
        except LidcError as e:
            dropped.append(f"{e.reason}: this region of {what} is left out")
            continue
        key = (roi.z, roi.sop_uid, roi.inclusion,
               roi.points.tobytes() if fast[-1] is None else fast[-1])
        if key in lines:
            dropped.append(f"line {el.sourceline}: this region of {what} repeats the one at line "
                           f"{lines[key]}: read once")
            continue
        lines[key] = el.sourceline
        rois.append(roi)
    return rois, dropped, fast


def _non_nodule(path, el, base, points):
    """(Mark or None, reasons for what was left out, signature) of a nonNodule; `points` is
    `_bulk_points` of the file's regions."""
    fields = _fields(el, _NON_NODULE_FIELDS)
    nodule_id = _value(fields.get("nonNoduleID")) or ""
    key = _signature(el, (), holders=True)
    try:
        loci, locus = points[el]
        if locus is None:
            locus = np.array([_point(path, p) for p in loci], np.int32)
        if not len(locus):
            raise LidcError(path, f"line {el.sourceline}: <nonNodule> has no <locus>")
        roi = Roi(z=_number(path, el, "imageZposition", fields),
                  sop_uid=_value(fields.get("imageSOP_UID")) or "", inclusion=True, points=locus,
                  line=el.sourceline)
    except LidcError as e:
        return None, [f"{e.reason}: non-nodule {nodule_id!r} (line {el.sourceline}) is left "
                      "out"], key
    return Mark(**base, label=NON_NODULE, nodule_id=nodule_id, rois=[roi],
                line=el.sourceline), [], key


_MARKS = {"unblindedReadNodule": _nodule, "nonNodule": _non_nodule}
_NON_NODULE_FIELDS = ("nonNoduleID", "imageZposition", "imageSOP_UID")
_ROI_FIELDS = ("imageZposition", "imageSOP_UID", "inclusion")
_PARENT = etree._Element.getparent
_TEXT = operator.attrgetter("text")


def _regions_of(sessions):
    """(element, the name of its point holders) of each region the sessions' marks have: each
    <roi> of a nodule (<edgeMap>), each non-nodule (<locus>)."""
    for session in sessions:
        for mark in session.iterchildren("{*}unblindedReadNodule", "{*}nonNodule"):
            if _local(mark) == "nonNodule":
                yield mark, "locus"
            else:
                for roi in mark.iterchildren("{*}roi"):
                    yield roi, "edgeMap"


def _bulk_points(regions, markers):
    """{region element: (its point holders, its (row, col) points, or None where the careful
    path is to read them)} of (element, holder name) pairs: the points of a file, in bulk.
    A region whose holders `_without_points` took out (`markers`: marker element: its run) has
    a range as long as its points for holders; a marker anywhere else raises _RunOutOfPlace.

    A region's points are read in bulk when every xCoord and yCoord under it is the child of one
    of its holders, one of each per holder (so the first of each, which the careful path reads,
    is the only one), with nothing inside but its text (so that `.text` is all of it), and every
    number parses, is finite and within range. Their values are then those of the careful path:
    the same float() of the same text, rounded half to even as round() does. The numbers of the
    whole file are converted at once; only when one of them is bad is each region converted
    alone, to find the regions that are not.
    """
    found, plain, ys, xs = {}, [], [], []
    runs = defaultdict(list)
    for marker, run in markers.items():
        runs[marker.getparent()].append(run)
    taken = []
    for el, name in regions:
        own = runs.pop(el, None)
        if own is not None:
            if any(_run_holder(run) != name for run in own):
                raise _RunOutOfPlace
            taken.append((el, own))
            continue
        holders = _children(el, name)
        found[el] = (holders, None)
        x, y = list(el.iter("{*}xCoord")), list(el.iter("{*}yCoord"))
        if list(map(_PARENT, x)) == holders and list(map(_PARENT, y)) == holders and \
                not any(map(len, x)) and not any(map(len, y)):
            # Texts, not the elements, are kept: holding every proxy of a file would have the
            # garbage collector walk them over and over.
            plain.append((el, len(ys), len(y)))
            ys += map(_TEXT, y)
            xs += map(_TEXT, x)
    points = _to_points(ys, xs)
    for el, start, n in plain:
        part = points[start:start + n] if points is not None else \
            _to_points(ys[start:start + n], xs[start:start + n])
        found[el] = (found[el][0], part)
    if runs:
        raise _RunOutOfPlace
    found.update(_run_points(taken))
    return found


def _to_points(ys, xs):
    """(row, col) int32 points from the texts of as many yCoords and xCoords; None when one is
    missing (None), not a number, not finite or out of range."""
    try:
        values = np.fromiter(map(float, itertools.chain(ys, xs)), float, 2 * len(ys))
        values = values.reshape(2, -1)
    except (TypeError, ValueError):  # TypeError: an empty element has no text (None)
        return None
    # NaN compares false: one test for not a number, infinite and out of range.
    if values.size and not np.abs(values).max() <= _LIMIT:
        return None
    return np.rint(values).T.astype(np.int32, order="C")


def _roi(path, el, edges, contoured, points=None):
    if points is None:
        points = np.array([_point(path, p) for p in edges], np.int32).reshape(-1, 2)
    if not len(points):
        raise LidcError(path, f"line {el.sourceline}: <roi> has no <edgeMap> point")
    fields = _fields(el, _ROI_FIELDS)
    inclusion = (_value(fields.get("inclusion")) or "TRUE").upper()
    if inclusion not in ("TRUE", "FALSE"):
        raise LidcError(path, f"line {el.sourceline}: <inclusion> is {inclusion!r}, neither "
                              "TRUE nor FALSE")
    return Roi(z=_number(path, el, "imageZposition", fields),
               sop_uid=_value(fields.get("imageSOP_UID")) or "",
               inclusion=inclusion == "TRUE", points=points,
               status=STRAY if contoured and len(points) == 1 else "", line=el.sourceline)


def _point(path, el):
    """(row, col) from an edgeMap/locus: yCoord is the row, xCoord the column."""
    # One pass over the children: the first of each wins.
    found = {}
    for c in el:
        found.setdefault(_local(c), c)
    return (int(round(_parse_number(path, el, "yCoord", found.get("yCoord")))),
            int(round(_parse_number(path, el, "xCoord", found.get("xCoord")))))


def _number(path, el, name, fields):
    return _parse_number(path, el, name, fields.get(name))


# Beyond any coordinate, in mm or pixels.
_LIMIT = 1e6


def _parse_number(path, parent, name, el):
    """The number in `el` (the child `name` of `parent`); LidcError naming its line if it is
    missing, empty, not a number, not finite or beyond any coordinate."""
    if el is None:
        raise LidcError(path, f"line {parent.sourceline}: <{_local(parent)}> has no <{name}>")
    text = _string(el).strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    # NaN compares false: one test for all that is wrong with a number that parses.
    if value is None or not abs(value) <= _LIMIT:
        raise LidcError(path, f"line {el.sourceline}: <{name}> {_what_is_wrong(text, value)}")
    return value


def _what_is_wrong(text, value):
    """Why the text of a number is refused (`value`: its float, or None if it has none)."""
    if not text:
        return "is empty"
    if value is None:
        return f"is not a number: {text!r}"
    if not math.isfinite(value):
        return f"is not a finite number: {text!r}"
    return f"is out of range (beyond 1e6 mm or pixels): {text!r}"


def _characteristics(el):
    """(ratings, reasons) of a nodule's <characteristics> (or None): a rating that is not a
    whole number on its scale is left empty (never rounded or clipped into one) and named in a
    reason."""
    ratings, bad, seen = {}, [], set()
    for c in (el if el is not None else ()):
        name, text = _local(c), _string(c).strip()
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
    if len(a.keys) != len(b.keys):
        return False
    # Keys first: digests are computed only for children whose keys agree.
    if a.keys == b.keys and a.parts == b.parts:
        return True
    if not (a.faulty or b.faulty):
        return False
    intact = [i for i in range(len(a.keys)) if i not in a.faulty | b.faulty]
    # Agreeing on the session's header alone (version, an anonymous radiologist id) is not
    # being the same read: at least one intact mark must agree too.
    return all(a.keys[i] == b.keys[i] for i in intact) and \
        all(a.part(i) == b.part(i) for i in intact) and any(i in a.mark_positions for i in intact)


def _repeat_reason(copy, original):
    where = f"{original.path} session {original.position}"
    if copy.parts == original.parts:
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
