"""Cohort features summary: one row per slide from the features files' attributes."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from workflow.features import features_file as ff
from workflow.io import write_tsv

COLUMNS = [
    ff.SLIDE_ID,
    ff.STATUS,
    ff.N_PATCHES,
    ff.N_FAILED,
    ff.SECONDS,
    ff.PATCHES_PER_SECOND,
    ff.DEVICE,
    ff.ENCODER,
    ff.WEIGHTS_SOURCE,
    ff.WEIGHTS_SHA256,
    ff.REASON,
]


def summary(feature_files: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per features file."""
    return pd.DataFrame([ff.read_features_attrs(path) for path in feature_files]).reindex(columns=COLUMNS)


def write_summary(feature_files: Iterable[str | os.PathLike[str]], path: str | os.PathLike[str]) -> pd.DataFrame:
    """Write the summary TSV atomically and return it."""
    table = summary(feature_files)
    write_tsv(table, path)
    return table
