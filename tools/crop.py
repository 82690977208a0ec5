"""Stage 3, crop: a 64x64 patch around every mark on every slice it covers.

Reads each series once (only the slices that carry marks), cuts each region's patch centred on
its centroid (32 pixels each side, air beyond the image edge), and writes WORK/patches/
patches.npy (N x S x S int16 HU, memory-mappable), WORK/patches/patches.csv (one row per patch,
in the order of patches.npy) and WORK/skipped/crop.csv. Holes (inclusion FALSE) give no patch.

    python -m tools.crop --work data/work [--size 64] [--png]
"""
import os
from collections import defaultdict

import cv2
import numpy as np

from lidc import series as dicom
from lidc.errors import LidcError
from lidc.io import atomic_path, load_pickle, read_csv, write_csv
from lidc.patches import crop, lung_window_u8
from lidc.records import CLASS_NAMES
from lidc.resume import Parts, file_stat, fingerprint
from tools import cli

PATCH_COLUMNS = ["patch_index", "mark_id", "patient_id", "series_uid", "slice_index", "row",
                 "col", "label", "lesion_id", "reader"]


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "work", "workers", "force")
    p.add_argument("--size", type=int, default=64, help="patch side in pixels")
    p.add_argument("--png", action="store_true",
                   help="also write each patch as an 8-bit lung-window PNG under "
                        "WORK/patches/png/ (named by patch index; labels are in patches.csv)")
    return p


def crop_series(item):
    """Reads the marked slices of one series once and cuts every region's patch (worker)."""
    by_slice = defaultdict(list)
    for region in item["regions"]:
        by_slice[region["slice_index"]].append(region)
    patches, rows, skipped = [], [], []
    for index in sorted(by_slice):
        path = item["paths"][index]
        try:
            pixels = dicom.read_stored(path)
        except LidcError as e:
            skipped.extend((e.path, f"{e.reason}; mark {r['mark_id']} loses this slice")
                           for r in by_slice[index])
            continue
        for region in by_slice[index]:
            # Only the pixels under the patches become HU, not the whole slice: 0.49 against
            # 0.57-0.63 ms a 512x512 slice (with a padding value, a slope of 0.5), its decoding
            # alone 0.46.
            patches.append(crop(pixels.pixels, (region["row"], region["col"]), item["size"],
                                convert=pixels.hu))
            rows.append(region)
    stack = np.stack(patches) if patches else np.zeros((0, item["size"], item["size"]), np.int16)
    return {"patches": stack, "rows": rows, "skipped": skipped}


def series_units(work, size):
    """One unit per series with placeable regions; regions not placed are reported."""
    pkl, slices_csv = work / "annotations.pkl", work / "slices.csv"
    if not pkl.exists() or not slices_csv.exists():
        raise LidcError(pkl, "no annotations here: run the index and annotations stages first")
    data = load_pickle(pkl)
    if data.get("source") != "index":
        raise LidcError(pkl, "these annotations come from the XML-only archive: there are no "
                             "images to crop (run annotations without --xml)")
    paths = defaultdict(dict)
    for r in read_csv(slices_csv):
        paths[r["series_uid"]][int(r["slice_index"])] = r["path"]
    regions, skipped = defaultdict(list), []
    for m in data["marks"]:
        for roi in m.included:
            if roi.status:
                skipped.append((m.xml_file, f"mark {m.mark_id} ({m.reader}, {m.nodule_id}) at "
                                            f"z={roi.z:g}: {roi.status}"))
                continue
            row, col = roi.centroid
            regions[m.series_uid].append({
                "mark_id": m.mark_id, "patient_id": m.patient_id, "series_uid": m.series_uid,
                "slice_index": roi.slice_index, "row": round(row, 2), "col": round(col, 2),
                "label": m.label, "lesion_id": m.lesion_id, "reader": m.reader})
    units = []
    for uid, series_regions in regions.items():
        needed = {r["slice_index"]: paths[uid][r["slice_index"]] for r in series_regions}
        stats = sorted((i, p, *file_stat(p)) for i, p in needed.items())
        item = {"regions": series_regions, "paths": needed, "size": size}
        units.append((uid, fingerprint(series_regions, stats, size), item))
    return units, skipped



def assemble(parts, units, out, size):
    """Streams the series' patches into one patches.npy (never all in memory) and its CSV."""
    counts = [len(r["rows"]) for r in _results(parts, units)]
    total = sum(counts)
    npy = out / "patches.npy"
    rows, skipped = [], []
    with atomic_path(npy) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16,
                                          shape=(total, size, size))
        start = 0
        for result in _results(parts, units):
            n = len(result["rows"])
            array[start:start + n] = result["patches"]
            rows.extend({**r, "patch_index": start + i} for i, r in enumerate(result["rows"]))
            skipped.extend(result["skipped"])
            start += n
        array.flush()
        del array
    write_csv(out / "patches.csv", rows, PATCH_COLUMNS)
    return rows, skipped


def _results(parts, units):
    for key, fp, _ in units:
        result = parts.load(key, fp)
        if result is not None:
            yield result


def export_png(out, rows):
    patches = np.load(out / "patches.npy", mmap_mode="r")
    folder = out / "png"
    folder.mkdir(parents=True, exist_ok=True)
    for row in cli.progress(rows, desc="png", unit="patch"):
        target = folder / f"{row['patch_index']:06d}.png"
        if not target.exists():
            tmp = folder / f".{target.stem}.part.png"
            cv2.imwrite(str(tmp), lung_window_u8(patches[row["patch_index"]]))
            os.replace(tmp, target)


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.work_lock(args.work):
        return run(args)


def run(args):
    if args.size < 8 or args.size % 2:
        raise LidcError(None, f"--size must be an even number of pixels >= 8, not {args.size}")
    units, skipped = series_units(args.work, args.size)
    parts = Parts(args.work, "crop", force=args.force)
    reused, done, failed = cli.run_units(parts, units, crop_series, args.workers, "crop",
                                         cost=lambda item: len(item["paths"]))
    out = args.work / "patches"
    rows, unit_skipped = assemble(parts, units, out, args.size)
    skipped = skipped + failed + unit_skipped
    if args.png:
        export_png(out, rows)
    path = cli.write_skipped(args.work, "crop", skipped)
    labels = np.bincount([r["label"] for r in rows], minlength=len(CLASS_NAMES))
    counts = {"series cropped": done, "series reused from an earlier run": reused,
              "patches": len(rows),
              **{f"patches of {CLASS_NAMES[k]}": int(labels[k]) for k in range(len(CLASS_NAMES))}}
    cli.summary(f"crop: {out / 'patches.npy'} ({len(rows)} x {args.size} x {args.size} int16 HU), "
                f"{out / 'patches.csv'}", counts, skipped)
    print(f"  skip report: {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
