"""A LIDC-shaped demo cohort: CT series and radiologist reads written as the real collection is.

For each patient the generator draws a 3-D chest phantom in Hounsfield units (air, body wall, two
lungs with branching vessels, ribs, spine, sternum, heart, aorta, a scanner table), places lesions
of the three kinds of ARCHITECTURE.md in its lungs, lets up to four simulated radiologists read it
(each misses some lesions, contours with its own threshold and hand, sometimes calls a small
nodule a point or a small dot a non-nodule), and writes everything in the TCIA layout:

    ROOT/LIDC-IDRI-0001/STUDY_UID/SERIES_UID/1-001.dcm ... 1-064.dcm   (1-001 is the highest slice)
    ROOT/LIDC-IDRI-0001/STUDY_UID/SERIES_UID/NNN.xml                   (a LidcReadMessage)
    ROOT/cohort.json                                                   (the ground truth)

Like the real collection, patients differ in what a pipeline must cope with: every third patient
uses TCIA's descriptive folder names (`01-01-2000-NA-CT CHEST-30178/3000566.000000-NA-03192`);
the pixel storage cycles over int16 with intercept -1024 and padding -2000 outside the field of
view, uint16 with intercept -1024, int16 with intercept 0, and int16 with slope 0.5; instance
numbers run top-down, bottom-up or from an offset; and patients 2, 8, 14, ... also have a chest
X-ray study (one CR image with an `IdriReadMessage` XML naming the CT series) to be skipped.

Patient k depends only on (seed, k, size, slices): adding patients leaves earlier ones unchanged.
Lesion centres in cohort.json are (slice index, row, column) with slices in ascending z.

Usage:

    from lidc import synthetic
    summary = synthetic.write_cohort("data/LIDC-IDRI", patients=12, seed=0)
    print(summary["lesions"], summary["marks"])
"""
import dataclasses
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import pydicom
from lxml import etree
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from lidc.errors import LidcError
from lidc.io import write_json
from lidc.records import CLASS_NAMES

DEFAULT_PATIENTS = 12
DEFAULT_SIZE = 384
DEFAULT_SLICES = 64
FIELD_OF_VIEW_MM = 360.0
MIN_SIZE = 64
MIN_SLICES = 8

LIDC_NS = "http://www.nih.gov"
IDRI_NS = "http://www.nih.gov/idri"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
COHORT_FILE = "cohort.json"

# How the collection's scanners stored pixels; patient k uses STORAGE[(k - 1) % 4].
STORAGE = (
    {"name": "int16, intercept -1024, padding -2000", "dtype": "int16", "slope": 1.0,
     "intercept": -1024.0, "padding": -2000},
    {"name": "uint16, intercept -1024", "dtype": "uint16", "slope": 1.0,
     "intercept": -1024.0, "padding": None},
    {"name": "int16, intercept 0", "dtype": "int16", "slope": 1.0,
     "intercept": 0.0, "padding": None},
    {"name": "int16, slope 0.5, intercept -1024", "dtype": "int16", "slope": 0.5,
     "intercept": -1024.0, "padding": None},
)


@dataclasses.dataclass
class Geometry:
    """Where the voxels are: `z` ascending (mm), square slices of `size` pixels."""
    size: int
    spacing: float
    thickness: float
    z: np.ndarray
    origin: tuple  # ImagePositionPatient x, y of the top-left pixel

    @property
    def shape(self):
        return (len(self.z), self.size, self.size)

    @property
    def scale(self):
        """Millimetres per index step along (z, row, column)."""
        return np.array([self.thickness, self.spacing, self.spacing])


@dataclasses.dataclass
class Lesion:
    """One physical lesion: its kind (0, 1, 2), its look, and its occupancy in a box.

    `occupancy` is the noise-free fraction of each voxel the lesion fills, in the box starting
    at index `origin`; readers contour it. `hole` is the same for a cavity, or None.
    """
    kind: int
    form: str
    center: tuple
    diameter_mm: float
    hu: float
    origin: tuple
    occupancy: np.ndarray
    hole: np.ndarray = None
    traits: dict = dataclasses.field(default_factory=dict)

    @property
    def conspicuity(self):
        """0 (invisible) .. 1 (obvious), from density against lung and size."""
        contrast = np.clip((self.hu + 850.0) / 800.0, 0.0, 1.0) * min(1.0, self.occupancy.max())
        return float(0.6 * contrast + 0.4 * np.clip((self.diameter_mm - 2.0) / 10.0, 0.0, 1.0))


@dataclasses.dataclass
class Mark:
    """One reader's mark of one lesion, as it goes into the XML.

    `element` is 'contour', 'point' or 'nonnodule'. `rois` holds (slice index, inclusion,
    points) with points an (N, 2) int array of (x = column, y = row).
    """
    element: str
    lesion: int
    rois: list
    characteristics: dict = None


# ----------------------------------------------------------------------------- the cohort


