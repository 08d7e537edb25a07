"""One new slide's attention heatmap: every per-patch score of the package's model over the thumbnail, top-k patches magnified.

Scores are the members' averages (model.predict): the model's patch attention, and for DeReF
each decoupled feature's attribution to the patches, with the attribution over the gene families
or MRI sequences beside them.

input: details, predictions, coords, slide, package; output: png, pdf; params: top_k, name (the new patients' folder)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np
import pandas as pd

from model.figures.attention import PatientAttention, attention_figure, top_k
from model.fold_outputs import DECOUPLED_LABELS, ON_SLIDE, attention_keys, read_details, read_predictions
from model.package import read_manifest
from workflow.logs import log_to_file
from workflow.slide_images import read_patch_images, read_thumbnail
from workflow.tiling.coords import read_coords

log = log_to_file(snakemake.log[0])
slide, k = snakemake.wildcards.slide, snakemake.params.top_k
manifest = read_manifest(snakemake.input.package)
run = f"{manifest['run']} ({manifest['cohort']} package)"
details, second_names = read_details(snakemake.input.details)
owner = [p for p, d in details.items() if "slide_id" in d and slide in set(d["slide_id"])]
if not owner:
    raise ValueError(
        f"slide {slide}: no patch scores in {snakemake.input.details}; its patient was left out (see the predictions' reason column)"
    )
patient = owner[0]
outputs = details[patient]
rows = np.flatnonzero(outputs["slide_id"] == slide)
# the model's patch attention, and the decoupled features that read patches (as Fig. 8)
keys = [k for k in attention_keys(outputs) if k.removeprefix("patch_attribution_") in ("attention", *ON_SLIDE)]
if not keys:
    raise ValueError(f"{run} gives no per-patch attention: slide {slide} has no heatmap to draw")


def label(key: str) -> str:
    name = key.removeprefix("patch_attribution_")
    return "attention" if key == "attention" else DECOUPLED_LABELS.get(name, name)


coords = read_coords(snakemake.input.coords)
xy = outputs["coords"][rows]
thumbnail, scale = read_thumbnail(snakemake.input.slide, slide)
scores = {label(key): outputs[key][rows] for key in keys}
top = {
    name: read_patch_images(snakemake.input.slide, slide, xy[top_k(s, k)], coords.geometry)
    for name, s in scores.items()
}
shares = {
    DECOUPLED_LABELS.get(key.removeprefix("second_attribution_"), key): outputs[key]
    for key in outputs
    if key.startswith("second_attribution_")
}
second = pd.DataFrame(shares, index=second_names).T if shares else pd.DataFrame()
prediction = read_predictions(snakemake.input.predictions).set_index("patient_id").loc[patient]
log.info(
    "%s, slide %s: %d of the patient's %d patches; panels %s",
    patient,
    slide,
    len(rows),
    len(outputs["slide_id"]),
    list(scores),
)
attention_figure(
    [
        PatientAttention(
            patient_id=patient,
            cohort=snakemake.params.name,
            risk=float(prediction["risk"]),
            group=str(prediction["risk_group"]),
            slide_id=slide,
            thumbnail=thumbnail,
            scale=scale,
            xy=xy,
            size0=coords.geometry.size_level0,
            patch_scores=scores,
            top_patches=top,
            second_scores=second,
        )
    ],
    f"{run}: new slide {slide}, top {k} patches per map",
    [snakemake.output.png, snakemake.output.pdf],
)
