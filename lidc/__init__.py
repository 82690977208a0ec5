"""Everything about the LIDC-IDRI data: DICOM series, XML reads, lesions, patches, datasets.

Never imports TensorFlow: the data half runs (and is tested) without it.
"""
