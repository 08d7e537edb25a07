"""Write a demo cohort's hidden truth (one row per patient) and its slide table.

output: truth, slides; params: demo (the cohort's demo: config block)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.demo.make import spec_from_config, write_tables
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
spec = spec_from_config(snakemake.params.demo)
log.info("demo cohort %s: %s", snakemake.wildcards.cohort, spec)
write_tables(spec, snakemake.output.truth, snakemake.output.slides)
