"""Aggregation: C-index per fold and protocol, the summary table, median-split KM and its figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from model.evaluate import fold_cindex, km_curves, markdown_table, median_split, summarise
from model.metrics import harrell_c
from workflow.plots import cindex_curves, km_figure


def fold_tables(n_folds=5, per_fold=30, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    tables = []
    for fold in range(n_folds):
        risk = rng.standard_normal(per_fold)
        times = rng.exponential(20 * np.exp(-signal * risk))
        tables.append(
            pd.DataFrame(
                {
                    "patient_id": [f"F{fold}P{i}" for i in range(per_fold)],
                    "survival_months": times,
                    "censorship": rng.integers(0, 2, per_fold),
                    "risk": risk,
                    "fold": fold,
                    "epoch": 29,
                }
            )
        )
    return tables


def test_harrell_c_agrees_with_lifelines_and_handles_no_pairs():
    table = pd.concat(fold_tables(n_folds=1, per_fold=60))
    ours = harrell_c(table["survival_months"], table["censorship"], table["risk"])
    assert ours == pytest.approx(concordance_index(table["survival_months"], -table["risk"], 1 - table["censorship"]))
    assert np.isnan(harrell_c([1.0, 2.0], [1, 1], [0.1, 0.2]))  # all censored: nothing comparable


def test_fold_cindex_and_population_std():
    honest, optimistic = fold_tables(), fold_tables(seed=1)
    cindex = fold_cindex({"honest": honest, "best_epoch": optimistic})
    assert list(cindex["fold"][cindex["protocol"] == "honest"]) == [0, 1, 2, 3, 4]
    summary = summarise(cindex.assign(cohort="c", model="m")).set_index("protocol")
    values = cindex[cindex["protocol"] == "honest"]["c_index"]
    assert summary.loc["honest", "std"] == pytest.approx(np.std(values)) and summary.loc["honest", "n_folds"] == 5
    assert summary.loc["honest", "mean"] > 0.6  # the planted signal


def test_markdown_table_labels_the_optimistic_protocol():
    cindex = fold_cindex({"honest": fold_tables(), "best_epoch": fold_tables(seed=2)})
    summary = pd.concat([summarise(cindex.assign(cohort=c, model="deref")) for c in ("tcga", "liver")])
    text = markdown_table(summary, {"deref": "DeReF"})
    assert "| model | tcga | liver |" in text and "optimistic" in text and text.count("| DeReF |") == 2
    assert " ± " in text


def test_median_split_separates_a_planted_signal(tmp_path):
    oof = pd.concat(fold_tables(signal=1.5), ignore_index=True)
    km = median_split(oof)
    assert km.p_value < 0.01 and set(km.table["group"]) == {"high risk", "low risk"}
    assert (km.table["group"] == "high risk").sum() == 75 and km.c_index > 0.65
    null = median_split(pd.concat(fold_tables(signal=0.0, seed=5), ignore_index=True))
    assert null.p_value > km.p_value

    km_figure(km_curves(km), "test", km.p_value, [tmp_path / "km.png", tmp_path / "km.pdf"])
    assert (tmp_path / "km.png").stat().st_size > 10_000 and (tmp_path / "km.pdf").read_bytes()[:4] == b"%PDF"


def test_median_split_needs_patients():
    with pytest.raises(ValueError, match="too few"):
        median_split(fold_tables(n_folds=1, per_fold=3)[0])


def test_cindex_curves_figure(tmp_path):
    logs = [
        pd.DataFrame(
            {"epoch": range(4), "train_c_index": [0.5, 0.6, 0.7, 0.8], "held_out_c_index": [0.5, 0.55, 0.6, 0.58]}
        )
        for _ in range(3)
    ]
    cindex_curves(logs, "curves", [tmp_path / "c.png"])
    assert (tmp_path / "c.png").stat().st_size > 5_000 and not list(tmp_path.glob(".tmp*"))
