"""Pooled out-of-fold Harrell's C of every model of a cohort with a bootstrap CI, paired against the reference.

input: each model's oof_predictions.tsv (honest protocol); output: comparison.tsv; params: evaluation
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.evaluate import EvaluationSettings, compare_models
from workflow.io import write_tsv
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
settings = EvaluationSettings(**snakemake.params.evaluation)
oof = {}
for path in snakemake.input:
    table = pd.read_csv(path, sep="\t", dtype={"patient_id": str})
    oof[str(table["model"].iloc[0])] = table
if settings.reference_model not in oof:
    log.warning(
        "reference model %s is not trained on %s: no paired comparison",
        settings.reference_model,
        snakemake.wildcards.cohort,
    )
comparison = compare_models(oof, settings.reference_model, settings.bootstrap, settings.seed)
comparison.insert(0, "cohort", snakemake.wildcards.cohort)
write_tsv(comparison, snakemake.output[0])
for row in comparison.itertuples():
    log.info(
        "%s: pooled C %.3f [%.3f, %.3f] (%d of %d resamples; on training quantiles %.3f), vs %s %+.3f (p %.3g) %s",
        *(row.model, row.pooled_c, row.pooled_c_low, row.pooled_c_high, row.bootstrap_valid, row.n_bootstrap),
        row.pooled_c_train_quantile,
        *(row.reference_model, row.delta_c, row.delta_p, row.reason),
    )
