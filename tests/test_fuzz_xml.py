"""Fuzzing lidc.reads.parse_read: mutated LIDC reads give records or LidcError, nothing else.

Hypothesis drops, duplicates and reorders elements of a valid read, turns numbers into junk and
cuts the file short; the parser must return a Read whose records the next stages can use, or
raise LidcError naming the file, and never hang. A Read accounts for every mark element: read,
or named in its problems with the file and line. The bulk path reads every mutated read as the
careful path does, numbers written oddly (split by comments, CDATA, references, processing
instructions) as written plainly, and digests taken from the serialisation agree with the
walked ones. Derandomized: the same examples every run.
"""
import copy
import re

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st
from lxml import etree

from lidc import lesions, reads
from lidc.errors import LidcError
from lidc.stages import annotations
from tests.helpers import lidc_xml, square
from tests.test_reads_fast import careful, content, in_tree

SOPS = [f"1.2.3.{k}" for k in range(4)]
Z = [-10.0, -12.5, -15.0, -17.5]
VALID = lidc_xml([
    [{"kind": "nodule", "id": "N1", "malignancy": 4,
      "rois": [(Z[0], SOPS[0], True, square(40, 30, 3)), (Z[1], SOPS[1], True, square(41, 30, 4)),
               (Z[1], SOPS[1], False, square(41, 30, 1))]},
     {"kind": "nodule", "id": "P1", "rois": [(Z[2], SOPS[2], True, [(70, 80)])]},
     {"kind": "non", "id": "X1", "z": Z[3], "sop": SOPS[3], "xy": (100, 20)}],
    [{"kind": "nodule", "id": "N1b", "rois": [(Z[0], SOPS[0], True, square(39, 31, 3))]}],
])

JUNK = st.one_of(
    st.sampled_from(["", "-", "nan", "inf", "-inf", "1e309", "0x1F", "1,5", "9" * 400, "1e6",
                     "-1e7", " 12 ", "TRUE", "\u0663"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),  # settable in lxml
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
OPS = ("drop", "duplicate", "reorder", "junk", "truncate", "splice")
# tmp_path is shared by the examples of a test: each one overwrites the same file.
FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
MUTATIONS = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10 ** 6), JUNK,
                               st.binary(max_size=8)), min_size=1, max_size=6)


def mutate(mutations):
    """The valid read after `mutations`, as bytes; each picks its element by index modulo."""
    root = etree.fromstring(VALID.encode())
    byte_edits = []
    for op, pick, junk, raw in mutations:
        elements = [e for e in root.iter() if e is not root]
        if not elements:
            break
        target = elements[pick % len(elements)]
        parent = target.getparent()
        if op == "drop":
            parent.remove(target)
        elif op == "duplicate":
            parent.insert(parent.index(target) + 1, copy.deepcopy(target))
        elif op == "reorder":
            children = list(parent)
            parent[:] = children[pick % len(children):] + children[:pick % len(children)]
        elif op == "junk":
            numeric = [e for e in elements if _is_number(e.text)] or elements
            numeric[pick % len(numeric)].text = junk
        else:
            byte_edits.append((op, pick, raw))
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    for op, pick, raw in byte_edits:  # what no tree can hold: cut files, stray bytes
        at = pick % max(len(data), 1)
        data = data[:at] if op == "truncate" else data[:at] + raw + data[at:]
    return data


def _is_number(text):
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def assert_usable(read, data):
    """What the annotations stage does with a read must work on whatever the parser returned."""
    for mark in read.marks:
        assert mark.label in (0, 1, 2) and mark.rois
        for roi in mark.rois:
            assert np.isfinite(roi.z) and roi.points.ndim == 2 and roi.points.shape[1] == 2
    lesions.match_slices(read.marks, SOPS, sorted(Z), 2.5, (128, 128))
    assert len(lesions.cluster(read.marks, 0.7, 2.5)) == len(read.marks)
    assert len({len(column) for column in annotations.csv_columns(read.marks)}) == 1
    assert_accounted(read, data)
    # Reading the same file twice adds nothing: every session of the second copy is a repeat.
    once, _ = reads.unique_sessions(read.sessions)
    twice, repeats = reads.unique_sessions(read.sessions + reads.parse_read(read.path).sessions)
    assert len(twice) == len(once) and len(repeats) == 2 * len(read.sessions) - len(once)


def assert_accounted(read, data):
    """Each mark element of the file's reading sessions is a mark or a reported problem."""
    local = lambda e: etree.QName(e).localname if isinstance(e.tag, str) else ""  # noqa: E731
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, remove_comments=True))
    elements = [m for s in root if local(s) == "readingSession" for m in s
                if local(m) in ("unblindedReadNodule", "nonNodule")]
    dropped = [r for _, r in read.problems if "the mark is left out" in r or "of this session: "
               "read once" in r or re.search(r": non-nodule .* is left out", r)]
    assert all(p == read.path and re.match(r"(reading session \d+, )?line \d+: ", r)
               for p, r in read.problems), read.problems
    assert len(read.marks) + len(dropped) == len(elements)


