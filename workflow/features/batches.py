"""Which slides one feature-extraction job encodes, and the record that job leaves.

Each job imports torch, builds the encoder and starts a reader pool once for ``slides_per_job``
slides. Its declared output is a small record; each slide's features file is written next to it
under ``staged/`` and then linked to its final name by a per-slide job, so Snakemake still sees
one output per slide while a killed job keeps the slides it finished.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pandas as pd

from workflow.features import features_file as ff
from workflow.io import write_tsv

if TYPE_CHECKING:  # the Snakefile plans batches at parse time: no torch import there
    from workflow.features.extract import SlideResult

RECORD_COLUMNS = ["slide_id", "file", ff.STATUS, ff.N_PATCHES, ff.N_FAILED, ff.SECONDS, "reused"]


def plan_batches(slide_ids: list[str], slides_per_job: int) -> list[list[str]]:
    """Consecutive groups of at most ``slides_per_job`` slides, in the sheet's order."""
    if slides_per_job < 1:
        raise ValueError(f"features: slides_per_job must be at least 1, got {slides_per_job}")
    return [slide_ids[i : i + slides_per_job] for i in range(0, len(slide_ids), slides_per_job)]


def write_batch_record(path: str | os.PathLike[str], files: list[str], results: list[SlideResult]) -> None:
    """One row per slide of the job: its file, status, patch counts, seconds and whether it was reused."""
    rows = [
        {
            "slide_id": r.attrs[ff.SLIDE_ID],
            "file": f,
            ff.STATUS: r.attrs[ff.STATUS],
            ff.N_PATCHES: r.attrs[ff.N_PATCHES],
            ff.N_FAILED: r.attrs[ff.N_FAILED],
            ff.SECONDS: r.attrs.get(ff.SECONDS, 0.0),
            "reused": r.reused,
        }
        for f, r in zip(files, results, strict=True)
    ]
    write_tsv(pd.DataFrame(rows, columns=RECORD_COLUMNS), path)
