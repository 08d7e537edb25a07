"""Crop and resample one patient's MRI sequences around the tumour; write the ROI and a QC picture.

input: images and mask; output: h5, qc; params: images (sequence -> path), mask, sequences, roi
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.logs import log_to_file
from workflow.mri import crop_patient, qc_picture, roi_settings
from workflow.roi_file import write_patient_roi

log = log_to_file(snakemake.log[0])
patient, sequences = snakemake.wildcards.patient, list(snakemake.params.sequences)
roi = crop_patient(
    patient, snakemake.params.images, snakemake.params.mask, sequences, roi_settings(snakemake.params.roi)
)
write_patient_roi(snakemake.output.h5, patient, roi, sequences)
qc_picture(snakemake.output.qc, patient, roi, sequences)
log.info(
    "patient %s: %d tumour voxels in the ROI, sequences present %s", patient, int(roi.mask.sum()), roi.present.tolist()
)
