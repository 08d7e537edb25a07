"""The summary: the metric panel per protocol, model and cohort, TSV and Markdown.

input: metrics (every cohort's per-model metrics.tsv), comparisons (every cohort's comparison.tsv);
output: tsv, md; params: descriptions
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.evaluate import markdown_table, panel, summarise
from workflow.io import atomic_path, write_tsv
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
read = lambda paths: pd.concat([pd.read_csv(p, sep="\t") for p in paths], ignore_index=True)  # noqa: E731
table = panel(summarise(read(snakemake.input.metrics)), read(snakemake.input.comparisons))
write_tsv(table, snakemake.output.tsv)
with atomic_path(snakemake.output.md) as tmp:
    tmp.write_text(markdown_table(table, snakemake.params.descriptions) + "\n")
log.info("%d rows over %d cohorts", len(table), table["cohort"].nunique())
