"""lidc.reads at the parser's speed: the fast paths read what the careful path reads.

Runs of plainly written points are taken out of the file before the parse and read with numpy
(lidc.reads._without_points); the points left in the tree are read in bulk
(lidc.reads._bulk_points) unless a region holds something unusual, and then point by point.
Numbers split by a comment, a CDATA section, a character reference, a processing instruction or
an element are read by XML's rules (one number) either way. Session digests come from lxml's
serialisation where that is exact; headers from the start of a file. Each test reads the same
input on the fast paths and the careful one and compares; the real samples
(../shared/lidc-samples) are used when present.
"""
import contextlib
import pickle
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from lxml import etree

from lidc import reads
from lidc.errors import LidcError
from lidc.stages import annotations
from tests.helpers import SERIES_UID, STUDY_UID, lidc_xml, square

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "lidc-samples"
NODULE = {"kind": "nodule", "id": "N1", "malignancy": 4,
          "rois": [(-10.0, "1.2.3.1", True, square(40, 30, 3)),
                   (-12.5, "1.2.3.2", True, square(41, 31, 4))]}
NON = {"kind": "non", "id": "X1", "z": -15.0, "sop": "1.2.3.3", "xy": (100, 20)}
# Without the writer's indentation, so that the tests' edits find their elements side by side.
PLAIN = re.sub(r">\s+<", "><", lidc_xml([[NODULE, NON]]))


def edited(text, old, new):
    """`text` with its first `old` replaced by `new`; a test's edit must not miss silently."""
    assert old in text, old
    return text.replace(old, new, 1)


@contextlib.contextmanager
def in_tree():
    """Every point left in the tree: no run taken out before the parse."""
    with mock.patch.object(reads, "_without_points", lambda data: None):
        yield


@contextlib.contextmanager
def careful():
    """Every region read point by point, as before the fast paths."""
    def every_region(regions, markers):
        return {el: (reads._children(el, name), None) for el, name in regions}
    with in_tree(), mock.patch.object(reads, "_bulk_points", every_region):
        yield


def bulk_regions(path):
    """Whether a fast path read the points of each region (<roi>, <nonNodule>) of a file, in
    file order."""
    seen = []
    real = reads._bulk_points

    def spy(regions, markers):
        found = real(regions, markers)
        seen.extend(points is not None for _, points in found.values())
        return found
    with mock.patch.object(reads, "_bulk_points", spy):
        reads.parse_read(path)
    return seen


def runs_taken_out(path):
    """How many runs of points the read of `path` took out of the file before its parse (0 when
    it parsed the file as written)."""
    taken = []
    real = reads._read

    def spy(path, patient_id, root, runs):
        read = real(path, patient_id, root, runs)
        taken.append(len(runs))
        return read
    with mock.patch.object(reads, "_read", spy):
        reads.parse_read(path)
    return taken[-1]


def content(read):
    """What a Read gives the stages: every field of every mark and region, and its problems."""
    def roi(r):
        return (r.z, r.sop_uid, r.inclusion, r.points.dtype.str, r.points.shape,
                r.points.tobytes(), r.points.flags.c_contiguous, r.status, r.line)
    marks = [(m.label, m.nodule_id, m.reader, m.radiologist_id, m.characteristics, m.line,
              [roi(r) for r in m.rois]) for m in read.marks]
    return read.series_uid, read.study_uid, marks, read.problems


def both(tmp_path, text, name="001.xml"):
    """(content on the fast paths, content on the careful path) of `text` as a file; the
    content with every point left in the tree is checked to be the fast paths' too."""
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    fast = content(reads.parse_read(path))
    with in_tree():
        assert content(reads.parse_read(path)) == fast
    with careful():
        slow = content(reads.parse_read(path))
    return fast, slow


def first_point(read):
    return read.marks[0].rois[0].points[0].tolist()


# XML's rules: one number however its text is split. --------------------------------------

