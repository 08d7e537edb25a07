"""Convert one slide's existing CLAM features (h5_files or pt_files) into this workflow's format.

input: coords, clam; output: the features HDF5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.features.clam import import_clam
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
attrs = import_clam(
    snakemake.wildcards.slide,
    snakemake.input.clam,
    snakemake.input.coords,
    snakemake.output[0],
    snakemake.wildcards.encoder,
)
log.info("imported %d patches from %s", attrs["n_patches"], snakemake.input.clam)
