"""DICOM files written as the collection's scanners wrote them (pydicom, explicit VR little endian).

A CT series is one file per slice, named `1-NNN.dcm` as TCIA's downloader names them today
(`1-001.dcm` the highest slice, so file order is not z order), with a header modelled on
LIDC-IDRI-0003's. Patients differ in how their pixels are stored (STORAGE): signed or unsigned,
intercept -1024 or 0, slope 1 or 0.5, and a padding value outside the scanner's circular field
of view. A chest radiograph (CR) is a single 12-bit image.

    write_ct_series(folder, patient)           # patient: a lidc.synthetic.patient.Patient
    cr_dataset(patient, radiograph(patient.hu, patient.geometry)).save_as(path)
"""
import dataclasses

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
MANUFACTURERS = ("GE MEDICAL SYSTEMS", "SIEMENS", "TOSHIBA", "Philips")


@dataclasses.dataclass(frozen=True)
class Storage:
    """How a scanner stored pixels: HU = stored * slope + intercept; `padding` (or None) is the
    stored value outside the field of view (PixelPaddingValue)."""
    name: str
    dtype: str
    slope: float
    intercept: float
    padding: int = None


# How the collection's scanners stored pixels; patient k uses STORAGE[(k - 1) % 4].
STORAGE = (
    Storage("int16, intercept -1024, padding -2000", "int16", 1.0, -1024.0, -2000),
    Storage("uint16, intercept -1024", "uint16", 1.0, -1024.0),
    Storage("int16, intercept 0", "int16", 1.0, 0.0),
    Storage("int16, slope 0.5, intercept -1024", "int16", 0.5, -1024.0),
)


def stored_values(hu, storage):
    """HU -> the stored pixel values of a Storage (HU = stored * slope + intercept)."""
    hu = np.clip(hu, -1024.0, 3071.0)
    return np.rint((hu - storage.intercept) / storage.slope).astype(storage.dtype)


def write_ct_series(folder, patient):
    """Writes the patient's CT slices into `folder`; returns how many files it wrote."""
    geometry, storage = patient.geometry, patient.storage
    header = _ct_header(patient)
    pixels = stored_values(patient.hu, storage)
    outside = _outside_field_of_view(geometry.size)
    fill = storage.padding if storage.padding is not None else \
        stored_values(np.array(-1024.0), storage)
    n = len(geometry.z)
    for file_no in range(1, n + 1):
        zi = n - file_no  # 1-001.dcm is the highest slice, as TCIA's downloader names them
        plane = pixels[zi]
        plane[outside] = fill
        sop = patient.uids.sop[zi]
        header.file_meta.MediaStorageSOPInstanceUID = sop
        header.SOPInstanceUID = sop
        header.InstanceNumber = int(patient.instance_numbers[zi])
        header.ImagePositionPatient = [f"{geometry.origin[0]:.6f}", f"{geometry.origin[1]:.6f}",
                                       f"{geometry.z[zi]:.6f}"]
        header.SliceLocation = f"{geometry.z[zi]:.6f}"
        header.PixelData = np.ascontiguousarray(plane).astype(
            plane.dtype.newbyteorder("<")).tobytes()
        header.save_as(folder / f"1-{file_no:03d}.dcm", enforce_file_format=True)
    return n


def _outside_field_of_view(size):
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


def _common_header(patient, modality, sop_class, study_series):
    """A Dataset with what CT and CR files share: patient, study, series, image basics."""
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.SOPClassUID = sop_class
    dataset.StudyDate = dataset.SeriesDate = dataset.AcquisitionDate = "20000101"
    dataset.ContentDate = "20000101"
    dataset.StudyTime = dataset.AcquisitionTime = dataset.ContentTime = ""
    dataset.AccessionNumber = ""
    dataset.Modality = modality
    dataset.ReferringPhysicianName = ""
    dataset.PatientName = ""
    dataset.PatientID = patient.name
    dataset.PatientBirthDate = ""
    dataset.PatientSex = ""
    dataset.PatientIdentityRemoved = "YES"
    dataset.BodyPartExamined = "CHEST"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_series
    dataset.StudyID = ""
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    return dataset


def _ct_header(patient):
    """The header every slice of the series shares, modelled on LIDC-IDRI-0003's."""
    geometry, storage, uids = patient.geometry, patient.storage, patient.uids
    header = _common_header(patient, "CT", CT_IMAGE_STORAGE, (uids.study, uids.series))
    header.file_meta = _file_meta(CT_IMAGE_STORAGE, uids.sop[0])
    header.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    header.Manufacturer = MANUFACTURERS[patient.number % len(MANUFACTURERS)]
    header.SliceThickness = f"{geometry.thickness:.6f}"
    header.KVP = "120"
    header.ConvolutionKernel = "STANDARD"
    header.PatientPosition = "FFS"
    header.SeriesNumber = patient.site.series_number
    header.ImageOrientationPatient = ["1.000000", "0.000000", "0.000000",
                                      "0.000000", "1.000000", "0.000000"]
    header.FrameOfReferenceUID = uids.frame
    header.PositionReferenceIndicator = "SN"
    header.Rows = header.Columns = geometry.size
    header.PixelSpacing = [f"{geometry.spacing:.6f}", f"{geometry.spacing:.6f}"]
    signed = storage.dtype == "int16"
    header.BitsStored = 16
    header.HighBit = 15
    header.PixelRepresentation = 1 if signed else 0
    if storage.padding is not None:
        header.add_new(0x00280120, "SS" if signed else "US", storage.padding)
    header.WindowCenter, header.WindowWidth = (str(v) for v in patient.site.window)
    header.RescaleIntercept = f"{storage.intercept:g}"
    header.RescaleSlope = f"{storage.slope:g}"
    header.RescaleType = "HU"
    return header


def radiograph(hu, geometry):
    """A chest radiograph of the phantom: attenuation summed front to back, head up, 12-bit,
    bone and lesions bright."""
    mu = np.clip(hu + 1000.0, 0.0, None).sum(axis=1) * geometry.spacing / 1000.0  # [z, x]
    image = 4095.0 * (1.0 - np.exp(-mu / 60.0))
    size = 2 * geometry.size
    return cv2.resize(image[::-1].astype(np.float32), (size, size)).clip(0, 4095).astype(np.uint16)


def cr_dataset(patient, image):
    """The radiograph `image` (uint16) as a CR file of the patient's chest X-ray study."""
    uids = patient.uids
    dataset = _common_header(patient, "CR", CR_IMAGE_STORAGE, (uids.cxr_study, uids.cxr_series))
    dataset.file_meta = _file_meta(CR_IMAGE_STORAGE, uids.cxr_sop)
    dataset.SOPInstanceUID = uids.cxr_sop
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = 1
    dataset.ViewPosition = "PA"
    dataset.Rows, dataset.Columns = image.shape
    dataset.ImagerPixelSpacing = ["0.200000", "0.200000"]
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = image.astype("<u2").tobytes()
    return dataset
