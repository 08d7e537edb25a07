"""Encode every patch of a job's slides with the configured frozen encoder, one features file each.

input: coords, slides (lists, in the job's slide order), weights (optional file); output: the job's
record; params: features, slides (ids), staged (each slide's features file); config: tiling: on_error
(read here, not a param, so that switching it never re-extracts); threads: DataLoader workers and CPU threads
"""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.device import claim_device
from workflow.features.batches import write_batch_record
from workflow.features.encoders import encoder_spec, load_encoder
from workflow.features.extract import FeatureSettings, SlideTask, extract_slides
from workflow.logs import log_to_file

# Everything imported lives until exit: frozen, the garbage collector never walks it, which
# saves about 1 s of interpreter exit per job (measured with torch and timm loaded).
gc.freeze()
log = log_to_file(snakemake.log[0])
cfg = snakemake.params.features
encoder = load_encoder(encoder_spec(cfg["encoder"], cfg["input_size"]), cfg["weights"])
settings = FeatureSettings(cfg["batch_size"], cfg["dtype"], cfg["block"], cfg["max_failed_fraction"])
tasks = [
    SlideTask(*paths)
    for paths in zip(
        snakemake.params.slides,
        snakemake.input.slides,
        snakemake.input.coords,
        snakemake.params.staged,
        strict=True,
    )
]
with claim_device() as device:
    results = extract_slides(
        tasks, encoder, settings, device, threads=snakemake.threads, on_error=snakemake.config["tiling"]["on_error"]
    )
write_batch_record(snakemake.output[0], snakemake.params.staged, results)
