"""Open every slide of a cohort and tabulate vendor, pyramid and resolution, before any tiling.

input: the slide files; output: inventory.tsv; params: slides (records of slide_id, path, mpp),
mpp_from_objective_power
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.inventory import write_inventory
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
table = write_inventory(snakemake.params.slides, snakemake.output[0], snakemake.params.mpp_from_objective_power)
log.info("%d slides, %d with a problem", len(table), int((table["problem"] != "").sum()))
