"""Score new patients with a model package: risk, survival curve, risk group and gate weights per patient.

input: package, wsi (the new slides' features files, in params.slides order), genomics, mri (each
empty unless the package reads it); output: predictions, bins, details; params: outcomes
(patient_id [, survival_months, censorship]), slides (patient -> slide IDs), device
"""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np
import pandas as pd
import torch

from model.data import load_cohort_data
from model.fold import training_device
from model.fold_outputs import write_details
from model.package import OUTCOMES, check_features, read_package
from model.predict import describe_members, patients_table, score
from workflow.features import features_file as ff
from workflow.io import write_tsv
from workflow.logs import log_to_file

gc.freeze()
log = log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
package = read_package(snakemake.input.package)
log.info("%s: %s", package.describe(), describe_members(package))
records = pd.DataFrame(snakemake.params.outcomes).set_index("patient_id")
known = all(c in records.columns for c in OUTCOMES)
# the networks' tables carry the outcome columns; unknown outcomes pass through as NaN / -1, then are dropped
outcomes = records if known else records.assign(survival_months=np.nan, censorship=-1)
features = iter(snakemake.input.wsi)
slides = {patient: [(slide, next(features)) for slide in ids] for patient, ids in snakemake.params.slides.items()}
for files in slides.values():
    for _, path in files:
        check_features(package.manifest, path, ff.read_features_attrs(path))
single = lambda files: files[0] if files else None  # noqa: E731
data = load_cohort_data(
    outcomes, slides=slides or None, genomics=single(snakemake.input.genomics), mri=single(snakemake.input.mri)
)
with training_device(snakemake.params.device) as device:
    scores = score(package, data, device)
table = patients_table(scores, data, records if known else None)
write_tsv(table, snakemake.output.predictions)
grid = package.grid
write_tsv(
    pd.DataFrame({"bin": range(len(grid) - 1), "start_months": grid[:-1], "end_months": grid[1:]}),
    snakemake.output.bins,
)
write_details(snakemake.output.details, scores.details, data)
for row in table.itertuples():
    log.info(
        "%s: risk %.4g, %s%s",
        row.patient_id,
        row.risk,
        row.risk_group or "left out",
        f" ({row.reason})" * bool(row.reason),
    )
log.info("risk cut-off %.4g: %s", package.cutoff, package.manifest["risk_cutoff"]["rule"])
