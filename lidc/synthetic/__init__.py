"""A LIDC-shaped demo cohort: CT series and radiologist reads written as the real collection is.

For each patient the generator draws a 3-D chest phantom in Hounsfield units, places lesions of
the three kinds of ARCHITECTURE.md in its lungs, lets up to four simulated radiologists read it,
and writes everything in the TCIA layout: real DICOM CT files (pydicom) and a real-format LIDC
XML read beside them, plus cohort.json, the ground truth. One module per concern:

- `geometry`: voxel geometry and the partial-volume shapes everything is drawn with;
- `anatomy`: the chest phantom (body, lungs, vessels, heart, bones, table) and scanner noise;
- `plan`: what each patient gets (lesion counts, nodule forms and sizes, readers), balanced
  over blocks of 12 patients so that even the 12-patient demo has the collection's mix;
- `lesions`: nodules >= 3 mm, nodules < 3 mm and non-nodules, placed in the lungs;
- `readers`: the simulated radiologists and their marks (lidc.records.Mark), disagreeing as
  LIDC's did;
- `dicom_writer`: CT slices and the chest radiograph as DICOM files;
- `xml_writer`: the CT read (LidcReadMessage) and the chest X-ray read (IdriReadMessage);
- `patient`: one patient drawn in memory, each part from its own seeded generator;
- `cohort`: write_cohort / read_cohort and the ground truth;
- `calibration`: the real collection's figures, and the same measured on a cohort
  (bench/cohort_stats.py prints them side by side).

Patient k depends only on (seed, k, size, slices): adding patients leaves earlier ones unchanged.

Usage:

    from lidc import synthetic
    summary = synthetic.write_cohort("data/LIDC-IDRI", patients=12, seed=0)
    print(summary["lesions"], summary["marks"])
"""
from lidc.synthetic.cohort import (COHORT_FILE, DEFAULT_PATIENTS, MIN_SIZE, MIN_SLICES, Recipe,
                                   read_cohort, truth_entry, write_cohort, write_patient)
from lidc.synthetic.dicom_writer import (CR_IMAGE_STORAGE, CT_IMAGE_STORAGE, STORAGE, Storage,
                                         stored_values)
from lidc.synthetic.patient import (DEFAULT_SIZE, DEFAULT_SLICES, FIELD_OF_VIEW_MM, Patient,
                                    make_patient, patient_id)
from lidc.synthetic.xml_writer import IDRI_NS, LIDC_NS

__all__ = ["COHORT_FILE", "CR_IMAGE_STORAGE", "CT_IMAGE_STORAGE", "DEFAULT_PATIENTS",
           "DEFAULT_SIZE", "DEFAULT_SLICES", "FIELD_OF_VIEW_MM", "IDRI_NS", "LIDC_NS",
           "MIN_SIZE", "MIN_SLICES", "Patient", "Recipe", "STORAGE", "Storage", "make_patient",
           "patient_id", "read_cohort", "stored_values", "truth_entry", "write_cohort",
           "write_patient"]
