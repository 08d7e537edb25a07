"""Stack a cohort's per-patient MRI ROIs into one file (patients x channels x D x H x W).

input: the per-patient ROI files; output: the cohort file (excluded patients listed apart)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.logs import log_to_file
from workflow.roi_file import gather_rois, read_excluded_rois

log = log_to_file(snakemake.log[0])
n = gather_rois(snakemake.input, snakemake.output[0], {"cohort": snakemake.wildcards.cohort})
log.info("gathered %d patients", n)
for patient, reason in read_excluded_rois(snakemake.output[0]).items():
    log.warning("patient %s excluded: %s", patient, reason)