def write_cohort(root, patients=DEFAULT_PATIENTS, size=DEFAULT_SIZE, slices=DEFAULT_SLICES,
                 seed=0, force=False, on_patient=None):
    """Writes (or completes) a demo cohort under `root` and its ground truth `root/cohort.json`.

    Each patient is written into a temporary folder beside its final one and renamed into place,
    so a killed run never leaves half a patient under a patient's name. A patient already
    written with the same seed, size and slices is skipped unless `force`.

    Args:
      root: the LIDC root to write (created if missing).
      patients: how many patients, LIDC-IDRI-0001 .. LIDC-IDRI-NNNN.
      size: rows = columns of each CT slice (pixel spacing is 360 mm / size).
      slices: CT slices per series.
      seed: fixes every random choice; patient k depends only on (seed, k, size, slices).
      force: rewrite patients that are already complete.
      on_patient: called as on_patient(patient_id, written) after each patient, written False
        when it was skipped.
    Returns:
      a dict: patients_written, patients_skipped, files (written by this run), lesions and marks
      (per kind name, over the whole cohort), patches_expected (per kind name: one per contour
      slice per reader, one per point and per non-nodule) and cohort (the path of cohort.json).
    Raises:
      ValueError: a parameter out of range.
      LidcError: a patient folder exists that this generator did not write.
    """
    if patients < 1 or size < MIN_SIZE or slices < MIN_SLICES:
        raise ValueError(f"need patients >= 1, size >= {MIN_SIZE}, slices >= {MIN_SLICES}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cohort = _read_cohort(root)
    made_with = {"seed": int(seed), "size": int(size), "slices": int(slices)}
    written = skipped = files = 0
    for k in range(1, patients + 1):
        name = patient_id(k)
        entry = cohort["patients"].get(name)
        done = not force and _complete(root, entry, made_with)
        if done:
            skipped += 1
        else:
            _check_ours(root, name, entry)
            cohort["patients"][name] = {"state": "writing", "made_with": made_with}
            write_json(root / COHORT_FILE, cohort)
            patient = make_patient(seed, k, size, slices)
            files += _write_patient(root, patient)
            cohort["patients"][name] = _truth(patient, made_with)
            write_json(root / COHORT_FILE, cohort)
            written += 1
        if on_patient is not None:
            on_patient(name, not done)
    return _summary(root, cohort, written, skipped, files)


def patient_id(k):
    return f"LIDC-IDRI-{k:04d}"


def read_cohort(root):
    """The ground truth written by `write_cohort`, as a dict (see `_truth` for its fields)."""
    path = Path(root) / COHORT_FILE
    if not path.is_file():
        raise LidcError(path, "no cohort.json: this root was not written by synthesize")
    with open(path) as f:
        return json.load(f)


def _read_cohort(root):
    path = Path(root) / COHORT_FILE
    if not path.is_file():
        return {"generator": "lidc.synthetic", "patients": {}}
    try:
        return read_cohort(root)
    except ValueError as e:
        raise LidcError(path, f"unreadable ground truth ({e}); delete it or pick another --root")


def _complete(root, entry, made_with):
    return bool(entry and entry.get("state") == "complete" and entry.get("made_with") == made_with
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
        for kind, name in enumerate(CLASS_NAMES):
            marks[name] += entry.get("marks", {}).get(str(kind), 0)
            patches[name] += entry.get("patches_expected", {}).get(str(kind), 0)
    return {"patients_written": written, "patients_skipped": skipped, "files": files,
            "lesions": lesions, "marks": marks, "patches_expected": patches,
            "cohort": str(Path(root) / COHORT_FILE)}


# ----------------------------------------------------------------------------- one patient


@dataclasses.dataclass
class Patient:
    """Everything drawn for one patient, in memory, before it is written."""
    index: int
    name: str
    geometry: Geometry
    hu: np.ndarray
    lesions: list
    reads: list
    uids: dict
    folders: tuple
    xml_name: str
    storage: dict
    instance_numbers: np.ndarray
    style: dict
    cxr: dict = None


def make_patient(seed, k, size=DEFAULT_SIZE, slices=DEFAULT_SLICES):
    """Draws patient k of the cohort `seed` in memory, without writing anything.

    Each part (geometry, anatomy, lesions, noise, readers, ...) draws from its own generator
    seeded by (seed, k, part), so a change to one part does not reshuffle the others.

    Args:
      seed: the cohort's seed.
      k: the patient number, 1 for LIDC-IDRI-0001.
      size: rows = columns of a slice.
      slices: slices in the series.
    Returns:
      a Patient: `hu` float32 [z, y, x] with z ascending (noise included), `lesions`, `reads`
      (per reader, a list of Mark), `uids`, `geometry`, and how it is to be stored.
    """
    def rng(part):
        return np.random.default_rng([seed, k, part])

    geo = _geometry(rng(1), size, slices)
    hu, lung = _anatomy(rng(2), geo)
    lesions = _place_lesions(rng(3), geo, hu, lung)
    _add_noise(rng(4), hu)
    style = _style(rng(5), k)
    reads = _read(rng(6), lesions, geo, style["readers"])
    uids = _uids(seed, k, slices)
    folders = _folders(rng(7), k, uids, style)
    n = len(geo.z)
    numbers = np.arange(n, 0, -1)  # 1 = highest slice, like most of the collection
    if k % 5 == 0:
        numbers = np.arange(1, n + 1)
    elif k % 5 == 3:
        numbers = numbers + 100 * (1 + k % 7)
    patient = Patient(index=k, name=patient_id(k), geometry=geo, hu=hu, lesions=lesions,
                      reads=reads, uids=uids, folders=folders,
                      xml_name=f"{rng(8).integers(1, 1000):03d}.xml",
                      storage=STORAGE[(k - 1) % len(STORAGE)], instance_numbers=numbers,
                      style=style)
    if k % 6 == 2:
        patient.cxr = _chest_xray(rng(9), seed, k, patient)
    return patient


def _geometry(rng, size, slices):
    spacing = round(FIELD_OF_VIEW_MM / size, 6)
    thickness = float(rng.choice([2.5, 2.5, 2.5, 2.0]))
    z_low = -round(rng.uniform(150.0, 400.0) * 2) / 2
    z = z_low + thickness * np.arange(slices)
    half = size * spacing / 2
    origin = (round(-half + rng.uniform(-15, 15), 1), round(-half + rng.uniform(-5, 25), 1))
    return Geometry(size=size, spacing=spacing, thickness=thickness, z=z, origin=origin)


def _uids(seed, k, slices):
    """UIDs under the 2.25 root (from a UUID, DICOM PS3.5 B.2), derived from (seed, k, what)
    so they are the same on every run and distinct across seeds, patients and slices."""
    def uid(*parts):
        name = "/".join(str(p) for p in ("lidc.synthetic", seed, k, *parts))
        return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"

    return {"study": uid("study"), "series": uid("series"), "frame": uid("frame"),
            "sop": [uid("sop", i) for i in range(slices)],
            "cxr_study": uid("cxr-study"), "cxr_series": uid("cxr-series"),
            "cxr_sop": uid("cxr-sop")}


def _folders(rng, k, uids, style):
    """TCIA's classic UID folders, or (every third patient) its descriptive names."""
    if k % 3 != 0:
        return uids["study"], uids["series"]
    study = f"01-01-2000-NA-CT CHEST-{rng.integers(10000, 99999)}"
    series = f"{style['series_number']}.000000-NA-{rng.integers(0, 99999):05d}"
    return study, series


def _style(rng, k):
    """The habits of this patient's reading site: ids, number formats, reader count."""
    readers = int(rng.choice([4, 4, 4, 4, 3, 2]))
    who = rng.choice(["anonymous", "anon", "numbers"], p=[0.35, 0.15, 0.5])
    if who == "numbers":
        ids = [str(int(v)) for v in rng.integers(-2**31, 2**31 - 1, size=readers)]
    else:
        ids = [str(who)] * readers
    return {"readers": [{"id": ids[j], "ids": str(rng.choice(["nodule", "site", "number"])),
                         "site": f"{rng.choice(['IL', 'MI', 'CA', 'NY', 'MD'])}0"
                                 f"{rng.integers(10, 100)}",
                         "first": int(rng.integers(0, 20000)),
                         "z_format": str(rng.choice(["fixed", "fixed space", "short"])),
                         "threshold": float(rng.uniform(0.3, 0.6)),
                         "sensitivity": float(rng.uniform(0.8, 1.1))}
                        for j in range(readers)],
            "version": str(rng.choice(["1.8.1", "1.8", "1.7"])),
            "xsi": bool(rng.random() < 0.7),
            "message_uid": f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{1307390000000 + k * 7919}",
            "message_id": int(rng.integers(-2**31, 2**31 - 1)),
            "date": f"200{rng.integers(6, 9)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
            "time": f"{rng.integers(7, 19):02d}:{rng.integers(0, 60):02d}:"
                    f"{rng.integers(0, 60):02d}",
            "series_number": int(3000000 + rng.integers(500, 700)),
            "window": [(-600, 1600), (-500, 1500), (40, 400)][int(rng.integers(0, 3))]}


# ----------------------------------------------------------------------------- anatomy


def _grid(geo):
    """Image-centred millimetre coordinates: z (Z,1,1), y (1,N,1), x (1,1,N)."""
    c = (np.arange(geo.size, dtype=np.float32) - (geo.size - 1) / 2) * geo.spacing
    z = (geo.z - geo.z.mean()).astype(np.float32)
    return z[:, None, None], c[None, :, None], c[None, None, :]


def _ellipse(x, y, cx, cy, a, b):
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _anatomy(rng, geo):
    """A chest phantom in HU, smooth in z. Returns (hu float32 [z, y, x], lung mask)."""
    z, y, x = _grid(geo)
    a = rng.uniform(135.0, 158.0)
    b = a * rng.uniform(0.62, 0.74)
    cx, cy = rng.uniform(-8, 8), rng.uniform(-5, 12)
    fat = rng.uniform(6.0, 22.0)
    a_in, b_in = a - fat, b - 0.8 * fat
    body = _ellipse(x, y, cx, cy, a, b)
    inner = _ellipse(x, y, cx, cy, a_in, b_in)
    hu = np.full(geo.shape, -1000.0, dtype=np.float32)
    hu[:] = np.where(body, -100.0, -1000.0) + np.where(inner, 140.0, 0.0)
    _table(hu, x, y, cx, cy + b, a)

    mediastinum = _ellipse(x, y, cx, cy - 0.15 * b_in, 0.22 * a_in, 0.55 * b_in)
    hu[:, mediastinum[0]] = -80.0
    heart = _heart(rng, z, y, x, cx, cy, a_in, b_in)
    hu[heart] = rng.uniform(30.0, 60.0)
    aorta = _ellipse(x, y, cx + 0.12 * a_in, cy + 0.42 * b_in, 11.0, 11.0)
    hu[:, aorta[0]] = rng.uniform(40.0, 180.0)
    spine, spine_hu = _spine(rng, y, x, cx, cy + 0.62 * b_in)
    ribs = _ribs(rng, z, y, x, cx, cy, a_in, b_in)
    sternum = _ellipse(x, y, cx, cy - b_in + 9.0, 13.0, 5.0)

    lung = _lungs(rng, z, y, x, cx, cy, a_in, b_in)
    lung &= ~(heart | mediastinum | aorta | spine | ribs | sternum)
    hu[:] = np.where(lung, _parenchyma(rng, geo, y, cy, b_in), hu)
    _vessels(rng, geo, hu, lung, cx, cy, a_in, b_in)

    # Bones go on after the lungs and vessels, so no vessel runs through a rib.
    hu[:, spine[0]] = spine_hu[0][spine[0]]
    hu[:, sternum[0]] = 350.0
    hu[ribs] = rng.uniform(380.0, 520.0)
    return hu, lung


def _table(hu, x, y, cx, bottom, a):
    """The scanner table: two thin shells below the back with foam between."""
    under = np.abs(x - cx) < 0.85 * a
    for top, depth, value in ((bottom + 10, 3.0, 150.0), (bottom + 13, 14.0, -850.0),
                              (bottom + 27, 3.0, 150.0)):
        hu[:, under[0] & (y[0] >= top) & (y[0] < top + depth)] = value


def _heart(rng, z, y, x, cx, cy, a_in, b_in):
    """The heart fills the anterior left chest in the lower half of the scan."""
    hz = rng.uniform(-60.0, -20.0)
    hr = rng.uniform(55.0, 75.0)
    scale = np.sqrt(np.clip(1.0 - ((z - hz) / hr) ** 2, 0.0, 1.0))
    scale = np.maximum(scale, 1e-3)
    return (((x - cx - 0.12 * a_in) / (0.30 * a_in * scale)) ** 2
            + ((y - cy + 0.18 * b_in) / (0.40 * b_in * scale)) ** 2) <= 1.0


def _spine(rng, y, x, cx, vy):
    """A vertebra: cancellous body with a cortical rim, canal, posterior arch."""
    r = rng.uniform(15.0, 19.0)
    d = np.sqrt((x - cx) ** 2 + (y - vy) ** 2)
    vertebra = d <= r
    canal = _ellipse(x, y, cx, vy + r + 8.0, 7.0, 7.0)
    arch = _ellipse(x, y, cx, vy + r + 12.0, 16.0, 9.0) & ~canal
    spine = vertebra | arch
    value = np.where(d > r - 2.0, 700.0, 250.0).astype(np.float32)
    value = np.where(arch, 500.0, value)
    return spine, value


def _ribs(rng, z, y, x, cx, cy, a_in, b_in):
    """Ribs as oblique bands along the chest wall: posterior arcs long, anterior ones short."""
    ex, ey = (x - cx) / a_in, (y - cy) / b_in
    rho = np.sqrt(ex ** 2 + ey ** 2)
    depth = (1.0 - rho) * 0.5 * (a_in + b_in)
    theta = np.arctan2(ey, ex)
    wall = (depth > 1.0) & (depth < 9.0) & (np.abs(np.cos(theta)) > 0.2)
    pitch = rng.uniform(24.0, 30.0)
    phase = (z + 110.0 * (1.0 - np.sin(theta)) / 2.0 + rng.uniform(0, pitch)) / pitch
    return wall & (phase - np.floor(phase) < 0.38)


def _lungs(rng, z, y, x, cx, cy, a_in, b_in):
    """Two lungs, the right one larger, narrowing toward apex and base."""
    zc, az = rng.uniform(-20.0, 20.0), rng.uniform(150.0, 190.0)
    scale = np.sqrt(np.clip(1.0 - ((z - zc) / az) ** 2, 1e-3, 1.0))
    lung = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=bool)
    for side, share in ((-1, 1.05), (1, 0.95)):
        lx, ly = cx + side * 0.50 * a_in, cy + 0.02 * b_in
        ax, ay = 0.38 * a_in * share, 0.80 * b_in
        theta = np.arctan2(y - ly, x - lx)
        wobble = 1.0 + 0.04 * np.cos(2 * theta + rng.uniform(0, 6.3)) \
            + 0.03 * np.cos(3 * theta + rng.uniform(0, 6.3))
        rho = np.sqrt(((x - lx) / ax) ** 2 + ((y - ly) / ay) ** 2)
        lung |= rho <= scale * wobble
    inside = ((x - cx) / (a_in - 10.0)) ** 2 + ((y - cy) / (b_in - 10.0)) ** 2 <= 1.0
    return lung & inside


def _smooth_noise(rng, shape, cell):
    """Gaussian noise smooth over about `cell` voxels, unit standard deviation."""
    zs, n = shape[0], shape[1]
    coarse = rng.standard_normal((max(2, zs // 2 + 1), max(2, n // cell + 1),
                                  max(2, n // cell + 1))).astype(np.float32)
    planes = np.stack([cv2.resize(p, (n, n), interpolation=cv2.INTER_CUBIC) for p in coarse])
    pos = np.linspace(0, len(planes) - 1, zs)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(planes) - 1)
    w = (pos - lo)[:, None, None].astype(np.float32)
    out = planes[lo] * (1 - w) + planes[hi] * w
    return out / max(float(out.std()), 1e-6)


def _parenchyma(rng, geo, y, cy, b_in):
    """Lung tissue: about -850 HU, denser toward the back (gravity), with a patchy texture."""
    base = rng.uniform(-875.0, -840.0)
    gradient = 30.0 * (y - cy) / b_in
    return base + gradient + 18.0 * _smooth_noise(rng, geo.shape, 6)


def _vessels(rng, geo, hu, lung, cx, cy, a_in, b_in):
    """Vessels blended into the lungs: trees from each hilum thinning toward the periphery,
    and vessels from above and below the scanned range, seen mostly as dots."""
    frac = np.zeros(geo.shape, dtype=np.float32)
    centre = np.array([(len(geo.z) - 1) / 2, (geo.size - 1) / 2, (geo.size - 1) / 2]) * geo.scale
    segments = []
    for side in (-1, 1):
        hilum = centre + np.array([rng.uniform(-10, 10), cy - 0.05 * b_in,
                                   cx + side * 0.24 * a_in])
        for _ in range(int(rng.integers(5, 8))):
            d = np.array([rng.uniform(-1, 1), rng.uniform(-0.7, 0.7), side * rng.uniform(0.3, 1)])
            _grow(rng, segments, lung, geo, hilum, hilum, d / np.linalg.norm(d),
                  rng.uniform(3.5, 5.5), rng.uniform(20.0, 30.0), 0)
    segments += _through_vessels(rng, geo, lung)
    for p, q, r in segments:
        _tube(frac, geo, p, q, r)
    frac *= lung
    hu += frac * (rng.uniform(20.0, 60.0) - hu)


def _grow(rng, segments, lung, geo, hilum, p, d, r, length, depth):
    q = p + d * length
    segments.append((p, q, r))
    idx = np.round(q / geo.scale).astype(int)
    inside = np.all(idx >= 0) and np.all(idx < np.array(geo.shape))
    if r < 0.6 or depth >= 8 or (depth >= 1 and not (inside and lung[tuple(idx)])):
        return
    outward = (q - hilum) / max(np.linalg.norm(q - hilum), 1e-6)
    for turn in (1, -1):
        e = rng.standard_normal(3)
        e -= e.dot(d) * d
        e /= np.linalg.norm(e)
        angle = np.radians(rng.uniform(18.0, 40.0))
        # Branches keep heading away from the hilum, so the tree fills the lung.
        nd = np.cos(angle) * d + turn * np.sin(angle) * e + 0.4 * outward
        _grow(rng, segments, lung, geo, hilum, q, nd / np.linalg.norm(nd),
              r * rng.uniform(0.68, 0.8), length * rng.uniform(0.72, 0.85), depth + 1)


def _through_vessels(rng, geo, lung):
    """Bent tubes running roughly head to foot through the lungs, from trees not scanned."""
    zs, rows, cols = np.nonzero(lung[::4, ::4, ::4])
    if len(zs) == 0:
        return []
    span = len(geo.z) * geo.thickness
    segments = []
    for i in rng.choice(len(zs), size=min(len(zs), int(rng.integers(50, 80))), replace=False):
        p = np.array([zs[i], rows[i], cols[i]]) * 4 * geo.scale
        r = float(np.clip(rng.lognormal(np.log(1.0), 0.4), 0.5, 2.5))
        for _ in range(3):
            d = np.array([1.0, *rng.normal(0, 0.5, 2)])
            q = p + d / np.linalg.norm(d) * rng.uniform(0.15, 0.4) * span * rng.choice([-1, 1])
            segments.append((p, q, r))
            p = q
    return segments


def _box(geo, lo_mm, hi_mm, shape=None):
    """Index slices and millimetre coordinates (z, y, x broadcastable) of a box in the volume."""
    shape = geo.shape if shape is None else shape
    lo = np.maximum(np.floor(np.asarray(lo_mm) / geo.scale).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(hi_mm) / geo.scale).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, (None, None, None)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    coords = [np.arange(a, b, dtype=np.float32) * s for a, b, s in zip(lo, hi, geo.scale)]
    return box, (coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :])


def _tube(field, geo, p, q, r, origin=(0, 0, 0), value=1.0):
    """Raises `field` to the occupancy of a cylinder p->q of radius r (mm), with partial volume.

    `origin` is the index of field[0, 0, 0] in the volume, for fields that are boxes.
    """
    pad = r + 2.0 * geo.thickness
    off = np.asarray(origin) * geo.scale
    box, (zz, yy, xx) = _box(geo, np.minimum(p, q) - pad - off, np.maximum(p, q) + pad - off,
                             field.shape)
    if box is None:
        return
    zz, yy, xx = zz + off[0], yy + off[1], xx + off[2]
    w = q - p
    t = ((zz - p[0]) * w[0] + (yy - p[1]) * w[1] + (xx - p[2]) * w[2]) / max(w.dot(w), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    dz, dy, dx = zz - (p[0] + t * w[0]), yy - (p[1] + t * w[1]), xx - (p[2] + t * w[2])
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    occ = _soft_edge(r - d, dz, d, geo) * (value * min(1.0, 2.0 * r / geo.spacing))
    field[box] = np.maximum(field[box], occ)


def _soft_edge(inside_mm, dz, d, geo):
    """Voxel occupancy from a signed distance: a ramp about one voxel wide across the surface,
    wider where the surface runs across thick slices (partial volume)."""
    width = 0.5 * geo.spacing + 0.5 * geo.thickness * np.abs(dz) / np.maximum(d, 1e-3)
    return np.clip(0.5 + inside_mm / width, 0.0, 1.0).astype(np.float32)


def _add_noise(rng, hu):
    """Scanner noise: gaussian, slightly correlated between neighbouring pixels, like CT's."""
    sigma = rng.uniform(15.0, 30.0)
    for plane in hu:
        white = rng.standard_normal(plane.shape).astype(np.float32)
        plane += cv2.GaussianBlur(white, (0, 0), 0.6) * (sigma / 0.45)


# ----------------------------------------------------------------------------- lesions


def _place_lesions(rng, geo, hu, lung):
    """Draws a few lesions of each kind, places them in the lungs and blends them into `hu`."""
    dist = np.stack([cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3) for m in lung])
    free = np.ones(geo.shape, dtype=bool)
    lesions = []
    plan = ([0] * int(rng.integers(3, 7)) + [1] * int(rng.integers(3, 8))
            + [2] * int(rng.integers(4, 10)))
    for kind in plan:
        make = (_nodule, _micronodule, _non_nodule)[kind]
        lesion = make(rng, geo, dist, free, lung)
        if lesion is None:
            continue
        _blend(hu, lesion)
        _reserve(free, lesion, geo)
        lesions.append(lesion)
    return lesions


def _pick(rng, geo, dist, free, min_mm, max_mm=None, z_mm=0.0):
    """A random voxel with in-plane distance to the lung edge in [min_mm, max_mm] on every
    slice within z_mm of it, and free of other lesions. None when there is none."""
    ok = (dist * geo.spacing >= min_mm) & free
    if max_mm is not None:
        ok &= dist * geo.spacing <= max_mm
    reach = int(math.ceil(z_mm / geo.thickness))
    n = ok.shape[0]
    if 2 * reach + 1 > n - 2:
        return None
    valid = np.zeros_like(ok)
    core = ok[reach:n - reach].copy()
    for j in range(1, reach + 1):
        core &= (dist[reach - j:n - reach - j] * geo.spacing >= min_mm * 0.5)
        core &= (dist[reach + j:n - reach + j] * geo.spacing >= min_mm * 0.5)
    valid[reach:n - reach] = core
    valid[0] = valid[-1] = False
    flat = np.flatnonzero(valid)
    if len(flat) == 0:
        return None
    return np.unravel_index(int(rng.choice(flat)), ok.shape)


def _nodule(rng, geo, dist, free, lung):
    """A nodule >= 3 mm: solid, part-solid, ground glass or calcified; round, lobulated or
    spiculated; a few large ones cavitate."""
    d = float(np.clip(rng.lognormal(np.log(9.0), 0.45), 3.0, 25.0))
    form = str(rng.choice(["solid", "part-solid", "ground glass", "calcified"],
                          p=[0.55, 0.15, 0.25, 0.05]))
    if form == "calcified":
        d = min(d, 9.0)
    r = d / 2
    shape = str(rng.choice(["round", "lobulated", "spiculated"], p=[0.6, 0.25, 0.15]))
    pleural = rng.random() < 0.15
    centre = _pick(rng, geo, dist, free, r * (0.5 if pleural else 1.0) + 2.0, z_mm=r)
    if centre is None:
        return None
    hu = {"solid": rng.uniform(-100.0, 60.0), "part-solid": rng.uniform(-650.0, -400.0),
          "ground glass": rng.uniform(-650.0, -300.0), "calcified": rng.uniform(250.0, 700.0)}[form]
    axes = r * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)])
    spikes = int(rng.integers(4, 9)) if shape == "spiculated" else 0
    extent = r * 1.5 + (8.0 if spikes else 0.0) + 2 * geo.thickness
    occ, origin, coords = _blob(rng, geo, centre, axes, extent,
                                bumps=4 if shape == "lobulated" else 0)
    c_mm = np.asarray(centre) * geo.scale
    for _ in range(spikes):
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        _tube(occ, geo, c_mm, c_mm + u * (r + rng.uniform(3.0, 8.0)), rng.uniform(0.5, 0.9),
              origin=origin, value=0.9)
    occ *= _lung_box(lung, origin, occ.shape, grow=not pleural)
    lesion = Lesion(kind=0, form=form, center=tuple(int(v) for v in centre), diameter_mm=d,
                    hu=float(hu), origin=origin, occupancy=occ,
                    traits={"shape": shape, "pleural": bool(pleural)})
    if form == "part-solid":
        core = _sphere(geo, coords, c_mm, r * rng.uniform(0.35, 0.6))
        lesion.traits["core"] = (core, float(rng.uniform(-80.0, 40.0)))
    if form == "solid" and d >= 12.0 and rng.random() < 0.35:
        shift = rng.standard_normal(3) * np.array([0.0, 1.0, 1.0])
        shift *= 0.25 * r / max(np.linalg.norm(shift), 1e-6)
        lesion.hole = _sphere(geo, coords, c_mm + shift, r * rng.uniform(0.25, 0.4)) * (occ > 0.9)
    return lesion


