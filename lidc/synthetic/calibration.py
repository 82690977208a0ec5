"""The real collection's statistics that the demo cohort is calibrated to, and the same figures
measured on a cohort.

The real figures were measured on the whole LIDC-XML-only archive (1,018 CT series, 1,035 CT
reads; every reading session read once) and on the CT of three real patients. Patches are
counted the way the crop stage makes them: one per included region (contour slice) of a
nodule >= 3 mm, one per mark of a nodule < 3 mm or a non-nodule.

    figures = truth_figures(read_cohort(root)["patients"].values())
    figures.patch_shares, REAL.patch_shares
    centre, edge = centre_and_edge(patches)     # N x 64 x 64 HU crops
"""
import dataclasses

import numpy as np

from lidc.patches import crop
from lidc.records import NODULE, NON_NODULE, NUM_CLASSES

# Ratings of texture (1 = ground glass .. 5 = solid), and of calcification as far as the real
# figures tell them apart: 3 = solid, 6 = absent, any other pattern (1, 2, 4, 5).
TEXTURES = (1, 2, 3, 4, 5)
CALCIFICATIONS = (3, 6, "other")


@dataclasses.dataclass
class Figures:
    """A cohort's statistics, per series where it says so.

    patch_shares: share of patches per class (label order); marks_per_series: reader marks per
    series per class; texture / calcification: share of each rating over the readings of
    nodules >= 3 mm (contoured marks); nodule_lesions_per_series: lesions contoured by at least
    one reader; all_four: the share of those contoured by four readers.
    """
    patch_shares: tuple
    marks_per_series: tuple
    texture: dict
    calcification: dict
    nodule_lesions_per_series: float
    all_four: float


REAL = Figures(
    patch_shares=tuple(np.array([41132, 13330, 21787]) / 76249),
    marks_per_series=(6.9, 13.1, 21.4),
    texture={1: 0.080, 2: 0.022, 3: 0.056, 4: 0.117, 5: 0.725},
    calcification={3: 0.102, 6: 0.878, "other": 0.020},
    nodule_lesions_per_series=2650 / 1018,
    all_four=928 / 2669,  # Armato et al. 2011, Medical Physics 38(2)
)

# Mean HU of 64x64 crops: over their central 16x16 pixels, and along their top and bottom 8 rows.
REAL_CENTRE_EDGE_HU = {
    NODULE: (-424.0, -490.0),      # pooled over three real patients
    NON_NODULE: (-464.0, -561.0),  # LIDC-IDRI-0003
}
REAL_CENTRE_EDGE_HU_0003 = {NODULE: (-416.0, -577.0), NON_NODULE: (-464.0, -561.0)}


def truth_figures(entries):
    """Figures of a cohort from its ground truth: the patient entries of cohort.json."""
    entries = list(entries)
    patches = np.zeros(NUM_CLASSES)
    marks = np.zeros(NUM_CLASSES)
    texture, calcification = [], []
    contoured = all_four = 0
    for entry in entries:
        for label in range(NUM_CLASSES):
            patches[label] += entry["patches_expected"][str(label)]
            marks[label] += entry["marks"][str(label)]
        for lesion in entry["lesions"]:
            readings = [m for m in lesion["marks"] if m["label"] == NODULE]
            texture += [m["texture"] for m in readings if "texture" in m]
            calcification += [m["calcification"] if m["calcification"] in (3, 6) else "other"
                              for m in readings if "calcification" in m]
            contoured += bool(readings)
            all_four += len({m["reader"] for m in readings}) >= 4
    n = max(len(entries), 1)
    return Figures(patch_shares=tuple(patches / max(patches.sum(), 1)),
                   marks_per_series=tuple(marks / n),
                   texture=mix(texture, TEXTURES), calcification=mix(calcification, CALCIFICATIONS),
                   nodule_lesions_per_series=contoured / n, all_four=all_four / max(contoured, 1))


def mix(ratings, values):
    """The share of each of `values` among `ratings` (all 0 when there are none)."""
    n = max(len(ratings), 1)
    return {v: sum(r == v for r in ratings) / n for v in values}


def centre_and_edge(patches):
    """(mean HU of the central quarter square, mean HU of the top and bottom eighths of rows)
    of N x S x S crops: for S = 64, the central 16x16 pixels and the 8 rows at each end."""
    patches = np.asarray(patches, np.float64)
    size = patches.shape[-1]
    lo, hi, rows = 3 * size // 8, 5 * size // 8, size // 8
    centre = patches[:, lo:hi, lo:hi].mean()
    edge = np.concatenate([patches[:, :rows], patches[:, -rows:]], axis=1).mean()
    return float(centre), float(edge)


def mark_patches(patient, size=64):
    """The patches the crop stage would cut from an in-memory Patient: {label: N x size x size
    HU}, one per included region, centred on its centroid, air beyond the image edge."""
    out = {label: [] for label in range(NUM_CLASSES)}
    hu = np.clip(np.rint(patient.hu), -1024, 3071)  # as stored in the DICOM files
    for read in patient.reads:
        for mark in read:
            for roi in mark.included:
                out[mark.label].append(crop(hu[roi.slice_index], roi.centroid, size))
    return {label: np.array(p).reshape(-1, size, size) for label, p in out.items()}
