"""Fuzzing lidc.reads.parse_read: mutated LIDC reads give records or LidcError, nothing else.

Hypothesis drops, duplicates and reorders elements of a valid read, turns numbers into junk and
cuts the file short; the parser must return a Read whose records the next stages can use, or
raise LidcError naming the file, and never hang. A Read accounts for every mark element: read,
or named in its problems with the file and line. Derandomized: the same examples every run.
"""
import copy
import re

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st
from lxml import etree

from lidc import lesions, reads
from lidc.errors import LidcError
from tests.helpers import lidc_xml, square
from lidc.stages import annotations

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
    list(annotations.csv_rows(read.marks))
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


@settings(max_examples=150, deadline=2000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=MUTATIONS)
def test_a_mutated_read_gives_records_or_lidc_error_naming_the_file(tmp_path, mutations):
    # tmp_path is shared by the examples: each one overwrites the same file.
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
