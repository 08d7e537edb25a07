"""Cohort tiling summary: one row per slide, read back from the coordinates files' attributes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from workflow.io import write_tsv
from workflow.tiling import coords

COLUMNS = {
    coords.NAME: "slide_id",
    coords.STATUS: "status",
    "slide_mpp": "mpp",
    "mpp_source": "mpp_source",
    "objective_power": "objective_power",
    coords.READ_LEVEL: "read_level",
    coords.READ_SIZE: "read_size",
    "patch_mpp": "patch_mpp",
    "n_contours": "contours",
    "n_holes": "holes",
    "patches": "patches",
    "tissue_mm2": "tissue_mm2",
    "seconds": "seconds",
    coords.REASON: "reason",
}


def _row(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Attributes and patch count of a coordinates file, with arrays as lists."""
    read = coords.read_coords(path)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in read.attrs.items()} | {
        "patches": len(read.xy)
    }


def summary(coords_files: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """The summary table of the given coordinates files (excluded slides included, with reasons)."""
    rows = [_row(path) for path in coords_files]
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS)).rename(columns=COLUMNS)


def write_summary(coords_files: Iterable[str | os.PathLike[str]], path: str | os.PathLike[str]) -> pd.DataFrame:
    """Write the summary TSV atomically and return it."""
    table = summary(coords_files)
    write_tsv(table, path)
    return table
