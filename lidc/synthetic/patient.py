"""One patient of the demo cohort, drawn in memory: CT volume, lesions, reads, and how it is stored.

Patients differ the way the collection's do: every third uses TCIA's descriptive folder names
(`01-01-2000-NA-CT CHEST-30178/3000566.000000-NA-03192`), the pixel storage cycles over four
variants (dicom_writer.STORAGE), instance numbers run top-down, bottom-up or from an offset,
reading sites number their nodules and print z positions each their own way, and patients 2, 8,
14, ... also have a chest X-ray study (one CR image with an IdriReadMessage naming the CT series).

Each part (geometry, anatomy, lesions, noise, readers, ...) draws from its own generator seeded
by (seed, k, part), and the lesion plan from its block's (seed, block) (plan.py), so patient k
depends only on (seed, k, size, slices), and a change to one part does not reshuffle the others.

    patient = make_patient(seed=0, k=1, size=128, slices=16)
    patient.hu, patient.lesions, patient.reads
"""
import dataclasses
import uuid

import numpy as np

from lidc.records import NODULE
from lidc.synthetic.anatomy import add_noise, draw_chest
from lidc.synthetic.dicom_writer import STORAGE, cr_dataset, radiograph
from lidc.synthetic.geometry import Geometry
from lidc.synthetic.lesions import place_lesions
from lidc.synthetic.plan import lesion_plan
from lidc.synthetic.readers import Ratings, Scan, draw_reader, read_lesions
from lidc.synthetic.xml_writer import (CxrNoduleRead, CxrRead, ReadHeader, ReadingSession,
                                       ReadMessage, idri_read_message, lidc_read_message)

DEFAULT_SIZE = 384
DEFAULT_SLICES = 64
FIELD_OF_VIEW_MM = 360.0
MESSAGE_UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001"


def patient_id(k):
    """The collection's name of patient k: LIDC-IDRI-0001 for k = 1."""
    return f"LIDC-IDRI-{k:04d}"


@dataclasses.dataclass
class Uids:
    """The patient's UIDs: CT study, series, frame of reference and one SOP per slice (z
    ascending), and the chest X-ray's study, series and image."""
    study: str
    series: str
    frame: str
    sop: list
    cxr_study: str
    cxr_series: str
    cxr_sop: str


@dataclasses.dataclass
class Site:
    """The habits of the patient's scanning and reading site: the XML read's header and
    schema attribute, the series number and the display window in the DICOM header."""
    header: ReadHeader
    message_uid: str
    schema_location: bool
    series_number: int
    window: tuple


@dataclasses.dataclass
class ChestXray:
    """The chest X-ray study: its CR file (a pydicom Dataset), folders and read."""
    dataset: object
    folders: tuple
    xml: bytes
    xml_name: str


@dataclasses.dataclass
class Patient:
    """Everything drawn for one patient, in memory, before it is written.

    `hu` is float32 [z, y, x] with z ascending (noise included); `reads` holds per reader a
    list of lidc.records.Mark; `folders` are the study and series folder names.
    """
    number: int
    name: str
    geometry: Geometry
    hu: np.ndarray
    lesions: list
    readers: list
    reads: list
    uids: Uids
    site: Site
    folders: tuple
    xml_name: str
    storage: object
    instance_numbers: np.ndarray
    cxr: ChestXray = None

    def read_xml(self):
        """The patient's CT read as LIDC XML bytes (a LidcReadMessage)."""
        sessions = [ReadingSession(reader.radiologist_id, marks, reader.z_format)
                    for reader, marks in zip(self.readers, self.reads)]
        return lidc_read_message(ReadMessage(
            uid=self.site.message_uid + ".0", header=self.site.header, sessions=sessions,
            schema_location=self.site.schema_location))


