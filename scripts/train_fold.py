"""Train one variant of a model on one cross-validation fold and write its weights, predictions and logs.

Also the refit of a model package (``package: mode: refit``): every patient trains, none is held
out, with the folds' settings (params.fold is then the number of folds: a seed no fold uses).

input: wsi, genomics, mri (each empty unless the model uses it), split (not for a refit); output:
the keys of model.fold_outputs.FILES; params: outcomes, slides (patient -> slide IDs, the order of
input.wsi), training (model.config.TrainingConfig as a dict), variant (model.variants.Variant as a
dict), fold, refit
"""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd
import torch

from model.config import training_config
from model.data import load_cohort_data
from model.fold import train_model, training_device
from model.fold_outputs import FILES, write_fold_outputs
from model.splits import read_mcat_split
from model.variants import Variant
from workflow.logs import log_to_file

# Everything imported lives until exit: frozen, the garbage collector never walks it, which
# saves about 1 s of interpreter exit per job (measured with torch and timm loaded).
gc.freeze()
log = log_to_file(snakemake.log[0])
training = training_config(snakemake.params.training)
variant = Variant(**snakemake.params.variant)
torch.set_num_threads(snakemake.threads)
outcomes = pd.DataFrame(snakemake.params.outcomes).set_index("patient_id")
features = iter(snakemake.input.wsi)  # the features files of params.slides, in its order
slides = {patient: [(slide, next(features)) for slide in ids] for patient, ids in snakemake.params.slides.items()}
single = lambda files: files[0] if files else None  # noqa: E731
data = load_cohort_data(
    outcomes, slides=slides or None, genomics=single(snakemake.input.genomics), mri=single(snakemake.input.mri)
)
fold = int(snakemake.params.fold)
train, held_out = (list(outcomes.index), []) if snakemake.params.refit else read_mcat_split(snakemake.input.split)
with training_device(training.device) as device:
    log.info(
        "%s (%s), fold %s on %s, reading %s",
        *(variant.name, variant.model, "refit" if snakemake.params.refit else fold, device, data.modalities),
    )
    result, meta = train_model(data, variant, fold, train, held_out, training, device)
for row in result.log.itertuples():
    log.info("epoch %d: train C %.3f, held-out C %.3f", row.epoch, row.train_c_index, row.held_out_c_index)
write_fold_outputs({key: snakemake.output[key] for key in FILES}, result, meta, data)
log.info(
    "selected epoch(s) %s; %.1f s, peak RSS %.0f MB", meta["selected_epochs"], meta["seconds"], meta["peak_rss_mb"]
)
