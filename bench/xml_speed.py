"""The XML reads at the parser's speed: `annotations --xml` against a bare lxml parse of the same files.

The corpus has the real LIDC-XML archive's size and make-up (1,318 files, about 1.79 million
edge-map points; 22% chest X-ray reads, six series read in several copied files, one TCIA
correction). It is made from the real sample reads in ../shared/lidc-samples when they are
there: each series' reads written again under new UIDs, with single CT reads chosen so that the
points per file stay near the archive's mean. Without the samples (users do not have them) the
reads are generated. Either way it is written once and cached under data/bench/ (ignored by
git), and the first line printed says which it is.

Timed, one worker, in this process: a bare `lxml.etree.parse` of every file, and the stage as
its command runs it (`lidc.stages.annotations.run(work, workers=1, force=True, xml_dir=...)`,
output suppressed), `--repeats` rounds alternating, medians of wall and CPU time; their ratio
is the target (at most 2). For context, one run with every region read point by point (the
careful path, which was the only one before), and where one run of the stage spends its time.

    python -m bench.xml_speed [--files 1300] [--repeats 3] [--samples DIR] [--cache DIR]
"""
import argparse
import contextlib
import hashlib
import io
import json
import math
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from lxml import etree

import bench

CACHE = Path("data/bench")
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "lidc-samples"
# The real archive (LIDC-XML-only): 1,318 files, 1.79 million edge-map points, 290 chest X-ray
# reads; six series read in copied files (one of them in six), one TCIA correction.
ARCHIVE_FILES, ARCHIVE_POINTS, ARCHIVE_CXR = 1318, 1_790_000, 290
COPIES = (6, 2, 2, 2, 2, 2)
UID = re.compile(r"1\.3\.6\.1\.4\.1\.14519\.5\.2\.1\.6279\.6001(?:\.\d+)+")
SINGLE_READS = ("157/158.xml", "185/100.xml", "186/049.xml", "188/011.xml", "189/110.xml")
# In the cached corpus' folder name: a corpus made by an earlier version is made again.
CORPUS_VERSION = 1


def plan(files):
    """How many chest X-ray reads, the files of each copied series, how many corrections, and
    how many edge-map points a corpus of `files` files has, in the archive's proportions."""
    share = files / ARCHIVE_FILES
    return {"cxr": round(ARCHIVE_CXR * share), "copies": COPIES[:round(len(COPIES) * share)],
            "corrections": round(share), "points": round(ARCHIVE_POINTS * share)}


def _new_uids(text, replica):
    """`text` with every UID replaced by one of its own for this replica (2.25.N, from a hash):
    the same old UID gets the same new one within a replica, so files that shared a series
    still do."""
    def new(match):
        digest = hashlib.sha1(f"{replica}:{match.group()}".encode()).hexdigest()
        return f"2.25.{int(digest[:30], 16)}"
    return UID.sub(new, text)


def _points(text):
    return text.count("<edgeMap>") + text.count("<locus>")


def sample_groups(samples):
    """The sample reads as groups of (file name, text) that each read one series, by kind:
    chest X-ray reads, a read to copy, a read and its correction, single CT reads."""
    def read(name):
        return Path(name).name, (samples / "xml" / name).read_text()
    own = next(samples.glob("LIDC-IDRI/*/*/*/*.xml"))
    return {"cxr": [[read("186/001.xml")], [read("186/002.xml")]],
            "copy": read("189/173.xml"),
            "correction": [read("157/161.xml"), read("161-resubmitted-correction-3-9-12.xml")],
            "single": [[read(n)] for n in SINGLE_READS] + [[(own.name, own.read_text())]]}


def fill(files, points, rest, target, weights):
    """Indices into `weights` (the points of each single read) for `rest` more files after
    `files` files of `points` points: each time the one that keeps the points per file nearest
    `target` (ties: the first)."""
    chosen = []
    for _ in range(rest):
        k = min(range(len(weights)),
                key=lambda i: (abs((points + weights[i]) / (files + 1) - target), i))
        chosen.append(k)
        files, points = files + 1, points + weights[k]
    return chosen


