"""External validation of a model package on new patients with outcomes: C-index and Kaplan-Meier of the risk groups.

The groups are cut at the package's own cut-off (median risk of its training cohort): nothing is
chosen on the new patients. A number that cannot be computed is NaN with its reason.

input: predictions, package; output: tsv, png, pdf; params: name (the new patients' folder)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.evaluate import SPLITS, km_curves, km_statistics, package_split
from model.figures.survival import km_figure
from model.fold_outputs import read_predictions
from model.package import read_manifest
from workflow.io import write_tsv
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
manifest = read_manifest(snakemake.input.package)
table = read_predictions(snakemake.input.predictions)
scored = table[table["risk"].notna()]
result = package_split(scored, float(manifest["risk_cutoff"]["value"]))
c_index = result.c_index
events = int((scored["censorship"] == 0).sum())
reasons = [result.reason] if result.reason else []
if c_index != c_index:
    reasons.append("no comparable pair (fewer than 2 patients or no event)")
row = {
    "new_patients": snakemake.params.name,
    "package": f"{manifest['run']} ({manifest['cohort']}, {manifest['mode']})",
    "n_left_out": int(table["risk"].isna().sum()),
    "n_events": events,
} | km_statistics(result)
row["c_index"] = row.pop("pooled_c_index")  # Harrell's C of the package's risk, one fixed model
row["reason"] = "; ".join(reasons)
write_tsv(pd.DataFrame([row]), snakemake.output.tsv)
title = (
    f"{manifest['run']} ({manifest['cohort']}) on {snakemake.params.name}: C-index {c_index:.3f} "
    f"({len(scored)} patients, {events} events)\n{SPLITS['package']}"
)
km_figure(km_curves(result), title, result.p_value, [snakemake.output.png, snakemake.output.pdf])
log.info(
    "C-index %.4f on %d patients (%d events); log-rank p %.3g %s",
    c_index,
    len(scored),
    events,
    result.p_value,
    row["reason"],
)
