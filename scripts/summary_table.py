"""The Table III-style summary: C-index mean ± std per model and cohort, TSV and Markdown.

input: every cohort's per-model cindex.tsv; output: tsv, md; params: descriptions
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.evaluate import markdown_table, summarise
from workflow.io import atomic_path, write_tsv
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
cindex = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input], ignore_index=True)
summary = summarise(cindex)
folds = cindex.pivot_table(index=["cohort", "model", "protocol"], columns="fold", values="c_index", sort=False)
folds.columns = [f"fold_{k}" for k in folds.columns]
table = summary.merge(folds.reset_index(), on=["cohort", "model", "protocol"])
write_tsv(table, snakemake.output.tsv)
with atomic_path(snakemake.output.md) as tmp:
    tmp.write_text(markdown_table(summary, snakemake.params.descriptions) + "\n")
log.info("%d rows over %d cohorts", len(table), table["cohort"].nunique())