def layout(groups, files):
    """The corpus as a list of groups (the files of one series, as (name, text)), in the
    archive's make-up, from `groups` (sample_groups or generated_groups)."""
    p = plan(files)
    out = [groups["cxr"][i % len(groups["cxr"])] for i in range(p["cxr"])]
    name, text = groups["copy"]
    stem = int(Path(name).stem)
    out += [[(f"{stem + k:03d}.xml", text) for k in range(n)] for n in p["copies"]]
    out += [groups["correction"]] * p["corrections"]
    fixed = sum(len(g) for g in out)
    weights = [_points(g[0][1]) for g in groups["single"]]
    picks = fill(fixed, sum(_points(t) for g in out for _, t in g), max(0, files - fixed),
                 p["points"] / max(files, 1), weights)
    return out + [groups["single"][k] for k in picks]


def write_corpus(folder, groups, files):
    """Writes the corpus into `folder`, one subfolder per series, each group under new UIDs;
    returns (files, points, bytes)."""
    count = points = size = 0
    for replica, group in enumerate(layout(groups, files)):
        target = folder / f"{replica:04d}"
        target.mkdir(parents=True, exist_ok=True)
        for name, text in group:
            data = _new_uids(text, replica).encode()
            (target / name).write_bytes(data)
            count, points, size = count + 1, points + _points(text), size + len(data)
    return count, points, size


def corpus(cache, files, samples=SAMPLES):
    """(folder, description) of the cached corpus of `files` files, written first if needed:
    from the real samples when `samples` holds them, else generated."""
    kind = "samples" if (samples / "xml").is_dir() else "generated"
    folder = Path(cache) / f"xml-{kind}-{files}-v{CORPUS_VERSION}"
    marker = folder / "corpus.json"
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        groups = sample_groups(samples) if kind == "samples" else generated_groups()
        count, points, size = write_corpus(folder, groups, files)
        marker.write_text(json.dumps({"kind": kind, "files": count, "points": points,
                                      "bytes": size}))
    info = json.loads(marker.read_text())
    source = (f"the real sample reads of {samples} under new UIDs" if kind == "samples" else
              "generated reads (no ../shared/lidc-samples here)")
    return folder, (f"{folder}: {info['files']} files, {info['points']:,} edge-map points, "
                    f"{info['bytes'] / 1e6:.0f} MB; {source}")


# Generated reads, where the samples are absent: the real reads' shape and formatting. --------

def generated_groups(seed=0):
    """Groups like sample_groups', generated: chest X-ray reads, a read to copy, a read and its
    correction, and CT reads of several sizes (one, two, four and eight nodules per reader)."""
    rng = np.random.default_rng(seed)
    ct = [generated_read(rng, nodules) for nodules in (1, 2, 4, 8)]
    corrected = generated_read(rng, 3)
    fixed = corrected.replace("<noduleID>1</noduleID>", "<noduleID>1b</noduleID>", 1)
    return {"cxr": [[("001.xml", generated_read(rng, 0, root="IdriReadMessage"))]],
            "copy": ("173.xml", generated_read(rng, 3)),
            "correction": [("161.xml", corrected),
                           ("161-resubmitted-correction-3-9-12.xml", fixed)],
            "single": [[(f"{100 + k}.xml", text)] for k, text in enumerate(ct)]}


def generated_read(rng, nodules, readers=4, root="LidcReadMessage"):
    """One read in the real files' layout (namespace, header, indented elements): each reader
    outlines `nodules` nodules over a few slices and marks two small nodules and three
    non-nodules."""
    def uid():
        return f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{rng.integers(10 ** 18)}"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<{root} uid="{uid()}.0" xmlns="http://www.nih.gov">', "  <ResponseHeader>",
             "    <Version>1.8.1</Version>", f"    <SeriesInstanceUid>{uid()}</SeriesInstanceUid>",
             f"    <StudyInstanceUID>{uid()}</StudyInstanceUID>", "  </ResponseHeader>"]
    for reader in range(readers if nodules else 0):
        lines += ["  <readingSession>", "    <annotationVersion>3.12</annotationVersion>",
                  f"    <servicingRadiologistID>{reader}</servicingRadiologistID>"]
        for k in range(nodules):
            lines += _generated_nodule(rng, f"{k + 1}", uid)
        for k in range(2):
            lines += _generated_nodule(rng, f"s{k}", uid, slices=1, radius=0)
        for k in range(3):
            x, y = rng.integers(50, 450, 2)
            lines += ["    <nonNodule>", f"      <nonNoduleID>n{k}</nonNoduleID>",
                      f"      <imageZposition>{-100 - 2.5 * k}</imageZposition>",
                      f"      <imageSOP_UID>{uid()}</imageSOP_UID>",
                      f"      <locus><xCoord>{x}</xCoord><yCoord>{y}</yCoord></locus>",
                      "    </nonNodule>"]
        lines.append("  </readingSession>")
    return "\n".join(lines + [f"</{root}>", ""])


