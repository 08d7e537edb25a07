"""Cohort tiling summary: one row per slide, read back from the coordinates files' attributes."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from workflow.io import write_tsv
from workflow.tiling.tile import read_tiling_attrs

COLUMNS = {
    "name": "slide_id",
    "status": "status",
    "slide_mpp": "mpp",
    "mpp_source": "mpp_source",
    "objective_power": "objective_power",
    "read_level": "read_level",
    "read_size": "read_size",
    "patch_mpp": "patch_mpp",
    "n_contours": "contours",
    "n_holes": "holes",
    "patches": "patches",
    "tissue_mm2": "tissue_mm2",
    "seconds": "seconds",
    "reason": "reason",
}


def summary(coords_files: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """The summary table of the given coordinates files (excluded slides included, with reasons)."""
    rows = [read_tiling_attrs(path) for path in coords_files]
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS)).rename(columns=COLUMNS)


def write_summary(coords_files: Iterable[str | os.PathLike[str]], path: str | os.PathLike[str]) -> pd.DataFrame:
    """Write the summary TSV atomically and return it."""
    table = summary(coords_files)
    write_tsv(table, path)
    return table