def make_patient(seed, k, size=DEFAULT_SIZE, slices=DEFAULT_SLICES):
    """Draws patient k of the cohort `seed` in memory, without writing anything.

    Args:
      seed: the cohort's seed.
      k: the patient number, 1 for LIDC-IDRI-0001.
      size: rows = columns of a slice (pixel spacing is FIELD_OF_VIEW_MM / size).
      slices: slices in the series.
    Returns:
      a Patient.
    """
    def rng(part):
        return np.random.default_rng([seed, k, part])

    geometry = _geometry(rng(1), size, slices)
    chest = draw_chest(rng(2), geometry)
    plan = lesion_plan(seed, k)
    lesions = place_lesions(rng(3), geometry, chest, plan)
    add_noise(rng(4), chest.hu)
    uids = _uids(seed, k, slices)
    readers, site = _site(rng(5), k, uids, plan.readers)
    xml_name = f"{rng(8).integers(1, 1000):03d}.xml"
    scan = Scan(patient_id(k), uids.series, xml_name, geometry, uids.sop)
    reads = read_lesions(rng(6), lesions, scan, readers, Ratings(plan.rating_start))
    n = len(geometry.z)
    numbers = np.arange(n, 0, -1)  # 1 = highest slice, like most of the collection
    if k % 5 == 0:
        numbers = np.arange(1, n + 1)
    elif k % 5 == 3:
        numbers = numbers + 100 * (1 + k % 7)
    patient = Patient(number=k, name=patient_id(k), geometry=geometry, hu=chest.hu,
                      lesions=lesions, readers=readers, reads=reads, uids=uids, site=site,
                      folders=_folders(rng(7), k, uids, site.series_number), xml_name=xml_name,
                      storage=STORAGE[(k - 1) % len(STORAGE)], instance_numbers=numbers)
    if k % 6 == 2:
        patient.cxr = _chest_xray(rng(9), patient)
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

    return Uids(study=uid("study"), series=uid("series"), frame=uid("frame"),
                sop=[uid("sop", i) for i in range(slices)], cxr_study=uid("cxr-study"),
                cxr_series=uid("cxr-series"), cxr_sop=uid("cxr-sop"))


def _site(rng, k, uids, count):
    """The patient's `count` readers and its site's habits. Returns (readers, Site)."""
    who = rng.choice(["anonymous", "anon", "numbers"], p=[0.35, 0.15, 0.5])
    if who == "numbers":
        ids = [str(int(v)) for v in rng.integers(-2**31, 2**31 - 1, size=count)]
    else:
        ids = [str(who)] * count
    readers = [draw_reader(rng, radiologist_id) for radiologist_id in ids]
    version = str(rng.choice(["1.8.1", "1.8", "1.7"]))
    schema_location = bool(rng.random() < 0.7)
    message_id = int(rng.integers(-2**31, 2**31 - 1))
    date = f"200{rng.integers(6, 9)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    time = f"{rng.integers(7, 19):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
    header = ReadHeader(series_uid=uids.series, study_uid=uids.study, version=version,
                        message_id=message_id, date=date, time=time)
    message_uid = f"{MESSAGE_UID_ROOT}.{1307390000000 + k * 7919}"
    return readers, Site(header=header, message_uid=message_uid, schema_location=schema_location,
                         series_number=int(3000000 + rng.integers(500, 700)),
                         window=[(-600, 1600), (-500, 1500), (40, 400)][int(rng.integers(0, 3))])


def _folders(rng, k, uids, series_number):
    """TCIA's classic UID folders, or (every third patient) its descriptive names."""
    if k % 3 != 0:
        return uids.study, uids.series
    study = f"01-01-2000-NA-CT CHEST-{rng.integers(10000, 99999)}"
    series = f"{series_number}.000000-NA-{rng.integers(0, 99999):05d}"
    return study, series


def _chest_xray(rng, patient):
    """A second study: one CR radiograph (a projection of the phantom) and its CXR read of
    the first two nodules >= 3 mm."""
    image = radiograph(patient.hu, patient.geometry)
    uids, k = patient.uids, patient.number
    if k % 3 == 0:
        folders = (f"01-01-2000-NA-CHEST PA-{rng.integers(10000, 99999)}",
                   f"1.000000-NA-{rng.integers(0, 99999):05d}")
    else:
        folders = (uids.cxr_study, uids.cxr_series)
    nodules = [(i, lesion) for i, lesion in enumerate(patient.lesions) if lesion.kind == NODULE]
    read = CxrRead(uid=patient.site.message_uid + ".1",
                   message_id=int(rng.integers(1000000, 9999999)),
                   ct_series_uid=uids.series, study_uid=uids.cxr_study,
                   series_uid=uids.cxr_series, sop_uid=uids.cxr_sop, sessions=[])
    scale = image.shape[0] / len(patient.geometry.z), image.shape[1] / patient.geometry.size
    for _ in range(int(rng.integers(2, 5))):
        read.sessions.append([])
        for i, lesion in nodules[:2]:
            zi, _, col = lesion.center
            read.sessions[-1].append(CxrNoduleRead(
                nodule_id=f"CA{10 + k % 90:03d}_{124130 + 111 * i}",
                confidence=int(rng.integers(1, 4)), subtlety=int(rng.integers(1, 6)),
                obscuration=int(rng.integers(1, 3)), x=int(col * scale[1]),
                y=int((len(patient.geometry.z) - 1 - zi) * scale[0])))
    return ChestXray(dataset=cr_dataset(patient, image), folders=folders,
                     xml=idri_read_message(read), xml_name=f"{rng.integers(1, 1000):03d}.xml")
