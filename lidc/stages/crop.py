"""The crop stage: a 64x64 patch around every mark on every slice it covers.

Reads each series once (only the slices that carry marks), cuts each region's patch centred on
its centroid (32 pixels each side, air beyond the image edge), and writes WORK/patches/
patches.npy (N x S x S int16 HU, memory-mappable), WORK/patches/patches.csv (one row per patch,
in the order of patches.npy, with its centre in world mm) and WORK/skipped/crop.csv. Holes (inclusion FALSE) give no patch.

    result = run(Path("data/work"), size=64, workers=2)
"""
import os
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from lidc import manifest
from lidc.errors import LidcError
from lidc.io import atomic_folder, atomic_path, load_pickle, read_csv, write_csv, write_png
from lidc.luna16 import read_geometry
from lidc.patches import crop
from lidc.records import CLASS_NAMES, PatchOrigin
from lidc.resume import Parts, file_stat, fingerprint
from lidc.series import PixelLayout, read_stored_at
from lidc.stages import StageResult, annotations, index, write_skipped
from lidc.windows import LUNG
from lidc.workers import Unit, progress, run_units, stored_results

# patches.npy and patches.csv (its rows, in order) are committed as one set (lidc.manifest).
MANIFEST = "manifest.json"
# world_x, world_y, world_z: the patch centre in mm, in the DICOM patient frame (LUNA16's world
# coordinates), from the slice's ImagePositionPatient and the series' orientation and spacing.
PATCH_COLUMNS = ["patch_index", "mark_id", "patient_id", "series_uid", "slice_index", "row",
                 "col", "label", "lesion_id", "reader", "world_x", "world_y", "world_z"]


@dataclass(frozen=True)
class CropJob:
    """One series' patches to cut: their origins, the DICOM path of each slice they need (by
    slice index), the patch side, and where each slice's pixels lie in its file (by slice
    index: lidc.series.PixelLayout, or None to read them through the header)."""
    origins: tuple
    paths: dict
    size: int
    layouts: dict


def crop_series(job):
    """Reads the marked slices of one series once and cuts every region's patch (worker)."""
    by_slice = defaultdict(list)
    for origin in job.origins:
        by_slice[origin.slice_index].append(origin)
    patches, rows, skipped = [], [], []
    for slice_index in sorted(by_slice):
        path = job.paths[slice_index]
        try:
            pixels = read_stored_at(path, job.layouts[slice_index])
        except LidcError as e:
            skipped.extend((e.path, f"{e.reason}; mark {o.mark_id} loses this slice")
                           for o in by_slice[slice_index])
            continue
        for origin in by_slice[slice_index]:
            # Only the pixels under the patch become HU, not the whole slice: converting a
            # whole slice costs as much again as decoding it.
            patches.append(crop(pixels.pixels, (origin.row, origin.col), job.size,
                                convert=pixels.hu))
            rows.append(origin)
    stack = np.stack(patches) if patches else np.zeros((0, job.size, job.size), np.int16)
    return {"patches": stack, "rows": rows, "skipped": skipped}


def check_inputs(work):
    """Checks that annotations.pkl and slices.csv exist, are complete sets, and that the
    annotations were placed on the current index; returns the annotations set's digest.

    Raises:
      LidcError: naming the missing or stale file and the stage to run.
    """
    for path, stage in ((work / "slices.csv", "index"), (work / "annotations.pkl", "annotations")):
        if not path.exists():
            raise LidcError(path, f"missing: run the {stage} stage first")
    index_set = manifest.check(work, index.MANIFEST, ["index.csv", "slices.csv"], "index")
    annotations_set = manifest.check(work, annotations.MANIFEST, ["annotations.pkl"],
                                     "annotations")
    if annotations_set["inputs"].get("index") is None:
        raise LidcError(work / "annotations.pkl", "these annotations come from the XML-only "
                                                  "archive: there are no images to crop (run "
                                                  "annotations without --xml)")
    manifest.check_inputs(annotations_set, work / "annotations.pkl",
                          {"index": manifest.digest(index_set)}, "annotations")
    return manifest.digest(annotations_set)


def series_units(work, size):
    """A Unit per series with placeable regions; and the regions not placed, as skipped."""
    pkl, slices_csv = work / "annotations.pkl", work / "slices.csv"
    data = load_pickle(pkl)
    if data.get("source") != "index":
        raise LidcError(pkl, "these annotations come from the XML-only archive: there are no "
                             "images to crop (run annotations without --xml)")
    paths, layouts, slice_rows = defaultdict(dict), defaultdict(dict), read_csv(slices_csv)
    for r in slice_rows:
        paths[r["series_uid"]][int(r["slice_index"])] = r["path"]
        layouts[r["series_uid"]][int(r["slice_index"])] = PixelLayout.from_text(
            r.get("pixel_layout", ""))
    geometry = read_geometry(work, slice_rows)
    origins, skipped = defaultdict(list), []
    for m in data["marks"]:
        for roi in m.included:
            if roi.status:
                skipped.append((m.xml_file, f"mark {m.mark_id} ({m.reader}, {m.nodule_id}) at "
                                            f"z={roi.z:g}: {roi.status}"))
                continue
            origins[m.series_uid].append(patch_origin(m, roi, geometry[m.series_uid]))
    units = []
    for uid, series_origins in origins.items():
        needed = {o.slice_index: paths[uid][o.slice_index] for o in series_origins}
        stats = sorted((i, p, *file_stat(p)) for i, p in needed.items())
        job = CropJob(tuple(series_origins), needed, size,
                      {i: layouts[uid][i] for i in needed})
        units.append(Unit(uid, fingerprint(series_origins, stats, size), job))
    return units, skipped


