"""Verify the configured encoder weights before any slide is read (offline).

output: results/weights/<encoder>.tsv (encoder, file, sha256, status, dim, architecture);
params: features (encoder, weights, input_size, sha256)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.features.weights import check_weights, write_report
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
cfg = snakemake.params.features
if snakemake.wildcards.encoder != cfg["encoder"]:
    raise ValueError(
        f"results/weights/{snakemake.wildcards.encoder}.tsv asked for, but features: encoder: is {cfg['encoder']}"
    )
report, _ = check_weights(cfg["encoder"], cfg["weights"], input_size=cfg.get("input_size"), sha256=cfg.get("sha256"))
log.info(
    "weights of encoder %s: %s (%s), sha256 %s, %d-d",
    report.encoder,
    report.file,
    report.status,
    report.sha256,
    report.dim,
)
write_report(report, snakemake.output[0])
