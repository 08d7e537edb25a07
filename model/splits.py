"""Patient-level cross-validation splits: MCAT's ``splits_k.csv`` files, or stratified and seeded."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from model.bins import assign_bins, time_bin_edges
from workflow.io import atomic_path


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


def write_mcat_split(path: str | os.PathLike[str], train: Sequence[str], held_out: Sequence[str]) -> None:
    """One split in MCAT's format (``,train,val``, the shorter column padded), written atomically."""
    n = max(len(train), len(held_out))
    table = pd.DataFrame(
        {"train": list(train) + [None] * (n - len(train)), "val": list(held_out) + [None] * (n - len(held_out))}
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp)


def cohort_splits(
    outcomes: pd.DataFrame, k: int, seed: int, n_bins: int = 4, mcat_dir: str | os.PathLike[str] | None = None
) -> list[tuple[list[str], list[str]]]:
    """k (train, held-out) splits of a cohort (outcomes indexed by patient_id).

    With ``mcat_dir``, its ``splits_{0..k-1}.csv`` are read and checked against the cohort: each
    must hold exactly the cohort's patients. Otherwise folds are stratified by time bin x
    censorship (bins over the whole cohort, used for stratification only) and seeded.
    """
    patients = list(outcomes.index)
    if mcat_dir is None:
        times, censorship = outcomes["survival_months"].to_numpy(), outcomes["censorship"].to_numpy()
        bins = assign_bins(times, time_bin_edges(times, censorship, n_bins))
        return stratified_folds(patients, bins, censorship, k=k, seed=seed)
    splits = []
    for fold in range(k):
        path = os.path.join(mcat_dir, f"splits_{fold}.csv")
        if not os.path.exists(path):
            raise ValueError(f"{path} is missing: the splits folder needs splits_0.csv .. splits_{k - 1}.csv")
        train, held_out = read_mcat_split(path)
        unknown = sorted(set(train + held_out) - set(patients))
        absent = sorted(set(patients) - set(train + held_out))
        if unknown or absent:
            raise ValueError(
                f"{path}: patients {unknown[:5]} are not in the cohort and {absent[:5]} of the cohort are in "
                "neither column; the split must cover exactly the cohort's patients.tsv"
            )
        splits.append((train, held_out))
    return splits
