"""Survival-time bins from the quartiles of uncensored times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.bins import assign_bins, time_bin_edges


def test_bins_from_uncensored_quartiles():
    times = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 50.0])
    censorship = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    edges = time_bin_edges(times, censorship)
    assert edges[0] == pytest.approx(1.0 - 1e-6) and edges[-1] == pytest.approx(50.0 + 1e-6)
    assert np.allclose(edges[1:-1], np.quantile(times[:8], [0.25, 0.5, 0.75]))
    labels = assign_bins(times, edges)
    assert labels.min() == 0 and labels.max() == 3 and np.all(np.diff(labels) >= 0)
    assert assign_bins(np.array([-5.0, 500.0]), edges).tolist() == [0, 3]  # held-out times outside the range
    reference = pd.cut(times, bins=edges, right=False, include_lowest=True, labels=False)
    assert np.array_equal(labels, reference)


@pytest.mark.realdata
def test_real_tcga_blca_bin_edges(shared_data):
    table = pd.read_csv(
        shared_data / "tcga" / "tcga_blca_all_clean.csv.gz", usecols=["case_id", "survival_months", "censorship"]
    )
    patients = table.drop_duplicates("case_id")
    edges = time_bin_edges(patients["survival_months"].to_numpy(), patients["censorship"].to_numpy())
    assert np.round(edges, 2).tolist() == [0.49, 7.62, 13.57, 21.85, 163.17]
    counts = np.bincount(assign_bins(patients["survival_months"].to_numpy(), edges))
    assert counts.tolist() == [63, 75, 95, 140]
