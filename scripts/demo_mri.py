"""Write one demo patient's five MRI sequences and tumour mask as NIfTI.

input: truth; output: the six .nii.gz files (one folder); params: demo
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from workflow.demo.make import make_mri, spec_from_config
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
truth = pd.read_csv(snakemake.input.truth, sep="\t", dtype={"patient_id": str})
out_dir = Path(snakemake.output[0]).parent
make_mri(spec_from_config(snakemake.params.demo), truth, snakemake.wildcards.patient, out_dir)
log.info("wrote %s", out_dir)
