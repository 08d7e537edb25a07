"""Every figure of one run: KM curves of both risk splits (Fig. 6), risk-group box plots (Fig. 7), training curves.

input: predictions, predictions_train, log (one file per fold each), oof; output: the keys of
MODEL_FIGURES in rules/common.smk, risk_test
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.evaluate import SPLITS, km_curves, median_split, training_median_split
from model.figures.survival import km_figure, risk_group_boxplot
from model.figures.training import cindex_curves, fold_training_curves
from model.fold_outputs import read_log, read_predictions
from workflow.io import write_tsv
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
cohort, run = snakemake.wildcards.cohort, snakemake.wildcards.variant
out = snakemake.output
honest = [read_predictions(p) for p in snakemake.input.predictions]
train = [read_predictions(p) for p in snakemake.input.predictions_train]
splits = {
    "km": training_median_split(honest, train),
    "km_paper": median_split(read_predictions(snakemake.input.oof)),
}
for key, km in splits.items():
    title = f"{run}, {cohort}: pooled out-of-fold risk\n{SPLITS[km.split]}"
    km_figure(km_curves(km), title, km.p_value, [out[f"{key}_png"], out[f"{key}_pdf"]])
groups = splits["km"].table
test = risk_group_boxplot(
    groups["risk"].to_numpy(),
    list(groups["group"]),
    f"{run}, {cohort}: predicted risk by risk group\n{SPLITS['training_median']}",
    [out.risk_groups_png, out.risk_groups_pdf],
)
write_tsv(pd.DataFrame([{"cohort": cohort, "model": run, "split": "training_median"} | test]), out.risk_test)
log.info("risk groups: Welch t %.3g, p %.3g", test["t"], test["p"])
logs = [read_log(p) for p in snakemake.input.log]
cindex_curves(logs, f"{run}, {cohort}", [out.cindex_curves_png, out.cindex_curves_pdf])
fold_training_curves(logs, f"{run}, {cohort}: per fold", [out.training_curves_png, out.training_curves_pdf])
