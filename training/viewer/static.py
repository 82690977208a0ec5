"""The viewer for one case as files that open from the file system, with no server.

    OUT/index.html        the page, with the case, the runs and every run's probabilities in it
    OUT/slices/NNNN.js    one slice each: viewerSlice(N, "base64 of zlib-compressed int16 HU")
    OUT/.viewer-export    marks OUT as an export, which a later export may replace

A page opened from file:// may not fetch files, but it may run scripts beside it: the slices are
such scripts, loaded when first shown. OUT is written beside its final place and renamed into it,
so it is always a whole export; an existing OUT that is not an export is refused, never replaced.

    summary = write_static(Path("data/work"), Path("runs"), Path("case-0001"), "LIDC-IDRI-0001")
"""
import json
from pathlib import Path

from lidc.cases import Cohort
from lidc.errors import LidcError
from lidc.io import atomic_folder
from lidc.windows import TRAINING
from training.data import dataset_digest
from training.viewer import content
from training.viewer.models import Models
from training.viewer.server import PAGE

MARKER = ".viewer-export"
PLACEHOLDER = "<!--VIEWER-DATA-->"


def embed(page, data):
    """The page with `data` in it as a JSON script element (id viewer-data); every '<' in the
    JSON is escaped, so no value can close the element."""
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return page.replace(PLACEHOLDER, f'<script id="viewer-data" type="application/json">'
                                     f"{text}</script>", 1)


def check_destination(out):
    """Refuses (LidcError) an OUT that exists and is not an earlier export."""
    if not out.exists():
        return
    if not out.is_dir() or not ((out / MARKER).is_file() or not any(out.iterdir())):
        raise LidcError(out, "exists and is not an earlier viewer export; choose a new folder "
                             "for --static")


def run_predictions(models, cohort, case):
    """run name -> the predictions payload of each run for the case's patches, or {error}."""
    indices = case.patch_indices()
    found = {}
    for info in models.available():
        try:
            probabilities = models.probabilities(
                info.name, case.series_uid, lambda: TRAINING.to_unit(cohort.patch_pixels(indices)))
            found[info.name] = content.predictions_payload(info.name, indices, probabilities)
        except (LidcError, LookupError) as e:
            found[info.name] = {"error": str(e)}
    return found


def write_static(work, runs, out, patient_id, series_uid=None, models=None):
    """Writes the export of one case (see the module) to OUT; returns what it holds: patient,
    series, slices, marks, runs.

    Raises:
      LidcError: no index in WORK, OUT is something else than an export.
      NotFound: no such patient or series.
    """
    out = Path(out)
    check_destination(out)
    cohort = Cohort.load(Path(work))
    case = cohort.case(patient_id, series_uid)
    models = models or Models(runs)
    runs_found = models.available()
    data = {"cases": {"cases": [content.case_summary(case)], "notes": list(cohort.notes)},
            "case": content.case_payload(cohort, case),
            "runs": content.runs_payload(runs_found, dataset_digest(Path(work) / "dataset")),
            "predictions": run_predictions(models, cohort, case)}
    with atomic_folder(out) as folder:
        (folder / "slices").mkdir()
        for index in range(case.slice_count):
            packed = content.packed_slice(case.read_slice(index))
            (folder / "slices" / f"{index:04d}.js").write_text(
                f'viewerSlice({index},"{packed}");\n')
        (folder / "index.html").write_text(embed(PAGE.read_text(), data), encoding="utf-8")
        (folder / MARKER).write_text("written by python -m tools.view --static\n")
    marks = sum(len(case.outlines_on(i)) for i in case.marked_slices())
    return {"patient": case.patient_id, "series": case.series_uid, "slices": case.slice_count,
            "marks": marks, "runs": [info.name for info in runs_found]}