def _generated_nodule(rng, name, uid, slices=None, radius=None):
    """The lines of one unblindedReadNodule: a closed outline per slice (one point if radius 0)."""
    slices = slices or int(rng.integers(3, 9))
    radius = int(rng.integers(6, 14)) if radius is None else radius
    cx, cy = rng.integers(60, 440, 2)
    lines = ["    <unblindedReadNodule>", f"      <noduleID>{name}</noduleID>"]
    for s in range(slices):
        n = max(1, int(2 * math.pi * radius))
        angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
        xs, ys = np.rint(cx + radius * np.cos(angles)), np.rint(cy + radius * np.sin(angles))
        lines += ["      <roi>", f"        <imageZposition>{-120 - 2.5 * s}</imageZposition>",
                  f"        <imageSOP_UID>{uid()}</imageSOP_UID>",
                  "        <inclusion>TRUE</inclusion>"]
        lines += [f"        <edgeMap>\n          <xCoord>{x:.0f}</xCoord>\n          "
                  f"<yCoord>{y:.0f}</yCoord>\n        </edgeMap>" for x, y in zip(xs, ys)]
        lines.append("      </roi>")
    return lines + ["    </unblindedReadNodule>"]


# Timing. ----------------------------------------------------------------------------------

def xml_paths(folder):
    """Every .xml file under `folder`, sorted (as the stage lists them)."""
    return sorted(str(p) for p in Path(folder).rglob("*.xml"))


def bare_parse(paths):
    """Parses every file with lxml's defaults and nothing else."""
    for path in paths:
        etree.parse(path)


def run_stage(folder, work):
    """`annotations --xml folder` into `work` with one worker, its output suppressed."""
    from lidc.stages import annotations
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        annotations.run(work, workers=1, force=True, xml_dir=folder)


def careful_stage(folder, work):
    """run_stage with every region read point by point (the careful path)."""
    from lidc import reads
    def every_region_careful(regions, markers):
        return {el: (reads._children(el, name), None) for el, name in regions}
    with mock.patch.object(reads, "_without_points", lambda data: None), \
            mock.patch.object(reads, "_bulk_points", every_region_careful):
        run_stage(folder, work)