def patch_origin(mark, roi, series):
    """The PatchOrigin of one placed region: centred on its centroid (to 0.01 pixel), with that
    centre's world coordinates (to 0.1 micrometre) from its series' SeriesGeometry."""
    row, col = (round(v, 2) for v in roi.centroid)
    x, y, z = (round(v, 4) for v in series.world(roi.slice_index, row, col))
    return PatchOrigin(mark_id=mark.mark_id, patient_id=mark.patient_id,
                       series_uid=mark.series_uid, slice_index=roi.slice_index, row=row,
                       col=col, label=mark.label, lesion_id=mark.lesion_id, reader=mark.reader,
                       world_x=x, world_y=y, world_z=z)


def assemble(parts, units, out, size):
    """Streams the series' patches into one patches.npy (never all in memory) and its CSV."""
    total = sum(len(r["rows"]) for r in stored_results(parts, units))
    rows, skipped = [], []
    with atomic_path(out / "patches.npy") as tmp:
        array = _allocated_npy(tmp, (total, size, size))
        start = 0
        for result in stored_results(parts, units):
            n = len(result["rows"])
            array[start:start + n] = result["patches"]
            rows.extend({**asdict(o), "patch_index": start + i}
                        for i, o in enumerate(result["rows"]))
            skipped.extend(result["skipped"])
            start += n
        array.flush()
        del array
    write_csv(out / "patches.csv", rows, PATCH_COLUMNS)
    return rows, skipped


def _allocated_npy(path, shape):
    """An int16 .npy memory map of `shape` at `path` whose blocks are allocated on the disk
    first: a full disk then fails here with a message, not later with SIGBUS in the copy."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16, shape=shape)
    try:
        with open(path, "rb+") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
    except OSError as e:
        del array
        raise LidcError(path.parent, f"cannot allocate {os.path.getsize(path):,} bytes for "
                                     f"patches.npy ({e.strerror}); free space and run crop "
                                     "again") from None
    return array


def export_png(out, rows, force=False):
    """Writes each patch as an 8-bit lung-window PNG under OUT/png/, named by patch index.

    The folder is rebuilt as a whole whenever the patches changed (or with `force`), so it never
    holds images of an earlier crop; it records the patch set it shows in OUT/png/.made-from.
    Returns how many PNGs were written (0 when the folder was up to date).
    """
    made_from = manifest.digest(manifest.read(out, MANIFEST))
    marker = out / "png" / ".made-from"
    if not force and marker.is_file() and marker.read_text() == made_from:
        return 0
    patches = np.load(out / "patches.npy", mmap_mode="r")
    with atomic_folder(out / "png") as folder:
        for row in progress(rows, desc="png", unit="patch"):
            image = LUNG.to_u8(patches[row["patch_index"]])
            write_png(folder / f"{row['patch_index']:06d}.png", image)
        (folder / ".made-from").write_text(made_from)
    return len(rows)


def run(work, size=64, workers=1, force=False, png=False):
    """Cuts the patches of every placed mark in WORK; returns the StageResult.

    Raises:
      LidcError: a size that is not an even number >= 8, or no annotations from images.
    """
    if size < 8 or size % 2:
        raise LidcError(None, f"--size must be an even number of pixels >= 8, not {size}")
    inputs = {"annotations": check_inputs(work)}
    units, skipped = series_units(work, size)
    parts = Parts(work, "crop", force=force)
    reused, done, failed = run_units(parts, units, crop_series, workers,
                                     cost=lambda job: len(job.paths))
    out = work / "patches"
    with manifest.file_set(out, MANIFEST, "crop", inputs) as files:
        rows, unit_skipped = assemble(parts, units, out, size)
        files.extend(["patches.npy", "patches.csv"])
    skipped = skipped + failed + unit_skipped
    labels = np.bincount([r["label"] for r in rows], minlength=len(CLASS_NAMES))
    counts = {"series cropped": done, "series reused from an earlier run": reused,
              "patches": len(rows),
              **{f"patches of {name}": int(labels[k]) for k, name in enumerate(CLASS_NAMES)}}
    if png:
        counts["PNG patches written"] = export_png(out, rows, force)
    return StageResult(f"crop: {out / 'patches.npy'} ({len(rows)} x {size} x {size} int16 HU), "
                       f"{out / 'patches.csv'}", counts, skipped,
                       write_skipped(work, "crop", skipped))
