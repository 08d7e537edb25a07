"""Write CLAM's pt_files/<slide>.pt (features only) from a features HDF5.

input: the features HDF5; output: the .pt file
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.features.clam import write_clam_pt
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
write_clam_pt(snakemake.input[0], snakemake.output[0])
log.info("wrote %s", snakemake.output[0])
