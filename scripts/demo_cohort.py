"""Write every embedded demo cohort: tables, sheets, slides, genomics and MRI, from each cohort's seed.

output: every demo file (where the cohorts' sheets point); params: demos (cohort -> demo: block
with the cohort's modalities); threads: processes that render slides and MRI volumes
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.demo.design import DemoSpec
from workflow.demo.make import write_cohorts
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
specs = {name: DemoSpec(**demo) for name, demo in snakemake.params.demos.items()}
for name, spec in specs.items():
    log.info("demo cohort %s: %s", name, spec)
write_cohorts(specs, workers=snakemake.threads)