def _blob(rng, geo, centre, axes, extent, bumps=0):
    """Occupancy of a rotated ellipsoid (mm axes) with optional lobes, in a box around `centre`.

    Returns (occupancy, box origin index, box coordinates in mm)."""
    c_mm = np.asarray(centre) * geo.scale
    box, (zz, yy, xx) = _box(geo, c_mm - extent, c_mm + extent)
    dz, dy, dx = zz - c_mm[0], yy - c_mm[1], xx - c_mm[2]
    rot = _rotation(rng)
    local = [rot[i, 0] * dz + rot[i, 1] * dy + rot[i, 2] * dx for i in range(3)]
    rho = np.sqrt(sum((l / a) ** 2 for l, a in zip(local, axes)))
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    reach = np.ones_like(rho)
    for _ in range(bumps):
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        cos = (u[0] * dz + u[1] * dy + u[2] * dx) / np.maximum(d, 1e-3)
        reach += rng.uniform(0.15, 0.3) * np.clip(cos, 0, 1) ** 4
    inside = (reach - rho) * float(np.mean(axes))
    occ = _soft_edge(inside, dz, d, geo)
    origin = tuple(s.start for s in box)
    return occ, origin, (zz, yy, xx)


def _rotation(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _sphere(geo, coords, c_mm, r):
    zz, yy, xx = coords
    dz, dy, dx = zz - c_mm[0], yy - c_mm[1], xx - c_mm[2]
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    return _soft_edge(r - d, dz, d, geo)


def _lung_box(lung, origin, shape, grow=True):
    """The lung mask over a box, grown by a pixel so lesions may touch the pleura."""
    box = tuple(slice(o, o + s) for o, s in zip(origin, shape))
    m = lung[box].astype(np.uint8)
    if grow:
        m = np.stack([cv2.dilate(p, np.ones((3, 3), np.uint8)) for p in m])
    else:
        m = np.ones_like(m)
    return m.astype(np.float32)


def _micronodule(rng, geo, dist, free, lung):
    """A nodule < 3 mm: a dot blurred by the voxel size, so its peak is only partly dense."""
    d = float(rng.uniform(1.5, 3.0))
    form = "solid" if rng.random() < 0.7 else "ground glass"
    hu = rng.uniform(-150.0, 60.0) if form == "solid" else rng.uniform(-600.0, -400.0)
    centre = _pick(rng, geo, dist, free, 4.0, z_mm=2.0)
    if centre is None:
        return None
    r = d / 2
    sxy = math.sqrt((r / 2) ** 2 + (geo.spacing / 2) ** 2)
    sz = math.sqrt((r / 2) ** 2 + (geo.thickness / 2.35) ** 2)
    peak = min(1.0, (4 / 3 * math.pi * r ** 3) / ((2 * math.pi) ** 1.5 * sxy * sxy * sz))
    c_mm = np.asarray(centre) * geo.scale
    extent = np.array([3 * sz + geo.thickness, 3 * sxy + geo.spacing, 3 * sxy + geo.spacing])
    box, (zz, yy, xx) = _box(geo, c_mm - extent, c_mm + extent)
    occ = peak * np.exp(-((yy - c_mm[1]) ** 2 + (xx - c_mm[2]) ** 2) / (2 * sxy * sxy)
                        - (zz - c_mm[0]) ** 2 / (2 * sz * sz))
    return Lesion(kind=1, form=form, center=tuple(int(v) for v in centre), diameter_mm=d,
                  hu=float(hu), origin=tuple(s.start for s in box),
                  occupancy=occ.astype(np.float32))


def _non_nodule(rng, geo, dist, free, lung):
    """A non-nodule >= 3 mm: a scar or band of linear atelectasis, a pleural plaque, or an
    irregular patchy opacity."""
    form = str(rng.choice(["scar", "pleural plaque", "irregular opacity"], p=[0.5, 0.25, 0.25]))
    if form == "pleural plaque":
        return _plaque(rng, geo, dist, free, lung)
    if form == "scar":
        length = rng.uniform(10.0, 30.0)
        centre = _pick(rng, geo, dist, free, 5.0, z_mm=3.0)
        if centre is None:
            return None
        c_mm = np.asarray(centre) * geo.scale
        u = np.array([rng.uniform(-0.25, 0.25), rng.standard_normal(), rng.standard_normal()])
        u /= np.linalg.norm(u)
        bend = rng.standard_normal(3) * np.array([0.2, 1, 1]) * rng.uniform(1.0, 3.0)
        extent = length / 2 + 4.0 + 2 * geo.thickness
        box, _ = _box(geo, c_mm - extent, c_mm + extent)
        origin = tuple(s.start for s in box)
        occ = np.zeros(tuple(s.stop - s.start for s in box), dtype=np.float32)
        radius = rng.uniform(1.2, 3.0)
        ends = (c_mm - u * length / 2, c_mm + bend, c_mm + u * length / 2)
        for p, q in zip(ends[:-1], ends[1:]):
            _tube(occ, geo, p, q, radius, origin=origin)
        hu = rng.uniform(-100.0, 60.0)
    else:
        centre = _pick(rng, geo, dist, free, 8.0, z_mm=4.0)
        if centre is None:
            return None
        c_mm = np.asarray(centre) * geo.scale
        occ, origin, coords = _blob(rng, geo, centre, np.full(3, rng.uniform(2.5, 4.5)), 14.0)
        for _ in range(int(rng.integers(2, 5))):
            offset = rng.standard_normal(3) * np.array([0.5, 1, 1]) * 3.5
            occ = np.maximum(occ, _sphere(geo, coords, c_mm + offset, rng.uniform(2.0, 4.0)))
        hu = rng.uniform(-300.0, 0.0)
    occ *= _lung_box(lung, origin, occ.shape)
    return Lesion(kind=2, form=form, center=_densest(occ, origin), diameter_mm=_extent(occ, geo),
                  hu=float(hu), origin=origin, occupancy=occ)


def _plaque(rng, geo, dist, free, lung):
    """A flat pleural-based plaque on the lateral or posterior wall."""
    centre = _pick(rng, geo, dist, free, 0.5 * geo.spacing, max_mm=1.5 * geo.spacing, z_mm=4.0)
    if centre is None:
        return None
    zi = centre[0]
    rows, cols = np.nonzero(lung[zi])
    normal = np.array([centre[1] - rows.mean(), centre[2] - cols.mean()], dtype=float)
    normal /= max(np.linalg.norm(normal), 1e-6)
    thick, wide, tall = rng.uniform(2.0, 4.0), rng.uniform(5.0, 12.0), rng.uniform(3.0, 8.0)
    c_mm = np.asarray(centre) * geo.scale + np.array([0.0, *normal]) * thick * 0.5
    extent = max(wide, tall) + 2 * geo.thickness
    box, (zz, yy, xx) = _box(geo, c_mm - extent, c_mm + extent)
    dz, dy, dx = zz - c_mm[0], yy - c_mm[1], xx - c_mm[2]
    across = dy * normal[0] + dx * normal[1]
    along = -dy * normal[1] + dx * normal[0]
    rho = np.sqrt((across / thick) ** 2 + (along / wide) ** 2 + (dz / tall) ** 2)
    d = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    occ = _soft_edge((1.0 - rho) * thick, dz, d, geo)
    origin = tuple(s.start for s in box)
    return Lesion(kind=2, form="pleural plaque", center=_densest(occ, origin),
                  diameter_mm=_extent(occ, geo), hu=float(rng.uniform(-40.0, 80.0)),
                  origin=origin, occupancy=occ)


def _densest(occ, origin):
    """The point a reader marks: on the slice where the lesion is largest, the lesion voxel
    nearest its centroid."""
    zi = int(np.argmax(occ.reshape(len(occ), -1).sum(axis=1)))
    plane = occ[zi]
    rows, cols = np.nonzero(plane >= 0.5 * plane.max())
    weights = plane[rows, cols]
    r0, c0 = np.average(rows, weights=weights), np.average(cols, weights=weights)
    best = int(np.argmin((rows - r0) ** 2 + (cols - c0) ** 2))
    return (int(origin[0] + zi), int(origin[1] + rows[best]), int(origin[2] + cols[best]))


def _extent(occ, geo):
    """The longest side (mm) of the lesion's bounding box on the slice where it is largest."""
    zi = int(np.argmax(occ.reshape(len(occ), -1).sum(axis=1)))
    rows, cols = np.nonzero(occ[zi] >= 0.5)
    if len(rows) == 0:
        return 0.0
    return float(max(np.ptp(rows) + 1, np.ptp(cols) + 1) * geo.spacing)


def _blend(hu, lesion):
    box = tuple(slice(o, o + s) for o, s in zip(lesion.origin, lesion.occupancy.shape))
    value = np.full(lesion.occupancy.shape, lesion.hu, dtype=np.float32)
    if "core" in lesion.traits:
        core, core_hu = lesion.traits["core"]
        value += core * (core_hu - value)
    if lesion.hole is not None:
        value += lesion.hole * (-950.0 - value)
    hu[box] += lesion.occupancy * (value - hu[box])


def _reserve(free, lesion, geo):
    """Keeps later lesions a few millimetres away from this one."""
    margin = np.ceil(np.array([4.0, 4.0, 4.0]) / geo.scale).astype(int)
    lo = np.maximum(np.asarray(lesion.origin) - margin, 0)
    hi = np.asarray(lesion.origin) + np.asarray(lesion.occupancy.shape) + margin
    free[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False


# ----------------------------------------------------------------------------- readers


def _read(rng, lesions, geo, readers):
    """Each reader's marks: a list (one per reader) of Mark lists.

    Readers miss faint and small lesions more often, contour at their own threshold and hand,
    call small nodules points now and then, and mistake some dots for non-nodules.
    """
    reads = [[] for _ in readers]
    for i, lesion in enumerate(lesions):
        seen = lesion.conspicuity
        base = (0.55 + 0.45 * seen, 0.3 + 0.45 * seen, 0.55)[lesion.kind]
        who = [j for j, reader in enumerate(readers)
               if rng.random() < min(0.98, base * reader["sensitivity"])]
        if not who:
            who = [int(rng.integers(len(readers)))]
        for j in who:
            mark = _mark(rng, i, lesion, geo, readers[j])
            if mark is not None:
                reads[j].append(mark)
    return reads


def _mark(rng, i, lesion, geo, reader):
    if lesion.kind == 0:
        if lesion.diameter_mm < 5.0 and rng.random() < 0.3:
            return Mark("point", i, [_point(rng, lesion, geo, 1)])
        rois = _contours(rng, lesion, geo, reader)
        if not rois:
            return Mark("point", i, [_point(rng, lesion, geo, 1)])
        return Mark("contour", i, rois, _characteristics(rng, lesion))
    if lesion.kind == 1:
        if rng.random() < 0.1:
            return Mark("nonnodule", i, [_point(rng, lesion, geo, 1)])
        chars = _characteristics(rng, lesion) if rng.random() < 0.1 else None
        return Mark("point", i, [_point(rng, lesion, geo, 1)], chars)
    return Mark("nonnodule", i, [_point(rng, lesion, geo, 2)])


def _point(rng, lesion, geo, jitter):
    """A single click near the lesion's centre, now and then on the next slice."""
    z, r, c = lesion.center
    if rng.random() < 0.15:
        z += int(rng.choice([-1, 1]))
    z = int(np.clip(z, 0, len(geo.z) - 1))
    r, c = (int(np.clip(v + rng.integers(-jitter, jitter + 1), 0, geo.size - 1)) for v in (r, c))
    return (z, True, np.array([[c, r]]))


def _contours(rng, lesion, geo, reader):
    """One reader's outlines of a nodule, slice by slice, plus holes around a cavity."""
    threshold = float(np.clip(reader["threshold"] + rng.normal(0, 0.05), 0.2, 0.7))
    hand = str(rng.choice(["none", "dilate", "erode"], p=[0.6, 0.2, 0.2]))
    shift = rng.integers(-1, 2, size=2) if rng.random() < 0.3 else np.zeros(2, int)
    offset = np.array([lesion.origin[2], lesion.origin[1]]) + shift
    rois = []
    marks_hole = lesion.hole is not None and rng.random() < 0.6
    for zi, plane in enumerate(lesion.occupancy):
        mask = _hand(plane >= threshold, hand)
        points = _outline(mask, grow=True)
        if points is None:
            continue
        points = np.clip(points + offset, 0, geo.size - 1)
        rois.append((lesion.origin[0] + zi, True, points))
        if marks_hole:
            hole = _outline(lesion.hole[zi] >= 0.5, grow=False)
            if hole is not None:
                rois.append((lesion.origin[0] + zi, False, np.clip(hole + offset, 0,
                                                                   geo.size - 1)))
    return rois


def _hand(mask, hand):
    mask = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    if hand == "dilate":
        return cv2.dilate(mask, kernel)
    if hand == "erode" and cv2.erode(mask, kernel).any():
        return cv2.erode(mask, kernel)
    return mask


def _outline(mask, grow):
    """The dense closed outline (x, y) of the largest region of `mask`, or None.

    With `grow` the outline runs on the pixels just outside the region, as LIDC readers drew it,
    and the first point is repeated at the end, as in the real files.
    """
    mask = mask.astype(np.uint8)
    if not mask.any():
        return None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    mask = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    if grow:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=len).reshape(-1, 2)
    return np.concatenate([points, points[:1]])


def _characteristics(rng, lesion):
    """The nine LIDC ratings a reader gives a nodule, from what it is, give or take one."""
    shape = lesion.traits.get("shape", "round")
    form = lesion.form
    d = lesion.diameter_mm
    ratings = {
        "subtlety": 1 + 4 * lesion.conspicuity,
        "internalStructure": 4 if lesion.hole is not None else 1,
        "calcification": 3 if form == "calcified" else 6,
        "sphericity": {"round": 4.5, "lobulated": 3.5, "spiculated": 2.5}[shape],
        "margin": {"solid": 4.5, "calcified": 5, "part-solid": 3, "ground glass": 2.5}[form]
        - (2 if shape == "spiculated" else 0),
        "lobulation": 3.5 if shape == "lobulated" else 1.2,
        "spiculation": 4 if shape == "spiculated" else 1.2,
        "texture": {"solid": 5, "calcified": 5, "part-solid": 3, "ground glass": 1}[form],
        "malignancy": (1 if form == "calcified" else 1.5 + (d > 6) + (d > 12)
                       + (shape == "spiculated") + (form == "part-solid")),
    }
    fixed = ("internalStructure", "calcification")
    return {k: int(np.clip(round(v + (0 if k in fixed else rng.normal(0, 0.6))), 1, 6 if
                           k == "calcification" else 5)) for k, v in ratings.items()}


# ----------------------------------------------------------------------------- writing


def _write_patient(root, patient):
    """Writes a patient into a temporary folder and renames it into place. Returns file count."""
    final = Path(root) / patient.name
    tmp = Path(root) / f".{patient.name}.part"
    old = Path(root) / f".{patient.name}.old"
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    series = tmp / patient.folders[0] / patient.folders[1]
    series.mkdir(parents=True)
    files = _write_ct(series, patient)
    (series / patient.xml_name).write_bytes(lidc_xml(patient))
    files += 1
    if patient.cxr is not None:
        cxr = tmp / patient.cxr["folders"][0] / patient.cxr["folders"][1]
        cxr.mkdir(parents=True)
        patient.cxr["dataset"].save_as(cxr / "1-1.dcm", enforce_file_format=True)
        (cxr / patient.cxr["xml_name"]).write_bytes(patient.cxr["xml"])
        files += 2
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return files


def stored_values(hu, storage):
    """HU -> the stored pixel values of a storage variant (HU = stored * slope + intercept)."""
    hu = np.clip(hu, -1024.0, 3071.0)
    return np.rint((hu - storage["intercept"]) / storage["slope"]).astype(storage["dtype"])


def _write_ct(folder, patient):
    geo, storage = patient.geometry, patient.storage
    ds = _ct_header(patient)
    pixels = stored_values(patient.hu, storage)
    outside = _outside_fov(geo.size)
    fill = storage["padding"] if storage["padding"] is not None else \
        stored_values(np.array(-1024.0), storage)
    n = len(geo.z)
    for file_no in range(1, n + 1):
        zi = n - file_no  # 1-001.dcm is the highest slice, as TCIA's downloader names them
        plane = pixels[zi]
        plane[outside] = fill
        sop = patient.uids["sop"][zi]
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = int(patient.instance_numbers[zi])
        ds.ImagePositionPatient = [f"{geo.origin[0]:.6f}", f"{geo.origin[1]:.6f}",
                                   f"{geo.z[zi]:.6f}"]
        ds.SliceLocation = f"{geo.z[zi]:.6f}"
        ds.PixelData = np.ascontiguousarray(plane).astype(plane.dtype.newbyteorder("<")).tobytes()
        ds.save_as(folder / f"1-{file_no:03d}.dcm", enforce_file_format=True)
    return n


def _outside_fov(size):
    c = (size - 1) / 2
    rows, cols = np.ogrid[:size, :size]
    return (rows - c) ** 2 + (cols - c) ** 2 > (size / 2) ** 2


def _file_meta(sop_class, sop_uid):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    return meta


def _common_header(ds, patient, modality, sop_class, study_uid, series_uid):
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.AcquisitionTime = ds.ContentTime = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.ReferringPhysicianName = ""
    ds.PatientName = ""
    ds.PatientID = patient.name
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "CHEST"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16


def _ct_header(patient):
    """The header every slice of the series shares, modelled on LIDC-IDRI-0003's."""
    geo, storage, style = patient.geometry, patient.storage, patient.style
    ds = Dataset()
    ds.file_meta = _file_meta(CT_IMAGE_STORAGE, patient.uids["sop"][0])
    _common_header(ds, patient, "CT", CT_IMAGE_STORAGE, patient.uids["study"],
                   patient.uids["series"])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = ["GE MEDICAL SYSTEMS", "SIEMENS", "TOSHIBA", "Philips"][patient.index % 4]
    ds.SliceThickness = f"{geo.thickness:.6f}"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "FFS"
    ds.SeriesNumber = style["series_number"]
    ds.ImageOrientationPatient = ["1.000000", "0.000000", "0.000000",
                                  "0.000000", "1.000000", "0.000000"]
    ds.FrameOfReferenceUID = patient.uids["frame"]
    ds.PositionReferenceIndicator = "SN"
    ds.Rows = ds.Columns = geo.size
    ds.PixelSpacing = [f"{geo.spacing:.6f}", f"{geo.spacing:.6f}"]
    signed = storage["dtype"] == "int16"
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    if storage["padding"] is not None:
        ds.add_new(0x00280120, "SS" if signed else "US", storage["padding"])
    ds.WindowCenter, ds.WindowWidth = (str(v) for v in style["window"])
    ds.RescaleIntercept = f"{storage['intercept']:g}"
    ds.RescaleSlope = f"{storage['slope']:g}"
    ds.RescaleType = "HU"
    return ds


def _z_text(z, fmt, rng_bit):
    if fmt == "short":
        return repr(float(z))
    return f"{z:.6f}" + (" " if fmt == "fixed space" or rng_bit else "")


def _ids(reader, n_nodules):
    """The reader's nodule and non-nodule ID makers, in one of the collection's styles:
    'Nodule 001' / '_Non-nodule 001', 'IL057_127364' (site and counter), or plain numbers."""
    style, first = reader["ids"], reader["first"]
    if style == "nodule":
        return (lambda i: f"Nodule {i + 1:03d}"), (lambda i: f"_Non-nodule {i + 1:03d}")
    if style == "site":
        site, start = reader["site"], 100000 + 10 * first
        return (lambda i: f"{site}_{start + i}"), (lambda i: f"{site}_{start + n_nodules + i}")
    start = first % 2 if first % 3 else first
    return (lambda i: str(start + i)), (lambda i: str(start + n_nodules + i))


def _sub(parent, tag, text=None, ns=LIDC_NS):
    element = etree.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        element.text = str(text)
    return element


def lidc_xml(patient):
    """The patient's reads as LIDC XML bytes (a LidcReadMessage in namespace http://www.nih.gov)."""
    style, uids, geo = patient.style, patient.uids, patient.geometry
    nsmap = {None: LIDC_NS, "xsi": XSI_NS} if style["xsi"] else {None: LIDC_NS}
    root = etree.Element(f"{{{LIDC_NS}}}LidcReadMessage", nsmap=nsmap)
    root.set("uid", style["message_uid"] + ".0")
    if style["xsi"]:
        root.set(f"{{{XSI_NS}}}schemaLocation",
                 f"{LIDC_NS}  http://troll.rad.med.umich.edu/lidc/LidcReadMessage.xsd")
    header = _sub(root, "ResponseHeader")
    for tag, text in (("Version", style["version"]), ("MessageId", style["message_id"]),
                      ("DateRequest", style["date"]), ("TimeRequest", style["time"]),
                      ("RequestingSite", "removed"), ("ServicingSite", "removed"),
                      ("TaskDescription", "Second unblinded read"),
                      ("CtImageFile", "removed"), ("SeriesInstanceUid", uids["series"]),
                      ("DateService", style["date"]), ("TimeService", style["time"]),
                      ("ResponseDescription", "1 - Reading complete"),
                      ("StudyInstanceUID", uids["study"])):
        _sub(header, tag, text)
    for reader, marks in zip(style["readers"], patient.reads):
        _session(root, reader, marks, uids, geo)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, pretty_print=True)


