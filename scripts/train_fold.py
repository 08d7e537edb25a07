"""Train one model on one cross-validation fold and write its weights, predictions and logs.

input: wsi, genomics, mri (each empty unless the model uses it), split; output: weights,
predictions, predictions_train, best_epoch, details, epochs, meta; params: outcomes, slides, training
"""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd
import torch

from model.data import load_cohort_data
from model.fold import run_fold, training_device, write_fold_outputs
from model.splits import read_mcat_split
from workflow.logs import log_to_file

# Everything imported lives until exit: frozen, the garbage collector never walks it, which
# saves about 1 s of interpreter exit per job (measured with torch and timm loaded).
gc.freeze()
log = log_to_file(snakemake.log[0])
cfg = snakemake.params.training
torch.set_num_threads(snakemake.threads)
outcomes = pd.DataFrame(snakemake.params.outcomes).set_index("patient_id")
single = lambda files: files[0] if files else None  # noqa: E731
data = load_cohort_data(
    outcomes,
    slides=snakemake.params.slides or None,
    genomics=single(snakemake.input.genomics),
    mri=single(snakemake.input.mri),
)
train, held_out = read_mcat_split(snakemake.input.split)
with training_device(cfg["device"]) as device:
    log.info(
        "%s, fold %s on %s, reading %s", snakemake.wildcards.model, snakemake.wildcards.fold, device, data.modalities
    )
    result, meta = run_fold(
        data, snakemake.wildcards.model, int(snakemake.wildcards.fold), train, held_out, cfg, device
    )
for row in result.log.itertuples():
    log.info("epoch %d: train C %.3f, held-out C %.3f", row.epoch, row.train_c_index, row.held_out_c_index)
outputs = {
    "weights": snakemake.output.weights,
    "predictions": snakemake.output.predictions,
    "predictions_train": snakemake.output.predictions_train,
    "best_epoch": snakemake.output.best_epoch,
    "details": snakemake.output.details,
    "log": snakemake.output.epochs,
    "meta": snakemake.output.meta,
}
write_fold_outputs(outputs, result, meta, data)
log.info(
    "selected epoch(s) %s; %.1f s, peak RSS %.0f MB", meta["selected_epochs"], meta["seconds"], meta["peak_rss_mb"]
)
