"""C-index per fold and protocol, pooled out-of-fold KM curves and C-index curves of one model.

input: honest, best_epoch, logs (one file per fold each); output: cindex, oof, km_stats,
km_png, km_pdf, curves_png, curves_pdf
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.evaluate import fold_cindex, km_curves, median_split, summarise
from workflow.io import write_tsv
from workflow.logs import log_to_file
from workflow.plots import cindex_curves, km_figure

log = log_to_file(snakemake.log[0])
cohort, model = snakemake.wildcards.cohort, snakemake.wildcards.model
read = lambda paths: [pd.read_csv(p, sep="\t", dtype={"patient_id": str}) for p in paths]  # noqa: E731
honest = read(snakemake.input.honest)
cindex = fold_cindex({"honest": honest, "best_epoch": read(snakemake.input.best_epoch)})
write_tsv(cindex.assign(cohort=cohort, model=model), snakemake.output.cindex)
for row in summarise(cindex).itertuples():
    log.info("%s: C-index %.3f ± %.3f over %d folds", row.protocol, row.mean, row.std, row.n_folds)
oof = pd.concat(honest, ignore_index=True)
write_tsv(oof, snakemake.output.oof)
km = median_split(oof)
stats = {"cohort": cohort, "model": model, "n_patients": len(km.table), "threshold": km.threshold}
stats |= {"logrank_statistic": km.statistic, "logrank_p": km.p_value, "pooled_c_index": km.c_index}
write_tsv(pd.DataFrame([stats]), snakemake.output.km_stats)
title = f"{model}, {cohort}: pooled out-of-fold risk, median split"
km_figure(km_curves(km), title, km.p_value, [snakemake.output.km_png, snakemake.output.km_pdf])
cindex_curves(
    read(snakemake.input.logs), f"{model}, {cohort}", [snakemake.output.curves_png, snakemake.output.curves_pdf]
)