def _session(root, reader, marks, uids, geo):
    session = _sub(root, "readingSession")
    _sub(session, "annotationVersion", "3.12")
    _sub(session, "servicingRadiologistID", reader["id"])
    nodules = [m for m in marks if m.element != "nonnodule"]
    others = [m for m in marks if m.element == "nonnodule"]
    nodule_id, other_id = _ids(reader, len(nodules))
    z_fmt = reader["z_format"]
    for i, mark in enumerate(nodules):
        element = _sub(session, "unblindedReadNodule")
        _sub(element, "noduleID", nodule_id(i))
        if mark.characteristics:
            chars = _sub(element, "characteristics")
            for name, value in mark.characteristics.items():
                _sub(chars, name, value)
        for zi, inclusion, points in mark.rois:
            roi = _sub(element, "roi")
            _sub(roi, "imageZposition", _z_text(geo.z[zi], z_fmt, False))
            _sub(roi, "imageSOP_UID", uids["sop"][zi])
            _sub(roi, "inclusion", "TRUE" if inclusion else "FALSE")
            for x, y in points:
                edge = _sub(roi, "edgeMap")
                _sub(edge, "xCoord", int(x))
                _sub(edge, "yCoord", int(y))
    for i, mark in enumerate(others):
        zi, _, points = mark.rois[0]
        element = _sub(session, "nonNodule")
        _sub(element, "nonNoduleID", other_id(i))
        _sub(element, "imageZposition", _z_text(geo.z[zi], z_fmt, i % 3 == 1))
        _sub(element, "imageSOP_UID", uids["sop"][zi])
        locus = _sub(element, "locus")
        _sub(locus, "xCoord", int(points[0][0]))
        _sub(locus, "yCoord", int(points[0][1]))


