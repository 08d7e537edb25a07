"""Crop and resample one patient's MRI sequences around the tumour; write the ROI and a QC picture.

input: images and mask; output: h5, qc; params: images (sequence -> path), mask, sequences, roi;
config: mri_roi.on_error (not a param: switching it reruns nothing). With exclude, a patient whose
MRI cannot be cropped is written as excluded, with the reason, and the QC picture says why.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.logs import log_to_file
from workflow.mri import MRIError, crop_patient, excluded_picture, qc_picture, roi_settings
from workflow.roi_file import write_excluded_roi, write_patient_roi

log = log_to_file(snakemake.log[0])
patient, sequences = snakemake.wildcards.patient, list(snakemake.params.sequences)
try:
    roi = crop_patient(
        patient, snakemake.params.images, snakemake.params.mask, sequences, roi_settings(snakemake.params.roi)
    )
except MRIError as err:
    if snakemake.config["mri_roi"]["on_error"] == "fail":
        raise
    log.warning("patient %s excluded: %s", patient, err)
    write_excluded_roi(snakemake.output.h5, patient, str(err), sequences)
    excluded_picture(snakemake.output.qc, patient, str(err))
else:
    write_patient_roi(snakemake.output.h5, patient, roi, sequences)
    qc_picture(snakemake.output.qc, patient, roi, sequences)
    log.info(
        "patient %s: %d tumour voxels in the ROI, sequences present %s",
        *(patient, int(roi.mask.sum()), roi.present.tolist()),
    )
