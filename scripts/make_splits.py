"""Write a cohort's cross-validation splits in MCAT's splits_k.csv format (given ones are checked).

params: outcomes, splits_dir, seed, n_bins; output: one file per fold
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.splits import cohort_splits, write_mcat_split
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
outcomes = pd.DataFrame(snakemake.params.outcomes).set_index("patient_id")
splits = cohort_splits(
    outcomes, len(snakemake.output), snakemake.params.seed, snakemake.params.n_bins, snakemake.params.splits_dir
)
for path, (train, held_out) in zip(snakemake.output, splits, strict=True):
    write_mcat_split(path, train, held_out)
    events = int((outcomes.loc[held_out, "censorship"] == 0).sum())
    log.info("%s: %d training, %d held out (%d events)", path, len(train), len(held_out), events)