# ----------------------------------------------------------------------------- chest X-ray


def _chest_xray(rng, seed, k, patient):
    """A second study: one CR radiograph (a projection of the phantom) and its CXR read."""
    image = _radiograph(patient.hu, patient.geometry)
    uids = patient.uids
    ds = Dataset()
    ds.file_meta = _file_meta(CR_IMAGE_STORAGE, uids["cxr_sop"])
    _common_header(ds, patient, "CR", CR_IMAGE_STORAGE, uids["cxr_study"], uids["cxr_series"])
    ds.SOPInstanceUID = uids["cxr_sop"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = image.shape
    ds.ImagerPixelSpacing = ["0.200000", "0.200000"]
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = image.astype("<u2").tobytes()
    if k % 3 == 0:
        folders = (f"01-01-2000-NA-CHEST PA-{rng.integers(10000, 99999)}",
                   f"1.000000-NA-{rng.integers(0, 99999):05d}")
    else:
        folders = (uids["cxr_study"], uids["cxr_series"])
    lesions = [(i, l) for i, l in enumerate(patient.lesions) if l.kind == 0][:2]
    return {"dataset": ds, "folders": folders, "xml": _idri_xml(rng, patient, lesions, image),
            "xml_name": f"{rng.integers(1, 1000):03d}.xml"}


def _radiograph(hu, geo):
    """Attenuation summed front to back, head up, 12-bit, bone and lesions bright."""
    mu = np.clip(hu + 1000.0, 0.0, None).sum(axis=1) * geo.spacing / 1000.0  # [z, x]
    image = 4095.0 * (1.0 - np.exp(-mu / 60.0))
    size = 2 * geo.size
    return cv2.resize(image[::-1].astype(np.float32), (size, size)).clip(0, 4095).astype(np.uint16)


def _idri_xml(rng, patient, lesions, image):
    """A chest X-ray read (IdriReadMessage, namespace http://www.nih.gov/idri), like 186/001.xml.

    Its header names the CT series too (CTSeriesInstanceUid): a pipeline that matches XML to
    series by any element ending in SeriesInstanceUid would wrongly take it for the CT read."""
    uids, style, geo = patient.uids, patient.style, patient.geometry
    root = etree.Element(f"{{{IDRI_NS}}}IdriReadMessage", nsmap={None: IDRI_NS, "xsi": XSI_NS})
    root.set("uid", style["message_uid"] + ".1")
    root.set(f"{{{XSI_NS}}}schemaLocation",
             f"{IDRI_NS}  http://troll.rad.med.umich.edu/idri/IdriReadMessage.xsd")
    header = _sub(root, "ResponseHeader", ns=IDRI_NS)
    for tag, text in (("Version", "1.4"), ("MessageId", int(rng.integers(1000000, 9999999))),
                      ("DateRequest", "2009-11-04"), ("TimeRequest", "11:07:09"),
                      ("RequestingSite", "removed"), ("ServicingSite", "removed"),
                      ("TaskDescription", "CXR read"), ("CTImageFile", "removed"),
                      ("CTSeriesInstanceUid", uids["series"]), ("CXRImageFile", "removed"),
                      ("CXRSeriesInstanceUid", uids["cxr_series"]), ("Modality", "CXR"),
                      ("DateService", "2010-10-10"), ("TimeService", "12:00:00"),
                      ("ResponseDescription", "1 - Reading complete"), ("ResponseComments", ""),
                      ("StudyInstanceUID", uids["cxr_study"]),
                      ("SeriesInstanceUID", uids["cxr_series"])):
        _sub(header, tag, text, ns=IDRI_NS)
    scale = image.shape[0] / len(geo.z), image.shape[1] / geo.size
    for _ in range(int(rng.integers(2, 5))):
        session = _sub(root, "CXRreadingSession", ns=IDRI_NS)
        _sub(session, "servicingRadiologistID", "anonymous", ns=IDRI_NS)
        for i, lesion in lesions:
            read = _sub(session, "unblindedRead", ns=IDRI_NS)
            _sub(read, "noduleID", f"CA{10 + patient.index % 90:03d}_{124130 + 111 * i}",
                 ns=IDRI_NS)
            chars = _sub(read, "characteristics", ns=IDRI_NS)
            _sub(chars, "confidence", int(rng.integers(1, 4)), ns=IDRI_NS)
            _sub(chars, "subtlety", int(rng.integers(1, 6)), ns=IDRI_NS)
            _sub(chars, "obscuration", int(rng.integers(1, 3)), ns=IDRI_NS)
            roi = _sub(read, "roi", ns=IDRI_NS)
            _sub(roi, "imageSOP_UID", uids["cxr_sop"], ns=IDRI_NS)
            edge = _sub(roi, "edgeMap", ns=IDRI_NS)
            zi, _, col = lesion.center
            _sub(edge, "xCoord", int(col * scale[1]), ns=IDRI_NS)
            _sub(edge, "yCoord", int((len(geo.z) - 1 - zi) * scale[0]), ns=IDRI_NS)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, pretty_print=True)


