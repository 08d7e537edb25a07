"""Collect every slide's tiling attributes of a cohort into tiling_summary.tsv.

input: the coordinates files; output: the summary table
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.logs import log_to_file
from workflow.tiling.summary import write_summary

log = log_to_file(snakemake.log[0])
table = write_summary(snakemake.input, snakemake.output[0])
for row in table[table["status"] != "ok"].itertuples():
    log.warning("slide %s excluded: %s", row.slide_id, row.reason)
log.info("%d slides, %d patches", len(table), int(table["patches"].sum()))
