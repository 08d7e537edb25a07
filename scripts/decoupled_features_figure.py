"""Fig. 4: t-SNE of the held-out patients' decoupled features beside their pairwise linear CKA.

input: details (every fold's details.h5 of the figures model); output: png, pdf; params: run, seed
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np

from model.dependence import cka_matrix
from model.figures.decoupled import decoupled_features_figure
from model.fold_outputs import DECOUPLED_LABELS, read_details
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
cohort, run = snakemake.wildcards.cohort, snakemake.params.run
features: dict[str, list[np.ndarray]] = {}
cka = []
for path in snakemake.input.details:
    details, _ = read_details(path, list(DECOUPLED_LABELS))
    fold = {
        label: np.stack([outputs[key] for outputs in details.values()])
        for key, label in DECOUPLED_LABELS.items()
        if all(key in outputs for outputs in details.values())
    }
    if not fold:
        raise ValueError(f"{path}: no decoupled features; {run} does not decouple (figures.model)")
    # each fold's model has its own latent space: CKA per fold, then averaged
    cka.append(cka_matrix(fold))
    for label, values in fold.items():
        features.setdefault(label, []).append(values)
mean_cka = sum(cka) / len(cka)
log.info("linear CKA averaged over %d folds:\n%s", len(cka), mean_cka.round(3).to_string())
decoupled_features_figure(
    {label: np.concatenate(parts) for label, parts in features.items()},
    mean_cka,
    f"{run}, {cohort}: decoupled features of held-out patients (all folds)",
    [snakemake.output.png, snakemake.output.pdf],
    seed=snakemake.params.seed,
)
