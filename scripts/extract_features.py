"""Encode every patch of one slide with the configured frozen encoder.

input: coords, slide, weights (optional file); output: the features HDF5; params: features;
threads: DataLoader workers and CPU threads
"""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.device import claim_device
from workflow.features.encoders import encoder_spec, load_encoder
from workflow.features.extract import FeatureSettings, extract_slide
from workflow.logs import log_to_file

# Everything imported lives until exit: frozen, the garbage collector never walks it, which
# saves about 1 s of interpreter exit per job (measured with torch and timm loaded).
gc.freeze()
log = log_to_file(snakemake.log[0])
cfg = snakemake.params.features
encoder = load_encoder(encoder_spec(cfg["encoder"], cfg["input_size"]), cfg["weights"])
settings = FeatureSettings(cfg["batch_size"], cfg["dtype"], cfg["block"], cfg["max_failed_fraction"])
with claim_device() as device:
    extract_slide(
        snakemake.wildcards.slide,
        snakemake.input.slide,
        snakemake.input.coords,
        snakemake.output[0],
        encoder,
        settings,
        device,
        threads=snakemake.threads,
    )