# (a text of two pieces, whether the bulk path reads a number written so)
SPLIT = [
    pytest.param(lambda a, b: f"{a}<!-- a comment -->{b}", True, id="comment"),
    pytest.param(lambda a, b: a + "".join(f"&#{ord(c)};" for c in b), True,
                 id="character-references"),
    pytest.param(lambda a, b: "".join(f"&#x{ord(c):x};" for c in a + b), True,
                 id="hex-character-references"),
    pytest.param(lambda a, b: f"<![CDATA[{a}]]>{b}", True, id="cdata"),
    pytest.param(lambda a, b: f" \n {a}<!-- c -->{b}\t ", True, id="blanks-and-comment"),
    pytest.param(lambda a, b: f"{a}<?pi data?>{b}", False, id="processing-instruction"),
    pytest.param(lambda a, b: f"<?pi?>{a}{b}<?pi?>", False, id="processing-instructions-around"),
    pytest.param(lambda a, b: f"{a}<b/>{b}", False, id="element"),
]


@pytest.mark.parametrize("split,bulk", SPLIT)
def test_a_split_coordinate_is_one_number_on_both_paths(tmp_path, split, bulk):
    xml = edited(PLAIN, "<xCoord>37</xCoord>", f"<xCoord>{split('1', '2')}</xCoord>")
    fast, slow = both(tmp_path, xml)
    assert fast == slow
    read = reads.parse_read(tmp_path / "001.xml")
    assert read.problems == []
    assert first_point(read) == [27, 12]  # (row, col) = (yCoord, xCoord)
    # Comments, CDATA and references leave one text node: the bulk path reads it; a processing
    # instruction or an element splits it: that region is read point by point.
    assert bulk_regions(tmp_path / "001.xml") == [bulk, True, True]


@pytest.mark.parametrize("split,bulk", SPLIT)
def test_split_texts_elsewhere_are_read_whole(tmp_path, split, bulk):
    xml = PLAIN
    for tag, old, a, b in [("imageZposition", "-10.000000 ", "-9", ".5"), ("noduleID", "N1", "N", "7"),
                           ("malignancy", "4", "", "3"), ("imageSOP_UID", "1.2.3.3", "1.2", ".3.3"),
                           ("yCoord", "20", "2", "0")]:
        xml = edited(xml, f"<{tag}>{old}</{tag}>", f"<{tag}>{split(a, b)}</{tag}>")
    fast, slow = both(tmp_path, xml)
    assert fast == slow
    read = reads.parse_read(tmp_path / "001.xml")
    nodule, non = read.marks
    assert (nodule.nodule_id, nodule.rois[0].z, nodule.characteristics) == \
        ("N7", -9.5, {"malignancy": 3})
    assert non.rois[0].points.tolist() == [[20, 100]] and non.rois[0].sop_uid == "1.2.3.3"
    assert bulk_regions(tmp_path / "001.xml") == [True, True, bulk]


def test_a_processing_instruction_no_longer_cuts_a_number_short(tmp_path):
    # Read before as its first piece ("1"): a point 11 columns away from the one drawn.
    xml = edited(PLAIN, "<xCoord>37</xCoord>", "<xCoord>3<?x?>7</xCoord>")
    (tmp_path / "001.xml").write_text(xml)
    assert first_point(reads.parse_read(tmp_path / "001.xml")) == [27, 37]


# Unusual regions: the careful path reads them, and the bulk path gives the same. ----------

