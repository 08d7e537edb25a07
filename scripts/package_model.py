"""Package one run trained on one cohort for scoring new patients (model.package).

input: weights, scaling, meta, predictions, predictions_train (one per member: the folds, or the
refit), wsi (the features files the run trained on), genomics, mri (each empty unless the run
reads it); output: the package folder; params: cohort outcomes, mode, network, tiling, features,
mri_roi (the settings that made the inputs), training, code (hash of the training code)
"""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.bins import time_bin_edges
from model.package import PackageError, assemble_manifest, cohort_predictions, write_package
from workflow.features import features_file as ff
from workflow.genomics import read_pathways
from workflow.logs import log_to_file
from workflow.roi_file import read_sequences
from workflow.tiling.coords import EXCLUDED

log = log_to_file(snakemake.log[0])
cohort, run = snakemake.wildcards.cohort, snakemake.wildcards.variant
root = Path(snakemake.scriptdir).parent


def code_version() -> str:
    """git describe of the workflow's checkout, or why there is none."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (the workflow is not a git checkout)"


def encoder_of(paths: list[str]) -> dict | None:
    """The one encoder and weights the run's features came from (refused if the files disagree)."""
    if not paths:
        return None
    found = {}
    for path in paths:
        attrs = ff.read_features_attrs(path)
        if attrs.get(ff.STATUS) == EXCLUDED:
            continue
        key = (str(attrs.get(ff.ENCODER, "")), str(attrs.get(ff.WEIGHTS_SHA256, "")))
        found.setdefault(key, []).append(path)
        source = str(attrs.get(ff.WEIGHTS_SOURCE, ""))
    if len(found) != 1:
        listing = "; ".join(f"{e} (sha256 {s}): {files[0]} ..." for (e, s), files in found.items())
        raise PackageError(f"{cohort}: features of {run} come from {len(found)} encoders or weights: {listing}")
    (encoder, sha256), _ = found.popitem()
    return {"encoder": encoder, "weights_sha256": sha256, "weights_source": source}


metas = [json.loads(Path(p).read_text()) for p in snakemake.input.meta]
tables = [
    cohort_predictions(train, held)
    for train, held in zip(snakemake.input.predictions_train, snakemake.input.predictions, strict=True)
]
outcomes = pd.DataFrame(snakemake.params.outcomes)
cohort_edges = time_bin_edges(
    outcomes["survival_months"].to_numpy(), outcomes["censorship"].to_numpy(), metas[0]["inputs"]["n_bins"]
)
genomics, mri = snakemake.input.genomics, snakemake.input.mri
provenance = {
    "modalities": list(metas[0]["inputs"]["modalities"]),
    "genomics_columns": read_pathways(genomics[0])[2] if genomics else {},
    "mri_sequences": read_sequences(mri[0]) if mri else [],
    "encoder": encoder_of(list(snakemake.input.wsi)),
    "tiling": snakemake.params.tiling if snakemake.input.wsi else None,
    "features": snakemake.params.features if snakemake.input.wsi else None,
    "mri_roi": snakemake.params.mri_roi if mri else None,
    "training": snakemake.params.training,
    "training_cohort": {
        "patients": len(outcomes),
        "events": int((outcomes["censorship"] == 0).sum()),
    },
    "code": {"version": code_version(), "training_code_sha256": snakemake.params.code},
}
manifest = assemble_manifest(
    cohort, run, snakemake.params.mode, metas, tables, cohort_edges, snakemake.params.network, provenance
)
sources = list(zip(snakemake.input.weights, snakemake.input.scaling, strict=True))
write_package(snakemake.output[0], manifest, sources)
log.info(
    "%s on %s: %s package of %d member(s); time grid %s months; risk cut-off %.4g (%s, %d patients); encoder %s",
    *(run, cohort, snakemake.params.mode, len(sources), [round(e, 2) for e in manifest["time_grid"]]),
    *(manifest["risk_cutoff"]["value"], manifest["risk_cutoff"]["rule"], manifest["risk_cutoff"]["n_patients"]),
    provenance["encoder"],
)
