"""Cohort features summary: one row per slide from the features files' attributes."""

from __future__ import annotations

import os
from collections.abc import Iterable

import h5py
import pandas as pd

from workflow.io import write_tsv

COLUMNS = [
    "slide_id",
    "status",
    "n_patches",
    "n_failed",
    "seconds",
    "patches_per_second",
    "device",
    "encoder",
    "weights_source",
    "weights_sha256",
    "reason",
]


def summary(feature_files: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per features file."""
    rows = []
    for path in feature_files:
        with h5py.File(path, "r") as h5:
            rows.append(dict(h5.attrs))
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def write_summary(feature_files: Iterable[str | os.PathLike[str]], path: str | os.PathLike[str]) -> pd.DataFrame:
    """Write the summary TSV atomically and return it."""
    table = summary(feature_files)
    write_tsv(table, path)
    return table
