"""Write a demo cohort's MCAT-style genomics table and signatures file.

input: truth, slides; output: table, signatures; params: demo
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.demo.make import make_genomics, read_tables, spec_from_config
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
truth, slides = read_tables(snakemake.input.truth, snakemake.input.slides)
make_genomics(
    spec_from_config(snakemake.params.demo), truth, slides, snakemake.output.table, snakemake.output.signatures
)
log.info("wrote %s and %s", snakemake.output.table, snakemake.output.signatures)
