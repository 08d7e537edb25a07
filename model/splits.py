"""Patient-level cross-validation splits: MCAT's ``splits_k.csv`` files, or stratified and seeded."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold


def read_mcat_split(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """(train, held-out) patient IDs from an MCAT split file: header ``,train,val``, padded columns."""
    table = pd.read_csv(path, dtype=str)
    missing = {"train", "val"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: split file lacks column(s) {sorted(missing)}; expected the MCAT header ',train,val'")
    train, held_out = list(table["train"].dropna()), list(table["val"].dropna())
    overlap = set(train) & set(held_out)
    if overlap:
        raise ValueError(f"{path}: patient(s) {sorted(overlap)[:5]} are in both train and val")
    return train, held_out


def stratified_folds(
    patients: Sequence[str], bins: np.ndarray, censorship: np.ndarray, k: int = 5, seed: int = 0
) -> list[tuple[list[str], list[str]]]:
    """k (train, held-out) splits stratified by time bin x censorship, reproducible from ``seed``."""
    strata = 2 * np.asarray(bins) + np.asarray(censorship)
    # Strata smaller than k cannot be spread over every fold; merge them by censorship alone.
    counts = pd.Series(strata).value_counts()
    strata = np.where(pd.Series(strata).map(counts).to_numpy() < k, 100 + np.asarray(censorship), strata)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    patients = list(patients)
    return [
        ([patients[i] for i in train], [patients[i] for i in test])
        for train, test in splitter.split(np.zeros(len(patients)), strata)
    ]