def test_the_valid_read_parses(tmp_path):
    path = tmp_path / "001.xml"
    path.write_text(VALID)
    read = reads.parse_read(path)
    assert [m.label for m in read.marks] == [0, 1, 2, 0]


@FUZZ
@given(mutations=MUTATIONS)
def test_a_mutated_read_gives_records_or_lidc_error_naming_the_file(tmp_path, mutations):
    path = tmp_path / "fuzz.xml"
    path.write_bytes(mutate(mutations))
    try:
        read = reads.parse_read(path)
    except LidcError as e:
        assert e.path == str(path) and e.reason
        event("refused with LidcError")  # the share of each outcome: --hypothesis-show-statistics
        return
    event("parsed" if not read.problems else "parsed, elements left out")
    assert_usable(read, path.read_bytes())


# The fast paths (lidc.reads._without_points, then _bulk_points) against the points left in the
# tree and against the careful path, on the same mutated reads.

def outcome(path, digests=False):
    """What parse_read gives for `path`: its content (tests.test_reads_fast.content), or the
    LidcError's reason; with `digests`, and its sessions' digests (which find copies)."""
    try:
        read = reads.parse_read(path)
    except LidcError as e:
        return e.reason
    return content(read) + ((tuple(s.parts for s in read.sessions),) if digests else ())


@FUZZ
@given(mutations=MUTATIONS)
def test_the_fast_paths_read_a_mutated_read_as_the_careful_path_does(tmp_path, mutations):
    path = tmp_path / "fuzz.xml"
    path.write_bytes(mutate(mutations))
    fast = outcome(path, digests=True)
    with in_tree():
        assert outcome(path, digests=True) == fast
    with careful():
        assert outcome(path, digests=True) == fast


# Numbers written oddly but validly: split by a comment, a CDATA section, a character reference,
# a processing instruction or an element, with blanks around.
FORMS = (lambda a, b: f"{a}<!--c-->{b}", lambda a, b: f"<![CDATA[{a}]]>{b}",
         lambda a, b: a + "".join(f"&#{ord(c)};" for c in b), lambda a, b: f"{a}<?p x?>{b}",
         lambda a, b: f"{a}<i/>{b}", lambda a, b: f"\n {a}{b}\t")
NUMBER = re.compile(r"<(xCoord|yCoord|imageZposition|malignancy)>([^<]*)</\1>")
ODD = st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, len(FORMS) - 1),
                         st.integers(0, 8)), min_size=1, max_size=8)


def oddly_written(edits):
    """VALID with some of its numbers (each at most once) written in the FORMS, split at a
    chosen place."""
    found = list(NUMBER.finditer(VALID))
    chosen = {pick % len(found): (form, cut) for pick, form, cut in edits}
    text = VALID
    for k in sorted(chosen, reverse=True):  # from the end: earlier offsets stay valid
        m, (form, cut) = found[k], chosen[k]
        value = m.group(2)
        at = cut % (len(value) + 1)
        new = f"<{m.group(1)}>{FORMS[form](value[:at], value[at:])}</{m.group(1)}>"
        text = text[:m.start()] + new + text[m.end():]
    return text


@settings(FUZZ, max_examples=100)
@given(edits=ODD)
def test_numbers_written_oddly_read_as_written_plainly_on_both_paths(tmp_path, edits):
    (tmp_path / "plain").mkdir(exist_ok=True)
    (tmp_path / "odd").mkdir(exist_ok=True)
    plain, odd = tmp_path / "plain" / "001.xml", tmp_path / "odd" / "001.xml"
    plain.write_text(VALID)
    odd.write_text(oddly_written(edits))
    fast = outcome(odd)
    with careful():
        assert outcome(odd) == fast
    # The same marks as the plain read: only their lines differ where a form adds one.
    strip_lines = lambda c: [(*m[:5], [r[:7] for r in m[6]]) for m in c[2]]  # noqa: E731
    assert strip_lines(fast) == strip_lines(outcome(plain)) and fast[3] == []


@settings(FUZZ, max_examples=100)
@given(one=MUTATIONS, two=MUTATIONS, form=st.integers(0, 3))
def test_serialised_digests_agree_with_walked_ones(one, two, form):
    a = _elements(mutate(one))
    b = _elements(_form(mutate(two), form)) + _elements(_form(mutate(one), form))
    for x in a:
        for y in b:
            assert (reads._digest(x) == reads._digest(y)) == \
                (reads._walk_digest(x) == reads._walk_digest(y))


def _elements(data):
    try:
        root = etree.fromstring(data, reads._parser())
    except etree.XMLSyntaxError:
        return []
    return [e for s in root for e in s][:40]


def _form(data, form):
    """`data` written another way with the same content: re-indented, without namespace, with
    a prefix, or with CR LF line ends."""
    text = data.decode("utf-8", "replace")
    if form == 0:
        text = text.replace("><", ">\n  <")
    elif form == 1:
        text = text.replace(' xmlns="http://www.nih.gov"', "")
    elif form == 2:
        text = re.sub(r"<(/?)(?![?!])", r"<\1n:", text).replace('xmlns="', 'xmlns:n="')
    else:
        text = text.replace("\n", "\r\n")
    return text.encode()
