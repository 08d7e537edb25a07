"""Cross-validation results: C-index per fold and protocol, the Table III-style summary, pooled KM.

Protocols: ``honest`` is each fold's selected epoch (last epoch, or the inner-validation pick);
``best_epoch`` is the reference protocol (the epoch with the best C-index on the reported fold),
which is optimistic and always labelled so. Mean ± std over folds uses the population std
(ddof = 0), as the reference's ``np.std``. Kaplan-Meier curves pool the honest out-of-fold
predictions and split them at the median risk, as MCAT's evaluation notebook does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from model.metrics import harrell_c

PROTOCOLS = {
    "honest": "honest: selected epoch",
    "best_epoch": "reference protocol: best epoch on the reported fold (optimistic)",
}


def fold_cindex(predictions: Mapping[str, Sequence[pd.DataFrame]]) -> pd.DataFrame:
    """protocol -> per-fold prediction tables  ->  one row per (protocol, fold): C-index, epoch, n."""
    rows = []
    for protocol, tables in predictions.items():
        for table in tables:
            rows.append(
                {
                    "protocol": protocol,
                    "fold": int(table["fold"].iloc[0]),
                    "epoch": int(table["epoch"].iloc[0]),
                    "n_patients": len(table),
                    "n_events": int((table["censorship"] == 0).sum()),
                    "c_index": harrell_c(table["survival_months"], table["censorship"], table["risk"]),
                }
            )
    return pd.DataFrame(rows).sort_values(["protocol", "fold"], ignore_index=True)


def summarise(cindex: pd.DataFrame) -> pd.DataFrame:
    """Mean and population std of the per-fold C-index, per (cohort, model, protocol)."""
    keys = [k for k in ("cohort", "model", "protocol") if k in cindex.columns]
    return (
        cindex.groupby(keys, sort=False)["c_index"]
        .agg(mean="mean", std=lambda x: float(np.std(x)), n_folds="count")
        .reset_index()
    )


def markdown_table(summary: pd.DataFrame, descriptions: Mapping[str, str]) -> str:
    """Models as rows, cohorts as columns, one block per protocol; cells 'mean ± std'."""
    cohorts = list(dict.fromkeys(summary["cohort"]))
    lines = []
    for protocol, label in PROTOCOLS.items():
        block = summary[summary["protocol"] == protocol]
        if block.empty:
            continue
        lines += [f"**C-index, {label}**", "", "| model | " + " | ".join(cohorts) + " |"]
        lines.append("|---" * (len(cohorts) + 1) + "|")
        for model in dict.fromkeys(block["model"]):
            cells = []
            for cohort in cohorts:
                row = block[(block["model"] == model) & (block["cohort"] == cohort)]
                cells.append("n/a" if row.empty else f"{row['mean'].iloc[0]:.3f} ± {row['std'].iloc[0]:.3f}")
            lines.append(f"| {descriptions.get(model, model)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class KMResult:
    """Median-split groups of pooled out-of-fold predictions and their log-rank test."""

    table: pd.DataFrame  # patient rows with a "group" column (high / low risk)
    p_value: float
    statistic: float
    threshold: float
    c_index: float


def median_split(oof: pd.DataFrame) -> KMResult:
    """High risk = above the median predicted risk (pooled over folds, one row per patient)."""
    pooled = oof.groupby("patient_id", sort=False).agg(
        survival_months=("survival_months", "first"), censorship=("censorship", "first"), risk=("risk", "mean")
    )
    if len(pooled) < 4:
        raise ValueError(f"{len(pooled)} patients are too few for a median split")
    threshold = float(np.median(pooled["risk"]))
    pooled["group"] = np.where(pooled["risk"] > threshold, "high risk", "low risk")
    high, low = pooled[pooled["group"] == "high risk"], pooled[pooled["group"] == "low risk"]
    test = logrank_test(
        high["survival_months"],
        low["survival_months"],
        event_observed_A=1 - high["censorship"],
        event_observed_B=1 - low["censorship"],
    )
    c = harrell_c(pooled["survival_months"], pooled["censorship"], pooled["risk"])
    return KMResult(pooled.reset_index(), float(test.p_value), float(test.test_statistic), threshold, c)


def km_curves(result: KMResult) -> dict[str, KaplanMeierFitter]:
    """One fitted Kaplan-Meier estimator (with 95% CI) per risk group."""
    fitted = {}
    for group, rows in result.table.groupby("group"):
        fitted[group] = KaplanMeierFitter(label=f"{group} (n={len(rows)})").fit(
            rows["survival_months"], event_observed=1 - rows["censorship"]
        )
    return fitted