def timed(run):
    """(wall, cpu) seconds of one call of `run`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(folder, repeats=3, careful=True, scratch=None):
    """Median (wall, cpu) seconds of the bare parse and of the stage, alternating, and their
    ratios; with `careful`, one run of the careful path. Returns a dict of those."""
    paths = xml_paths(folder)
    bare_parse(paths)  # warm the page cache: both sides then read from memory
    times = {"bare": [], "ours": []}
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        work = Path(tmp) / "work"
        for _ in range(repeats):
            times["bare"].append(timed(lambda: bare_parse(paths)))
            times["ours"].append(timed(lambda: run_stage(folder, work)))
        out = {name: tuple(statistics.median(t[i] for t in runs) for i in (0, 1))
               for name, runs in times.items()}
        if careful:
            out["careful"] = timed(lambda: careful_stage(folder, work))
    out["ratio"] = tuple(o / b for o, b in zip(out["ours"], out["bare"]))
    return out


def breakdown(folder, scratch=None):
    """(wall, cpu) seconds of one run of the stage spent in its parts: the header pass, parsing
    the reads, grouping marks into lesions, saving each series' result, assembling the results,
    the lesions table, writing annotations.pkl and the CSV files; the rest is what remains
    (units, grouping sessions, counts)."""
    from lidc import resume
    from lidc.stages import annotations
    spent = {name: (0.0, 0.0) for name in PARTS if name not in ("rest", "total")}

    def clock(name, func):
        def timed_call(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                spent[name] = (spent[name][0] + time.perf_counter() - wall,
                               spent[name][1] + time.process_time() - cpu)
        return timed_call
    patches = [mock.patch.object(annotations, "header_uids",
                                 clock("headers", annotations.header_uids)),
               mock.patch.object(annotations, "parse_read",
                                 clock("parse_read", annotations.parse_read)),
               mock.patch.object(annotations, "cluster", clock("cluster", annotations.cluster)),
               mock.patch.object(resume.Parts, "save", clock("save", resume.Parts.save)),
               mock.patch.object(annotations, "assemble", clock("assemble", annotations.assemble)),
               mock.patch.object(annotations, "lesion_table",
                                 clock("lesion_table", annotations.lesion_table)),
               mock.patch.object(annotations, "save_pickle",
                                 clock("save_pickle", annotations.save_pickle)),
               mock.patch.object(annotations, "write_csv",
                                 clock("write_csv", annotations.write_csv)),
               mock.patch.object(annotations, "write_csv_columns",
                                 clock("write_csv", annotations.write_csv_columns)),
               mock.patch.object(annotations, "csv_columns",
                                 clock("write_csv", annotations.csv_columns))]
    with tempfile.TemporaryDirectory(dir=scratch) as tmp, contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        total = timed(lambda: run_stage(folder, Path(tmp) / "work"))
    spent["rest"] = tuple(t - sum(s[i] for s in spent.values()) for i, t in enumerate(total))
    spent["total"] = total
    return spent


PARTS = {"headers": "XML headers (grouping files by series)",
         "parse_read": "parsing the reads into marks (lidc.reads.parse_read)",
         "cluster": "grouping marks into lesions (lidc.lesions.cluster)",
         "save": "saving each series' result (lidc.resume.Parts.save)",
         "assemble": "assembling the series' results",
         "lesion_table": "the lesions table (lidc.luna16.lesion_rows)",
         "save_pickle": "writing annotations.pkl",
         "write_csv": "building and writing annotations.csv and lesions.csv",
         "rest": "the rest (units, sessions once, counts)",
         "total": "total"}


def rows(r):
    """The table of `measure`'s result: bare parse, the stage, their ratio, the careful path."""
    out = [["bare lxml.etree.parse of every file", *r["bare"], 1.0],
           ["annotations --xml, 1 worker", *r["ours"], r["ratio"][0]]]
    if "careful" in r:
        out.append(["  the same, every point read alone (1 run)", *r["careful"],
                    r["careful"][0] / r["bare"][0]])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1300, help="XML files in the corpus")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--samples", type=Path, default=SAMPLES,
                   help="the real samples (lidc-samples); generated reads when absent")
    p.add_argument("--cache", type=Path, default=CACHE, help="where the corpus is kept")
    p.add_argument("--no-careful", dest="careful", action="store_false",
                   help="skip the run of the careful path")
    args = p.parse_args(argv)
    print(f"machine: {bench.machine()}")
    folder, description = corpus(args.cache, args.files, args.samples)
    print(f"corpus: {description}")
    args.cache.mkdir(parents=True, exist_ok=True)
    r = measure(folder, args.repeats, args.careful, scratch=args.cache)
    print(f"\nseconds (median of {args.repeats}), one worker; ratio: wall time / the bare "
          "parse's")
    print(bench.table(["what", "wall", "cpu", "ratio"], rows(r)))
    print(f"\nannotations --xml / bare parse: {r['ratio'][0]:.2f}x wall, {r['ratio'][1]:.2f}x "
          "cpu (target: at most 2x)")
    spent = breakdown(folder, scratch=args.cache)
    print("\nwhere one run of annotations --xml spends its time; / bare: each over the bare "
          "parse's")
    print(bench.table(["part", "wall", "cpu", "wall / bare", "cpu / bare"],
                      [[PARTS[k], *v, v[0] / r["bare"][0], v[1] / r["bare"][1]]
                       for k, v in spent.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
