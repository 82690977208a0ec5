"""What the viewer's page is sent: the cases, one case, the runs, a run's probabilities and the
slices. The server and the static export both build their answers here, so both show the same.

Every payload is a JSON-able dict; points are (row, col) pixels, 0-based from the top-left. A
slice is int16 HU, row after row: little-endian bytes from the server (`slice_bytes`), the same
bytes zlib-compressed and in base64 in a static export (`packed_slice`).

    payload = case_payload(cohort, cohort.case("LIDC-IDRI-0001"))
"""
import base64
import zlib

import numpy as np

from lidc.records import CLASS_NAMES
from lidc.windows import LUNG, TRAINING

# One colour per reader, far from every grey (each has a channel at least 150 above another), so
# that a mark never looks like a CT grey level and a screenshot can tell it apart.
READER_COLOURS = ("#ff3030", "#30e030", "#3c8cff", "#ffd000", "#ff30ff", "#00e0e0",
                  "#ff8c00", "#a050ff", "#b0ff30", "#ff3c96")


def reader_colours(readers):
    """reader -> '#rrggbb': READER_COLOURS in the order of the sorted readers (repeated past
    ten readers)."""
    return {reader: READER_COLOURS[i % len(READER_COLOURS)]
            for i, reader in enumerate(sorted(readers))}


def windows():
    """The HU windows the page offers, as level (centre) and width: lidc.windows' lung window
    first (the default), then the window the networks are trained on."""
    return [{"name": name, "level": (window.low + window.high) / 2, "width": window.width}
            for name, window in (("lung", LUNG), ("network input", TRAINING))]


def case_summary(case):
    """The case's line in the patient list."""
    return {"patient_id": case.patient_id, "series_uid": case.series_uid,
            "slices": case.slice_count}


def cases_payload(cohort):
    """Every case of the cohort, in index.csv's order, and the cohort's notes."""
    return {"cases": [case_summary(c) for c in cohort.cases], "notes": list(cohort.notes)}


def outline_payload(outline):
    """One outline: its mark, reader, class, lesion, points and the patch cut from it."""
    patch = outline.patch
    return {"mark": outline.mark_id, "reader": outline.reader, "label": outline.label,
            "lesion": outline.lesion_id, "lesion_readers": outline.lesion_readers,
            "nodule": outline.nodule_id, "hole": not outline.inclusion,
            "points": [list(p) for p in outline.points], "status": outline.status,
            "patch": None if patch is None else {"index": patch.index, "row": patch.row,
                                                 "col": patch.col}}


def case_payload(cohort, case):
    """Everything the page draws of a case but its slices' pixels.

    Keys: patient_id, series_uid, rows, cols, pixel_spacing, slice_thickness, z (per slice),
    side (where the dataset put the patient, or None), patch_size, classes, windows, readers
    ([{reader, colour, marks}]) and marks ({slice index: [outline]}), notes.
    """
    marks, counts = {}, {}
    for index in case.marked_slices():
        outlines = case.outlines_on(index)
        marks[str(index)] = [outline_payload(o) for o in outlines]
        for o in outlines:
            counts[o.reader] = counts.get(o.reader, 0) + 1
    colours = reader_colours(case.readers())
    return {**case_summary(case), "rows": case.rows, "cols": case.cols,
            "pixel_spacing": case.pixel_spacing, "slice_thickness": case.slice_thickness,
            "z": case.z, "side": cohort.side(case.patient_id), "patch_size": cohort.patch_size,
            "classes": list(CLASS_NAMES), "windows": windows(),
            "readers": [{"reader": r, "colour": colours[r], "marks": counts[r]}
                        for r in sorted(colours)],
            "marks": marks, "notes": list(cohort.notes)}


def run_payload(info):
    """One run of the model list."""
    return {"name": info.name, "net": info.net, "model": info.model, "dataset": info.dataset,
            "val_accuracy": info.val_accuracy, "test_accuracy": info.test_accuracy}


def runs_payload(runs, dataset):
    """The runs with a model; `dataset` is the current dataset's digest, which tells the page
    whether a run was trained on the split it shows."""
    return {"runs": [run_payload(info) for info in runs], "dataset": dataset}


def predictions_payload(run, indices, probabilities, cams=None):
    """A run's probabilities for the patches `indices` (rows of patches.npy).

    Keys: run, classes, patches ({patch index: {probabilities, predicted, cam}}). `cam` is the
    hook for Grad-CAM: a class-activation map over the patch ([size][size] values in [0, 1]) when
    `cams` gives one per patch, else None.
    """
    patches = {}
    for k, (index, p) in enumerate(zip(indices, probabilities)):
        patches[str(index)] = {"probabilities": [round(float(v), 6) for v in p],
                               "predicted": int(np.argmax(p)),
                               "cam": None if cams is None else cams[k]}
    return {"run": run, "classes": list(CLASS_NAMES), "patches": patches}


def slice_bytes(hu):
    """A slice as the server sends it: int16 little-endian, row after row."""
    return np.ascontiguousarray(hu, dtype="<i2").tobytes()


def packed_slice(hu):
    """A slice as a static export holds it: `slice_bytes`, zlib-compressed, in base64 (the page
    inflates it with the browser's DecompressionStream('deflate'))."""
    return base64.b64encode(zlib.compress(slice_bytes(hu), 6)).decode("ascii")
