"""Render one demo slide and write it as an Aperio SVS.

input: truth, slides; output: the .svs; params: demo
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.demo.make import make_slide, read_tables, spec_from_config
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
truth, slides = read_tables(snakemake.input.truth, snakemake.input.slides)
make_slide(spec_from_config(snakemake.params.demo), truth, slides, snakemake.wildcards.slide, snakemake.output[0])
log.info("wrote %s", snakemake.output[0])
