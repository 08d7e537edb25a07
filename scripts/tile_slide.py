"""Segment tissue and write patch coordinates, contours and QC pictures for one slide.

input: slide; output: coords, contours, mask, grid; params: mpp (override or None), tiling,
mpp_from_objective_power; config: tiling.on_error (not a param: switching it reruns nothing)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.logs import log_to_file
from workflow.tiling.params import tiling_params
from workflow.tiling.tile import TileOutputs, tile_slide

log = log_to_file(snakemake.log[0])
params = tiling_params(snakemake.params.tiling)
log.info("slide %s: %s", snakemake.wildcards.slide, params)
tile_slide(
    snakemake.wildcards.slide,
    snakemake.input.slide,
    params,
    TileOutputs(**{k: snakemake.output[k] for k in ("coords", "contours", "mask", "grid")}),
    mpp_override=snakemake.params.mpp,
    mpp_from_objective_power=snakemake.params.mpp_from_objective_power,
    on_error=snakemake.config["tiling"]["on_error"],
)
