"""Collect every slide's feature-extraction attributes of a cohort into features_summary.tsv.

input: the features files; output: the summary table
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.features.summary import write_summary
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
table = write_summary(snakemake.input, snakemake.output[0])
for row in table[table["status"] != "ok"].itertuples():
    log.warning("slide %s has no features: %s", row.slide_id, row.reason)
if table["weights_source"].str.startswith("random").any():
    log.warning("features come from RANDOM weights: they exercise the pipeline but carry no image information")
