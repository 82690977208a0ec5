"""What each patient gets: how many lesions of each kind, what its nodules >= 3 mm are, and how
many radiologists read it.

The figures are calibrated (with the readers' habits in readers.py) to the real collection's:
6.9 contoured nodule readings, 13.1 single-point nodules and 21.4 non-nodules marked per series;
patches 54% / 17% / 29% by class; texture rated solid in 72.5% of readings and ground glass in
10%; calcification in 10% (lidc.synthetic.calibration holds the real figures).

A demo cohort is small (12 patients, 26 nodules >= 3 mm), so drawing each patient's
nodules independently would give mixes far from the collection's by chance alone. The nodules
are therefore planned for a block of PATIENTS_PER_BLOCK patients at once, balanced over the
block: its lesion counts, nodule forms and diameter quantiles are fixed shares shuffled, drawn
from (seed, block) alone, so patient k still depends only on (seed, k).

    plan = lesion_plan(seed=0, k=1)   # plan.nodules: [NoduleSpec(form, diameter_mm), ...]
"""
import dataclasses
from statistics import NormalDist

import numpy as np

from lidc.records import NON_NODULE, SMALL_NODULE

PATIENTS_PER_BLOCK = 12
# One block's nodules >= 3 mm per patient, shuffled over the block's patients.
NODULES_PER_PATIENT = (1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4)
# What nodules >= 3 mm are (shares of lesions): readers then rate 72.5% of readings solid.
NODULE_FORMS = {"solid": 0.68, "part-solid": 0.07, "ground glass": 0.13, "calcified": 0.12}
# Diameters (mm) by form: a mixture of lognormals, ((weight, median, log spread), ...), clipped
# to (smallest, largest). Many solid nodules are small (3-6 mm: the ones readers disagree
# about, a contour from one, a point from another), the rest large; calcified granulomas are
# small, subsolid nodules large. With these a contoured nodule spans about 5.9 slices per
# reading, as the collection's 41,132 patches of 7,032 readings do.
DIAMETERS_MM = {"solid": (((0.25, 4.5, 0.2), (0.75, 16.0, 0.4)), 3.0, 30.0),
                "part-solid": (((1.0, 14.0, 0.4),), 6.0, 35.0),
                "ground glass": (((1.0, 11.0, 0.45),), 4.0, 30.0),
                "calcified": (((1.0, 7.5, 0.3),), 3.0, 14.0)}
# One block's nodules < 3 mm and non-nodules per patient, shuffled over its patients.
OTHER_LESIONS = {SMALL_NODULE: (7, 8, 8, 8, 9, 9, 9, 9, 10, 10, 11, 12),
                 NON_NODULE: (6, 6, 7, 7, 8, 8, 8, 9, 9, 10, 10, 11)}
# Radiologists per patient in a block: LIDC's series were read by four, a few by fewer.
READERS_PER_PATIENT = (4,) * 11 + (3,)
# The golden ratio's fractional part: steps by it spread points most evenly over 0..1.
GOLDEN = (5 ** 0.5 - 1) / 2
# Seeds of block plans are [seed, block, PLAN_STREAM]: apart from the patients' [seed, k, part].
PLAN_STREAM = 1


@dataclasses.dataclass(frozen=True)
class NoduleSpec:
    """A nodule >= 3 mm to draw: its form and diameter (mm)."""
    form: str
    diameter_mm: float


@dataclasses.dataclass(frozen=True)
class LesionPlan:
    """What is planned for one patient: its nodules >= 3 mm (NoduleSpecs), how many nodules
    < 3 mm and non-nodules, how many radiologists read it, and where its readers' sequence of
    rating quantiles starts (readers.Ratings)."""
    nodules: list
    small_nodules: int
    non_nodules: int
    readers: int
    rating_start: float


def lesion_plan(seed, k):
    """The LesionPlan of patient k of the cohort `seed`, from its block's plan."""
    block, place = divmod(k - 1, PATIENTS_PER_BLOCK)
    rng = np.random.default_rng([seed, block, PLAN_STREAM])
    nodules = _block_nodules(rng, place)
    small, non = (int(rng.permutation(OTHER_LESIONS[kind])[place])
                  for kind in (SMALL_NODULE, NON_NODULE))
    readers = int(rng.permutation(READERS_PER_PATIENT)[place])
    # The block's patients start their rating sequences (readers.Ratings) evenly apart.
    start = (rng.random() + GOLDEN * place) % 1.0
    return LesionPlan(nodules, small, non, readers, start)


def _block_nodules(rng, place):
    """The NoduleSpecs of the patient at `place` in its block."""
    counts = rng.permutation(NODULES_PER_PATIENT)
    forms = balanced(NODULE_FORMS, int(counts.sum()))
    specs = []
    for form in NODULE_FORMS:
        # Each form's diameters at evenly spread quantiles of its distribution, so that the
        # block has small and large nodules of each form in the collection's proportion.
        n = forms.count(form)
        quantiles = (rng.permutation(n) + rng.random(n)) / max(n, 1)
        specs += [NoduleSpec(form, diameter_mm(form, q)) for q in quantiles]
    specs = [specs[i] for i in rng.permutation(len(specs))]
    start = int(counts[:place].sum())
    return specs[start:start + counts[place]]


def balanced(shares, n):
    """n keys of `shares` ({key: share}) in proportion, rounded by largest remainder."""
    exact = np.array(list(shares.values())) * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[:n - counts.sum()]:
        counts[i] += 1
    return [key for key, count in zip(shares, counts) for _ in range(count)]


def diameter_mm(form, quantile):
    """The diameter of a nodule of `form` at `quantile` (0..1) of its form's distribution:
    the components of the mixture take the quantiles in turn, smallest first."""
    components, low, high = DIAMETERS_MM[form]
    for weight, median, spread in components:
        if quantile < weight:
            break
        quantile -= weight
    q = min(max(quantile / weight, 1e-6), 1 - 1e-6)
    return float(np.clip(median * np.exp(spread * NormalDist().inv_cdf(q)), low, high))
