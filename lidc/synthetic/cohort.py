"""The demo cohort on disk: patients written in the TCIA layout, and the ground truth beside them.

    ROOT/LIDC-IDRI-0001/STUDY_UID/SERIES_UID/1-001.dcm ... 1-064.dcm   (1-001 is the highest slice)
    ROOT/LIDC-IDRI-0001/STUDY_UID/SERIES_UID/NNN.xml                   (a LidcReadMessage)
    ROOT/cohort.json                                                   (the ground truth)

A patient is written into a hidden folder and renamed into place, and cohort.json records it
only then, so a killed run never leaves half a patient under a patient's name; a run again
skips the patients already complete with the same seed, size and slices.

    summary = write_cohort("data/LIDC-IDRI", patients=12, seed=0)
    truth = read_cohort("data/LIDC-IDRI")
"""
import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

from lidc.errors import LidcError
from lidc.io import write_json
from lidc.records import CLASS_NAMES
from lidc.synthetic.dicom_writer import write_ct_series
from lidc.synthetic.patient import DEFAULT_SIZE, DEFAULT_SLICES, make_patient, patient_id
from lidc.workers import parallel_map

DEFAULT_PATIENTS = 12
MIN_SIZE = 64
MIN_SLICES = 8
COHORT_FILE = "cohort.json"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a patient is made with: patient k depends only on these and k (cohort.json keeps
    them per patient as `made_with`)."""
    seed: int = 0
    size: int = DEFAULT_SIZE
    slices: int = DEFAULT_SLICES


def write_cohort(root, patients=DEFAULT_PATIENTS, force=False, on_patient=None, workers=1,
                 **recipe):
    """Writes (or completes) a demo cohort under `root` and its ground truth `root/cohort.json`.

    Args:
      root: the LIDC root to write (created if missing).
      patients: how many patients, LIDC-IDRI-0001 .. LIDC-IDRI-NNNN.
      force: rewrite patients that are already complete.
      on_patient: called as on_patient(patient_id, written) for each patient: first for those
        skipped (written False), then for each written, in patient order.
      workers: processes writing patients at once (lidc.workers.parallel_map); the files are
        the same with any number, since patient k depends only on the recipe and k.
      **recipe: the fields of Recipe: `seed` (fixes every random choice), `size` (rows =
        columns of each CT slice; pixel spacing is 360 mm / size), `slices` (per series).
    Returns:
      a dict: patients_written, patients_skipped, patients_removed (this generator's patients
      past `patients`, from a larger cohort written before), files (written by this run),
      lesions and marks
      (per class name, over the whole cohort), patches_expected (per class name: one per contour
      slice per reader, one per point and per non-nodule) and cohort (the path of cohort.json).
    Raises:
      ValueError: a parameter out of range.
      TypeError: an unknown keyword.
      LidcError: a patient folder exists that this generator did not write.
    """
    made_with = Recipe(**recipe)
    if patients < 1 or made_with.size < MIN_SIZE or made_with.slices < MIN_SLICES:
        raise ValueError(f"need patients >= 1, size >= {MIN_SIZE}, slices >= {MIN_SLICES}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cohort = _read_or_start(root)
    pending = _pending(root, cohort, patients, _stamp(made_with), force, on_patient)
    files = _write_pending(root, cohort, made_with, pending, workers, on_patient)
    removed = _remove_beyond(root, cohort, patients)
    return {**_summary(root, cohort, len(pending), patients - len(pending), files),
            "patients_removed": removed}


def _pending(root, cohort, patients, stamp, force, on_patient):
    """The numbers k of the patients to write (all with `force`, else those not complete with
    this recipe); on_patient hears of each one skipped."""
    pending = []
    for k in range(1, patients + 1):
        name = patient_id(k)
        entry = cohort["patients"].get(name)
        if not force and _complete(root, entry, stamp):
            if on_patient is not None:
                on_patient(name, False)
        else:
            _check_ours(root, name, entry)
            pending.append(k)
    return pending


def _stamp(made_with):
    """What cohort.json keeps of a Recipe (`made_with`), as plain numbers."""
    return {"seed": int(made_with.seed), "size": int(made_with.size),
            "slices": int(made_with.slices)}


def _write_pending(root, cohort, made_with, pending, workers, on_patient):
    """Writes the `pending` patients with `workers` processes, recording each in cohort.json
    as it is done; returns the number of files written."""
    # Recorded as being written before any is: a run killed midway redoes exactly these.
    for k in pending:
        cohort["patients"][patient_id(k)] = {"state": "writing", "made_with": _stamp(made_with)}
    if pending:
        write_json(root / COHORT_FILE, cohort)
    files = 0
    jobs = [(str(root), made_with, k) for k in pending]
    for name, entry, count in parallel_map(_write_one, jobs, workers, "synthesize", "patient"):
        cohort["patients"][name] = entry
        write_json(root / COHORT_FILE, cohort)
        files += count
        if on_patient is not None:
            on_patient(name, True)
    return files


def _write_one(job):
    """Makes and writes patient k (a worker's task); returns (its id, its cohort.json entry,
    the files written)."""
    root, made_with, k = job
    patient = make_patient(made_with.seed, k, made_with.size, made_with.slices)
    files = write_patient(root, patient)
    return patient.name, truth_entry(patient, _stamp(made_with)), files


def _remove_beyond(root, cohort, patients):
    """Removes this generator's patients past the first `patients` (a cohort written larger
    before): the root then holds the cohort asked for, and the index finds no patient of
    another size or recipe. Returns how many were removed."""
    wanted = {patient_id(k) for k in range(1, patients + 1)}
    extra = sorted(set(cohort["patients"]) - wanted)
    for name in extra:
        # The folder first: killed here, cohort.json still lists it and the next run removes
        # it; the other order would leave a folder that _check_ours takes for a real one.
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(Path(root) / name)
        del cohort["patients"][name]
        write_json(Path(root) / COHORT_FILE, cohort)
    return len(extra)


def read_cohort(root):
    """The ground truth written by `write_cohort`, as a dict (see `truth_entry` for a
    patient's fields). Raises LidcError when the root has no cohort.json."""
    path = Path(root) / COHORT_FILE
    if not path.is_file():
        raise LidcError(path, "no cohort.json: this root was not written by synthesize")
    with open(path) as f:
        return json.load(f)


def _read_or_start(root):
    path = Path(root) / COHORT_FILE
    if not path.is_file():
        return {"generator": "lidc.synthetic", "patients": {}}
    try:
        return read_cohort(root)
    except ValueError as e:
        raise LidcError(path, f"unreadable ground truth ({e}); delete it or pick another --root")


def _complete(root, entry, stamp):
    return bool(entry and entry.get("state") == "complete" and entry.get("made_with") == stamp
                and (Path(root) / entry["folder"]).is_dir())


def _check_ours(root, name, entry):
    """Refuses to replace a patient folder this generator did not write (a real download)."""
    if (Path(root) / name).exists() and entry is None:
        raise LidcError(Path(root) / name,
                        "exists but is not in cohort.json; synthesize only replaces its own "
                        "patients, so choose an empty --root")


def _summary(root, cohort, written, skipped, files):
    lesions = dict.fromkeys(CLASS_NAMES, 0)
    marks = dict.fromkeys(CLASS_NAMES, 0)
    patches = dict.fromkeys(CLASS_NAMES, 0)
    for entry in cohort["patients"].values():
        for lesion in entry.get("lesions", []):
            lesions[CLASS_NAMES[lesion["kind"]]] += 1
        for label, name in enumerate(CLASS_NAMES):
            marks[name] += entry.get("marks", {}).get(str(label), 0)
            patches[name] += entry.get("patches_expected", {}).get(str(label), 0)
    return {"patients_written": written, "patients_skipped": skipped, "files": files,
            "lesions": lesions, "marks": marks, "patches_expected": patches,
            "cohort": str(Path(root) / COHORT_FILE)}


def write_patient(root, patient):
    """Writes a patient into a temporary folder and renames it into place. Returns file count."""
    final = Path(root) / patient.name
    tmp = Path(root) / f".{patient.name}.part"
    old = Path(root) / f".{patient.name}.old"
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    series = tmp / patient.folders[0] / patient.folders[1]
    series.mkdir(parents=True)
    files = write_ct_series(series, patient)
    (series / patient.xml_name).write_bytes(patient.read_xml())
    files += 1
    if patient.cxr is not None:
        cxr = tmp / patient.cxr.folders[0] / patient.cxr.folders[1]
        cxr.mkdir(parents=True)
        patient.cxr.dataset.save_as(cxr / "1-1.dcm", enforce_file_format=True)
        (cxr / patient.cxr.xml_name).write_bytes(patient.cxr.xml)
        files += 2
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return files


def truth_entry(patient, made_with):
    """The cohort.json entry of a patient: where it is, how it is stored, what is in it.

    Lesion centres are (slice index, row, column) with slices in ascending z; `readers` are the
    positions of the reading sessions that marked the lesion, `marks` how each called it.
    """
    folder = f"{patient.name}/{patient.folders[0]}/{patient.folders[1]}"
    marks = {str(label): 0 for label in range(len(CLASS_NAMES))}
    patches = {str(label): 0 for label in range(len(CLASS_NAMES))}
    for read in patient.reads:
        for mark in read:
            marks[str(mark.label)] += 1
            patches[str(mark.label)] += len(mark.included)
    geometry = patient.geometry
    entry = {"state": "complete", "made_with": made_with, "patient_id": patient.name,
             "study_uid": patient.uids.study, "series_uid": patient.uids.series,
             "folder": folder, "xml": f"{folder}/{patient.xml_name}",
             "storage": patient.storage.name, "pixel_spacing": geometry.spacing,
             "slice_thickness": geometry.thickness, "slices": len(geometry.z),
             "z_first": float(geometry.z[0]), "readers": len(patient.reads),
             "lesions": _lesion_truth(patient), "marks": marks, "patches_expected": patches,
             "cxr": None}
    if patient.cxr is not None:
        cxr_folder = f"{patient.name}/{patient.cxr.folders[0]}/{patient.cxr.folders[1]}"
        entry["cxr"] = {"study_uid": patient.uids.cxr_study,
                        "series_uid": patient.uids.cxr_series, "folder": cxr_folder,
                        "xml": f"{cxr_folder}/{patient.cxr.xml_name}", "modality": "CR"}
    return entry


def _lesion_truth(patient):
    """Per lesion: what it is, and how each reader that marked it called it (`marks`: reader,
    label, slices with a region that gives a patch, and the texture and calcification rated)."""
    calls = [[] for _ in patient.lesions]
    for j, read in enumerate(patient.reads):
        for mark in read:
            call = {"reader": j, "label": mark.label, "slices": len(mark.included)}
            call.update({k: mark.characteristics[k] for k in ("texture", "calcification")
                         if k in mark.characteristics})
            calls[mark.lesion_id].append(call)
    out = []
    for i, lesion in enumerate(patient.lesions):
        item = {"id": i, "kind": lesion.kind, "kind_name": CLASS_NAMES[lesion.kind],
                "form": lesion.form, "center": list(lesion.center),
                "diameter_mm": round(lesion.diameter_mm, 2), "hu": round(lesion.hu, 1),
                "cavity": lesion.hole is not None, "shape": lesion.shape,
                "pleural": lesion.pleural, "readers": sorted({c["reader"] for c in calls[i]}),
                "marks": calls[i]}
        out.append(item)
    return out