# ----------------------------------------------------------------------------- ground truth


def _truth(patient, made_with):
    """The cohort.json entry of a patient: where it is, how it is stored, what is in it."""
    folder = f"{patient.name}/{patient.folders[0]}/{patient.folders[1]}"
    marks = {str(kind): 0 for kind in range(3)}
    patches = {str(kind): 0 for kind in range(3)}
    lesions = []
    for i, lesion in enumerate(patient.lesions):
        readers = [j for j, read in enumerate(patient.reads) if any(m.lesion == i for m in read)]
        lesions.append({"id": i, "kind": lesion.kind, "kind_name": CLASS_NAMES[lesion.kind],
                        "form": lesion.form, "center": list(lesion.center),
                        "diameter_mm": round(lesion.diameter_mm, 2), "hu": round(lesion.hu, 1),
                        "cavity": lesion.hole is not None, "readers": readers,
                        **{k: v for k, v in lesion.traits.items() if k in ("shape", "pleural")}})
    for read in patient.reads:
        for mark in read:
            kind = {"contour": 0, "point": 1, "nonnodule": 2}[mark.element]
            marks[str(kind)] += 1
            patches[str(kind)] += sum(1 for _, inclusion, _ in mark.rois if inclusion)
    entry = {"state": "complete", "made_with": made_with, "patient_id": patient.name,
             "study_uid": patient.uids["study"], "series_uid": patient.uids["series"],
             "folder": folder, "xml": f"{folder}/{patient.xml_name}",
             "storage": patient.storage["name"], "pixel_spacing": patient.geometry.spacing,
             "slice_thickness": patient.geometry.thickness, "slices": len(patient.geometry.z),
             "z_first": float(patient.geometry.z[0]), "readers": len(patient.reads),
             "lesions": lesions, "marks": marks, "patches_expected": patches, "cxr": None}
    if patient.cxr is not None:
        cxr_folder = f"{patient.name}/{patient.cxr['folders'][0]}/{patient.cxr['folders'][1]}"
        entry["cxr"] = {"study_uid": patient.uids["cxr_study"],
                        "series_uid": patient.uids["cxr_series"], "folder": cxr_folder,
                        "xml": f"{cxr_folder}/{patient.cxr['xml_name']}", "modality": "CR"}
    return entry