ODD = [
    pytest.param("<edgeMap><xCoord>37</xCoord><yCoord>27</yCoord></edgeMap>",
                 "<edgeMap><yCoord>27</yCoord><xCoord>37</xCoord></edgeMap>", id="y-before-x"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>37</xCoord><xCoord>99</xCoord>",
                 id="two-x-first-wins"),
    pytest.param("<xCoord>37</xCoord>", "", id="no-x"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord></xCoord>", id="empty-x"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord/>", id="self-closed-x"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>  </xCoord>", id="blank-x"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>thirty</xCoord>", id="word"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>nan</xCoord>", id="nan"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>-inf</xCoord>", id="infinite"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>2e6</xCoord>", id="out-of-range"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>1e6</xCoord>", id="at-the-limit"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>36.5</xCoord>", id="half-to-even"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>37.5</xCoord>", id="half-to-even-up"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>-0.4</xCoord>", id="minus-zero"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>1_7</xCoord>", id="underscore"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord>\u0663\u0667</xCoord>", id="arabic-digits"),
    pytest.param("<xCoord>37</xCoord>", "<xCoord a='1'>37</xCoord>", id="attribute"),
    pytest.param("<edgeMap><xCoord>37</xCoord>",
                 "<edgeMap><other><xCoord>5</xCoord></other><xCoord>37</xCoord>",
                 id="x-nested-deeper"),
    pytest.param("<edgeMap><xCoord>37</xCoord>", "<edgeMap>junk<xCoord>37</xCoord>",
                 id="text-in-edge-map"),
    pytest.param("<inclusion>TRUE</inclusion>",
                 "<inclusion>TRUE</inclusion><xCoord>5</xCoord>", id="x-outside-edge-maps"),
    pytest.param("<edgeMap><xCoord>37</xCoord><yCoord>27</yCoord></edgeMap>",
                 "<edgeMap><xCoord>37</xCoord><yCoord>27</yCoord></edgeMap>"
                 "<edgeMap><xCoord>37</xCoord><yCoord>27</yCoord></edgeMap>",
                 id="point-twice"),
    pytest.param("<xCoord>37</xCoord>",
                 "<p:xCoord xmlns:p='http://other'>37</p:xCoord>", id="x-in-another-namespace"),
    pytest.param("<xCoord>100</xCoord>", "<xCoord>1<?p?>00</xCoord><xCoord>5</xCoord>",
                 id="locus-split-and-doubled"),
    pytest.param("<locus>", "<locus/><locus>", id="empty-locus-first"),
]


@pytest.mark.parametrize("old,new", ODD)
def test_an_unusual_region_reads_the_same_on_both_paths(tmp_path, old, new):
    fast, slow = both(tmp_path, edited(PLAIN, old, new))
    assert fast == slow


def test_a_bad_number_is_reported_with_its_line_and_the_rest_read_in_bulk(tmp_path):
    xml = edited(PLAIN, "<xCoord>37</xCoord>", "<xCoord>\n37x</xCoord>")
    fast, slow = both(tmp_path, xml)
    assert fast == slow
    read = reads.parse_read(tmp_path / "001.xml")
    [(_, reason)] = read.problems
    line = next(i for i, text in enumerate(xml.splitlines(), 1) if "<xCoord>" in text)
    assert f"line {line}: <xCoord> is not a number: '37x'" in reason
    # The other region and the non-nodule are still read in bulk.
    assert bulk_regions(tmp_path / "001.xml") == [False, True, True]


@pytest.mark.parametrize("namespace", [True, False])
def test_reads_without_namespace_or_with_a_prefix_take_the_bulk_path(tmp_path, namespace):
    xml = lidc_xml([[NODULE, NON]], namespace=namespace)
    if namespace:  # the same names under a prefix
        xml = re.sub(r"<(/?)(?!\?)", r"<\1n:", xml).replace('xmlns="', 'xmlns:n="')
    fast, slow = both(tmp_path, xml)
    assert fast == slow and len(fast[2]) == 2
    assert bulk_regions(tmp_path / "001.xml") == [True, True, True]


def test_local_names_stay_right_and_bounded_when_a_file_makes_up_names(tmp_path):
    made_up = "".join(f"<n{k}>x</n{k}>" for k in range(reads._LOCAL_NAMES_KEPT + 50))
    fast, slow = both(tmp_path, edited(PLAIN, "<ResponseHeader>",
                                       f"<junk>{made_up}</junk><ResponseHeader>"))
    assert fast == slow and len(fast[2]) == 2
    assert len(reads._LOCAL) <= reads._LOCAL_NAMES_KEPT
    root = etree.fromstring(b'<a xmlns="http://www.nih.gov"><b/><!--c--><?p x?></a>')
    assert [reads._local(el) for el in root.iter()] == ["a", "b", "", ""]


def test_points_are_c_ordered_int32_rows_and_columns(tmp_path):
    (tmp_path / "001.xml").write_text(PLAIN)
    points = reads.parse_read(tmp_path / "001.xml").marks[0].rois[0].points
    assert points.dtype == np.int32 and points.flags.c_contiguous
    assert points.tolist() == [[y, x] for x, y in square(40, 30, 3)]


# Session digests: the serialisation says what the walk says. ------------------------------

def elements_of(text):
    return list(etree.fromstring(text.encode(), reads._parser()).iter())


def digests_agree(a, b):
    return (reads._digest(a) == reads._digest(b)) == \
        (reads._walk_digest(a) == reads._walk_digest(b))


SAME = [
    pytest.param(lambda t: t.replace("><", ">\n   <"), id="re-indented"),
    pytest.param(lambda t: t.replace("<empty/>", "<empty>  </empty>"), id="empty-with-blanks"),
    pytest.param(lambda t: t.replace("<empty/>", "<empty></empty>"), id="empty-two-tags"),
    pytest.param(lambda t: t.replace(' xmlns="http://www.nih.gov"', ""), id="no-namespace"),
    pytest.param(lambda t: re.sub(r"<(/?)(?!\?)", r"<\1n:", t).replace('xmlns="', 'xmlns:n="'),
                 id="prefixed"),
    pytest.param(lambda t: t.replace("<annotationVersion>3.12</annotationVersion>",
                                     "<annotationVersion>&#13;3.12 &#13;</annotationVersion>"),
                 id="carriage-returns-at-the-edges"),
]


@pytest.mark.parametrize("variant", SAME)
def test_a_copy_that_differs_in_form_only_has_the_same_digests_and_keys(tmp_path, variant):
    original = PLAIN.replace("</noduleID>", "</noduleID><empty/>").replace(
        "<annotationVersion>", "<empty/><annotationVersion>")
    one, two = tmp_path / "001.xml", tmp_path / "002.xml"
    one.write_text(original)
    two.write_text(variant(original))
    a, b = reads.parse_read(one).sessions[0], reads.parse_read(two).sessions[0]
    assert a.keys == b.keys and a.parts == b.parts
    kept, skipped = reads.unique_sessions([a, b])
    assert [s is a for s in kept] == [True] and len(skipped) == 1


DIFFERENT = [
    ("<noduleID>N1</noduleID>", "<noduleID>N2</noduleID>"),
    ("<noduleID>N1</noduleID>", "<noduleID>N 1</noduleID>"),
    ("<noduleID>N1</noduleID>", "<nodule>N1</nodule>"),
    ("<noduleID>N1</noduleID>", "<noduleID a='1'>N1</noduleID>"),
    ("<noduleID>N1</noduleID>", "<noduleID>N1<?pi?></noduleID>"),
    ("<noduleID>N1</noduleID>", "<noduleID>N1&#13;1</noduleID>"),
    ("<xCoord>37</xCoord>", "<xCoord>37.0</xCoord>"),
    ("<xCoord>37</xCoord>", "<xCoord>37</xCoord><extra/>"),
    ("<noduleID>N1</noduleID>", "<noduleID>N1</noduleID>tail"),
]


@pytest.mark.parametrize("old,new", DIFFERENT)
def test_elements_that_differ_in_content_differ_in_digest_on_both_routes(old, new):
    a = elements_of(PLAIN)
    b = elements_of(edited(PLAIN, old, new))
    pairs = [(x, y) for x, y in zip(a, b)]
    assert all(digests_agree(x, y) for x, y in pairs)
    assert any(reads._digest(x) != reads._digest(y) for x, y in pairs)


def test_attributes_and_processing_instructions_are_walked_the_rest_serialised():
    plain, pi, attribute = etree.fromstring("<r><a>1</a><b>1<?p?></b><c k='v'>1</c></r>")
    assert reads._digest(plain).startswith("text:")
    assert reads._digest(pi).startswith("walk:") and reads._digest(attribute).startswith("walk:")
    assert reads._digest(pi[0]).startswith("walk:")  # a processing instruction of its own


# Headers from the start of the file. ------------------------------------------------------

HEADERS = [
    pytest.param(PLAIN, id="plain"),
    pytest.param(lidc_xml([[NON]], namespace=False), id="no-namespace"),
    pytest.param(PLAIN.replace("UTF-8", "UTF-16").encode("utf-16"), id="utf-16"),
    pytest.param(PLAIN.replace("UTF-8", "ISO-8859-1").replace("N1", "N\u00e9").encode("latin-1"),
                 id="latin-1"),
    pytest.param(re.sub(r"(<ResponseHeader>.*</ResponseHeader>)\n(.*)(</LidcReadMessage>)",
                        r"\2\1\3", PLAIN, flags=re.S), id="header-last"),
    pytest.param(PLAIN.replace("<ResponseHeader>", "<ResponseHeader><ResponseHeader>"
                               "<SeriesInstanceUid>9.9</SeriesInstanceUid></ResponseHeader>"),
                 id="header-nested-in-header"),
    pytest.param(PLAIN.replace("</ResponseHeader>", "</ResponseHeader><ResponseHeader>"
                               "<SeriesInstanceUid>9.9</SeriesInstanceUid></ResponseHeader>"),
                 id="two-headers"),
    pytest.param(PLAIN.replace("<SeriesInstanceUid>", "<SeriesInstanceUid> <?p?>1.2<!-- c -->."
                               "&#51;<?p?>"), id="uid-split"),
    pytest.param(PLAIN + "\n" + "<!-- a comment as long as a read -->" * 2000, id="long-tail"),
]


@pytest.mark.parametrize("text", HEADERS)
def test_the_header_from_the_start_is_the_header_of_the_whole_file(tmp_path, text):
    path = tmp_path / "001.xml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    whole = reads.header_uids(path, reads.load_root(path))
    assert reads.header_uids(path) == whole


REFUSED = [
    pytest.param(lidc_xml([[NON]], root="IdriReadMessage"), id="chest-x-ray"),
    pytest.param("", id="empty"),
    pytest.param("<LidcReadMessage><ResponseHeader>", id="cut-in-the-header"),
    pytest.param(PLAIN.replace("ResponseHeader>", "Other>"), id="no-header"),
    pytest.param(PLAIN.replace("SeriesInstanceUid>", "Other>"), id="no-series-uid"),
    pytest.param(PLAIN.replace("?>", '?>\n<!DOCTYPE r [<!ENTITY e "x">]>', 1), id="doctype"),
    pytest.param(lidc_xml([[NON]], root="IdriReadMessage")[:400], id="cut-chest-x-ray"),
]


@pytest.mark.parametrize("text", REFUSED)
def test_a_file_the_start_does_not_settle_is_refused_for_what_a_whole_parse_says(tmp_path,
                                                                                   text):
    path = tmp_path / "001.xml"
    path.write_text(text)
    with pytest.raises(LidcError) as whole:
        reads.header_uids(path, reads.load_root(path)) if text else reads.load_root(path)
    with pytest.raises(LidcError) as start:
        reads.header_uids(path)
    assert (start.value.path, start.value.reason) == (whole.value.path, whole.value.reason)


def test_a_file_broken_after_its_header_is_refused_in_file_order(tmp_path):
    xml = tmp_path / "xml"
    xml.mkdir()
    (xml / "a.xml").write_text(lidc_xml([[NON]], root="IdriReadMessage"))
    (xml / "b.xml").write_text(PLAIN[:-60])  # its header reads; its end is cut off
    (xml / "c.xml").write_text(lidc_xml([[NON]], series_uid="1.2.3.4"))
    (xml / "d.xml").write_text("")
    assert reads.header_uids(xml / "b.xml") == (SERIES_UID, STUDY_UID)
    result = annotations.run(tmp_path / "work", xml_dir=xml)
    assert [(Path(p).name, r.split(" (")[0]) for p, r in result.skipped] == [
        ("a.xml", "chest X-ray read"), ("b.xml", "not well-formed XML"), ("d.xml", "empty file")]


# Whole stage: byte-identical outputs on both paths. ---------------------------------------

def stage_outputs(xml, work, point_by_point):
    with careful() if point_by_point else contextlib.nullcontext():
        annotations.run(work, xml_dir=xml, force=True)
    csv = (work / "annotations.csv").read_bytes()
    skipped = (work / "skipped" / "annotations.csv").read_bytes()
    return csv, skipped, (work / "annotations.pkl").read_bytes()


def assert_same_outputs_on_both_paths(xml, tmp_path):
    fast = stage_outputs(xml, tmp_path / "fast", False)
    slow = stage_outputs(xml, tmp_path / "slow", True)
    # Same paths in both: only the work folder differs, and it is in no output.
    assert fast == slow
    return pickle.loads(fast[2])["marks"]


@pytest.mark.skipif(not (SAMPLES / "xml").is_dir(), reason="no ../shared/lidc-samples/xml here")
def test_the_real_samples_give_byte_identical_outputs_on_both_paths(tmp_path):
    xml = tmp_path / "xml"
    own = next(SAMPLES.glob("LIDC-IDRI/*/*/*/*.xml"))
    shutil.copytree(SAMPLES / "xml", xml)
    shutil.copy(own, xml / own.name)
    marks = assert_same_outputs_on_both_paths(xml, tmp_path)
    assert len(marks) > 262  # the README's 262 marks of xml/, and LIDC-IDRI-0003's


ODD_FILES = {
    "plain.xml": lambda t: t,
    "reindented.xml": lambda t: t.replace("><", ">\n\t<"),
    "crlf.xml": lambda t: t.replace("\n", "\r\n"),
    "split.xml": lambda t: t.replace("<xCoord>4", "<xCoord><!-- c -->4").replace(
        "<yCoord>3", "<yCoord><![CDATA[3]]>").replace("0</xCoord>", "&#48;</xCoord>"),
    "pi.xml": lambda t: t.replace("1</yCoord>", "<?p?>1</yCoord>"),
    "damaged.xml": lambda t: t.replace("<xCoord>43</xCoord>", "<xCoord>4 3</xCoord>", 1),
}


def test_generated_reads_with_odd_formatting_give_byte_identical_outputs(tmp_path):
    xml = tmp_path / "xml"
    xml.mkdir()
    for k, (name, form) in enumerate(ODD_FILES.items()):
        sessions = [[dict(NODULE, id=f"N{k}"), dict(NON, id=f"X{k}")],
                    [dict(NODULE, rois=NODULE["rois"][:1])]]
        (xml / name).write_text(form(lidc_xml(sessions, series_uid=f"1.2.3.{k % 3}")))
    (xml / "copy.xml").write_text(lidc_xml([[dict(NODULE, id="N0"), dict(NON, id="X0")]],
                                           series_uid="1.2.3.0", namespace=False))
    (xml / "latin.xml").write_bytes(
        PLAIN.replace("UTF-8", "ISO-8859-1").replace("N1", "N\u00e9").encode("latin-1"))
    marks = assert_same_outputs_on_both_paths(xml, tmp_path)
    assert {m.nodule_id for m in marks} >= {"N0", "N1", "N2", "N3", "N4", "N5", "N\u00e9"}


# Runs of points taken out before the parse (lidc.reads._without_points). -------------------

RUN = "<edgeMap><xCoord>1</xCoord><yCoord>2</yCoord></edgeMap>"


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_plain_points_are_taken_out_before_the_parse_and_every_line_stays(tmp_path, line_end):
    # A bad rating and a bad z after the runs: their reasons name their lines.
    xml = lidc_xml([[NODULE, NON], [NODULE]]).replace("<malignancy>4<", "<malignancy>9<")
    xml = edited(xml, "<imageZposition>-12.500000 </imageZposition>",
                 "<imageZposition>high</imageZposition>").replace("\n", line_end)
    fast, slow = both(tmp_path, xml)
    assert fast == slow and runs_taken_out(tmp_path / "001.xml") == 5
    assert len(fast[3]) == 3 and all("line " in reason for _, reason in fast[3])


# (where, what): something that looks like points but is not where they belong, or a file the
# runs would read differently from its tree; each is parsed as written.
PARSED_AS_WRITTEN = [
    ("<noduleID>N1</noduleID>", f"<noduleID>N1</noduleID><!--{RUN}-->"),
    ("<noduleID>N1</noduleID>", f"<noduleID><![CDATA[{RUN}]]>N1</noduleID>"),
    ("<noduleID>N1</noduleID>", f"<noduleID>N1</noduleID><?pi {RUN}?>"),
    ("<noduleID>N1</noduleID>", f"<noduleID>N1</noduleID>{RUN}"),  # holders outside a region
    ("<inclusion>TRUE</inclusion>",
     "<inclusion>TRUE</inclusion><locus><xCoord>1</xCoord><yCoord>2</yCoord></locus>"),
    ("<noduleID>N1</noduleID>", "<noduleID>lidc-points</noduleID>"),  # the marker's name
    ("<xCoord>37</xCoord>", "<xCoord>037</xCoord>"),  # not the number's one plain form
    ("<yCoord>27</yCoord>", "<yCoord>00</yCoord>"),
    ("<xCoord>37</xCoord>", "<xCoord>1234567</xCoord>"),  # beyond six digits
    ("<xCoord>37</xCoord>", "<xCoord> 37</xCoord>"),
    ("<edgeMap><xCoord>38</xCoord>", '<edgeMap a="1"><xCoord>38</xCoord>'),
    ("<xCoord>38</xCoord>", "<xCoord>38</xCoord><xCoord>5</xCoord>"),
]


@pytest.mark.parametrize("old,new", PARSED_AS_WRITTEN)
def test_points_out_of_their_plain_place_are_read_from_the_file_as_written(tmp_path, old, new):
    fast, slow = both(tmp_path, edited(PLAIN, old, new))
    assert fast == slow and runs_taken_out(tmp_path / "001.xml") == 0


def test_a_zero_is_plain_and_read_from_the_runs(tmp_path):
    fast, slow = both(tmp_path, edited(PLAIN, "<xCoord>37</xCoord>", "<xCoord>0</xCoord>"))
    assert fast == slow and runs_taken_out(tmp_path / "001.xml") > 0
    assert first_point(reads.parse_read(tmp_path / "001.xml")) == [27, 0]


def test_a_file_broken_after_a_run_is_refused_for_what_it_says_as_written(tmp_path):
    # On one line: the column of the fault is after the runs taken out.
    path = tmp_path / "001.xml"
    path.write_text(edited(PLAIN, "</inclusion><edgeMap>", "</inclusion><edgeMap>")
                    .replace("</roi><roi>", "</roi><roi <>", 1))
    with pytest.raises(LidcError) as fast:
        reads.parse_read(path)
    with pytest.raises(LidcError) as written:
        reads.load_root(path)
    assert fast.value.reason == written.value.reason and "column" in fast.value.reason


@pytest.mark.parametrize("extra", [' a="1"', ""])
def test_a_copy_read_as_written_is_the_same_session_as_one_read_from_runs(tmp_path, extra):
    # The comment keeps the copy's points in its tree; an attribute has digests walked.
    original = PLAIN.replace("<roi>", f"<roi{extra}>")
    one, two = tmp_path / "001.xml", tmp_path / "002.xml"
    one.write_text(original)
    two.write_text(edited(original, "</noduleID>", "</noduleID><!-- edgeMap -->"))
    assert runs_taken_out(one) > 0 and runs_taken_out(two) == 0
    a, b = reads.parse_read(one).sessions[0], reads.parse_read(two).sessions[0]
    assert a.keys == b.keys and a.parts == b.parts
    changed = reads.parse_read(one).sessions[0]
    changed_file = tmp_path / "003.xml"
    changed_file.write_text(edited(original, "<xCoord>38</xCoord>", "<xCoord>39</xCoord>"))
    assert reads.parse_read(changed_file).sessions[0].parts != changed.parts
