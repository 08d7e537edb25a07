"""Fig. 8: what each decoupled feature attends to, over the slide and over the second modality's inputs.

For the chosen held-out patients (params.patients, else the highest- and lowest-risk one on the
leak-free training-quantile scale), the attribution of each decoupled feature to every patch
(details.h5, from the patient's own fold model) as a heatmap over the slide thumbnail, its top-k
patches magnified, and the attribution over the gene families or MRI sequences.

input: details (every fold), oof, coords (every slide), slides; output: png, pdf;
params: run, slides (slide_id, path records), patients, top_k
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np
import pandas as pd

from model.figures.attention import PatientAttention, attention_figure, top_k
from model.fold_outputs import DECOUPLED_LABELS, ON_SLIDE, read_details, read_predictions
from workflow.logs import log_to_file
from workflow.slide_images import read_patch_images, read_thumbnail
from workflow.tiling.coords import read_coords

log = log_to_file(snakemake.log[0])
cohort, run, k = snakemake.wildcards.cohort, snakemake.params.run, snakemake.params.top_k
oof = read_predictions(snakemake.input.oof).set_index("patient_id")
scale_column = "risk_train_quantile" if "risk_train_quantile" in oof else "risk"
chosen = snakemake.params.patients
if chosen:
    unknown = [p for p in chosen if p not in oof.index]
    if unknown:
        raise ValueError(
            f"figures.attention_patients.{cohort}: {unknown} are not held-out patients of {run}; "
            f"choose from {sorted(oof.index)[:10]}..."
        )
    labels = dict.fromkeys(chosen, "chosen")
else:
    order = oof[scale_column].sort_values(kind="stable")
    labels = {order.index[-1]: "highest risk", order.index[0]: "lowest risk"}
slide_paths = {row["slide_id"]: row["path"] for row in snakemake.params.slides}
coords_files = {Path(p).stem: p for p in snakemake.input.coords}
details_files = dict(enumerate(snakemake.input.details))  # fold k -> its details file

patients = []
for patient, group in labels.items():
    fold = int(oof.loc[patient, "fold"])
    details, second_names = read_details(details_files[fold])
    outputs = details[patient]
    slides = pd.Series(outputs["slide_id"])
    slide = slides.value_counts().index[0]  # the patient's slide with the most patches
    rows = np.flatnonzero(slides.to_numpy() == slide)
    xy = outputs["coords"][rows]
    coords = read_coords(coords_files[slide])
    thumbnail, scale = read_thumbnail(slide_paths[slide], slide)
    patch_scores, top = {}, {}
    for key in ON_SLIDE:
        scores = outputs[f"patch_attribution_{key}"][rows]
        patch_scores[DECOUPLED_LABELS[key]] = scores
        top[DECOUPLED_LABELS[key]] = read_patch_images(slide_paths[slide], slide, xy[top_k(scores, k)], coords.geometry)
    second = pd.DataFrame(
        {DECOUPLED_LABELS[key]: outputs[f"second_attribution_{key}"] for key in DECOUPLED_LABELS},
        index=second_names,
    ).T
    log.info(
        "%s (%s, fold %d): slide %s, %d of %d patches; second-modality attribution:\n%s",
        *(patient, group, fold, slide, len(rows), len(slides)),
        second.round(3).to_string(),
    )
    patients.append(
        PatientAttention(
            patient_id=patient,
            cohort=cohort,
            risk=float(oof.loc[patient, scale_column]),
            group=group,
            slide_id=slide,
            thumbnail=thumbnail,
            scale=scale,
            xy=xy,
            size0=coords.geometry.size_level0,
            patch_scores=patch_scores,
            top_patches=top,
            second_scores=second,
        )
    )
attention_figure(
    patients,
    f"{run}, {cohort}: attribution of each decoupled feature (held-out patients, their fold's model)",
    [snakemake.output.png, snakemake.output.pdf],
)
