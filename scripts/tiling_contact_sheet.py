"""The tiling QC contact sheet of a cohort: every slide's patch grid on one page.

input: pictures (each slide's grid picture, in params.slides order), summary; output: png, pdf;
params: slides
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from workflow.logs import log_to_file
from workflow.tiling.contact_sheet import contact_sheet

log = log_to_file(snakemake.log[0])
summary = pd.read_csv(snakemake.input.summary, sep="\t", dtype={"slide_id": str})
pictures = dict(zip(snakemake.params.slides, snakemake.input.pictures, strict=True))
contact_sheet(
    pictures,
    summary,
    f"{snakemake.wildcards.cohort}: tissue and patch grid of {len(pictures)} slides",
    [snakemake.output.png, snakemake.output.pdf],
)
log.info("%d slides", len(pictures))
