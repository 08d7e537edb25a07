"""The metric panel per fold and protocol and the risk groups' tests of one run (its figures: plot_model).

input: predictions, best_epoch, predictions_train, meta, log (one file per fold each, see
model.fold_outputs); output: cindex, oof, metrics, km_stats; params: evaluation
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np
import pandas as pd

from model.evaluate import (
    PER_FOLD_ONLY,
    SPLITS,
    EvaluationSettings,
    Fold,
    evaluation_times,
    fold_cindex,
    km_statistics,
    median_split,
    metric_table,
    summarise,
    training_median_split,
    training_quantiles,
    truncation_time,
)
from model.fold_outputs import read_bin_edges, read_excluded_held_out, read_predictions
from model.metrics import NotComputable
from workflow.io import write_tsv
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
cohort, model = snakemake.wildcards.cohort, snakemake.wildcards.variant
settings = EvaluationSettings(**snakemake.params.evaluation)
honest = [read_predictions(p) for p in snakemake.input.predictions]
best_epoch = [read_predictions(p) for p in snakemake.input.best_epoch]
train = [read_predictions(p) for p in snakemake.input.predictions_train]
edges = [read_bin_edges(p) for p in snakemake.input.meta]
left_out = [read_excluded_held_out(p) for p in snakemake.input.meta]
for fold, patients in enumerate(left_out):
    if patients:
        log.warning("fold %d: held-out patient(s) %s left out: no usable slide or MRI", fold, ", ".join(patients))

cindex = fold_cindex({"honest": honest, "best_epoch": best_epoch})
write_tsv(cindex.assign(cohort=cohort, model=model), snakemake.output.cindex)
oof = training_quantiles(honest, train)
write_tsv(oof, snakemake.output.oof)

try:
    horizons = evaluation_times(settings, oof["survival_months"], oof["censorship"])
except NotComputable as reason:
    log.warning("no AUC horizons: %s", reason)
    horizons = np.array([])
tau = truncation_time(settings, horizons)
log.info("AUC horizons %s months, Uno's C truncated at %.4g months", np.round(horizons, 2).tolist(), tau)
folds = {
    protocol: [Fold(h, t, e) for h, t, e in zip(tables, train, edges, strict=True)]
    for protocol, tables in (("honest", honest), ("best_epoch", best_epoch))
}
metrics = metric_table(folds, horizons, tau, settings.calibration_bins, left_out)
metrics.insert(0, "model", model)
metrics.insert(0, "cohort", cohort)
write_tsv(metrics, snakemake.output.metrics)
for row in metrics.itertuples():
    reason = row.reason.replace(PER_FOLD_ONLY, "").strip("; ")
    if reason:
        log.warning("%s, fold %s: %s", row.protocol, row.fold, reason)
for row in summarise(metrics).itertuples():
    log.info(
        "%s: Harrell's C %.3f ± %.3f (%s folds), Uno's C %.3f, iAUC %.3f, IBS %.3f, pooled D-calibration p %.2g",
        *(row.protocol, row.harrell_c_mean, row.harrell_c_std, row.harrell_c_folds),
        *(row.uno_c_mean, row.iauc_mean, row.ibs_mean, row.dcal_p),
    )

splits = {"training_median": training_median_split(honest, train), "paper": median_split(oof)}
stats = pd.DataFrame([{"cohort": cohort, "model": model} | km_statistics(km) for km in splits.values()])
write_tsv(stats, snakemake.output.km_stats)
for split, km in splits.items():
    log.info("%s: log-rank p %.3g (%s)", SPLITS[split], km.p_value, km.reason or "computed")
