"""Training a fold: planted signal is learned, runs are deterministic, splits are patient-level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from model.bins import assign_bins, time_bin_edges
from model.deref import DeReF
from model.metrics import harrell_c
from model.splits import read_mcat_split, stratified_folds
from model.train import Patient, TrainSettings, train_fold

FAMILIES = [6, 6, 6, 6, 6, 6]


def planted_cohort(n=90, seed=0, wsi_dim=32):
    """Survival from a latent risk seen by both modalities (bag token means and gene families)."""
    rng = np.random.default_rng(seed)
    risk = rng.standard_normal(n)
    times = rng.exponential(24 * np.exp(-1.5 * risk))
    censor = rng.uniform(0, np.quantile(times, 0.9) * 1.5, size=n)
    censored = (censor < times).astype(int)
    observed = np.minimum(times, censor)
    direction = rng.standard_normal(wsi_dim)
    patients = []
    for i in range(n):
        bag = rng.standard_normal((int(rng.integers(8, 24)), wsi_dim)) + risk[i] * direction
        omics = [rng.standard_normal(d) + risk[i] for d in FAMILIES]
        patients.append(
            Patient(
                f"P{i}",
                torch.tensor(bag, dtype=torch.float32),
                [torch.tensor(o, dtype=torch.float32) for o in omics],
                float(observed[i]),
                int(censored[i]),
            )
        )
    return patients


def test_harrell_c_matches_lifelines():
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(1)
    times, censorship, risk = rng.exponential(10, 50), rng.integers(0, 2, 50), rng.standard_normal(50)
    assert harrell_c(times, censorship, risk) == pytest.approx(
        concordance_index(times, -risk, 1 - censorship), abs=1e-9
    )


def test_deref_learns_a_planted_signal():
    patients = planted_cohort()
    train, held_out = patients[:60], patients[60:]
    edges = time_bin_edges(np.array([p.time for p in train]), np.array([p.censorship for p in train]))
    torch.manual_seed(0)
    model = DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32)
    result = train_fold(model, train, held_out, edges, TrainSettings(epochs=6, seed=0))
    log = result.log
    assert list(log.columns) == ["epoch", "lr", "loss", "train_c_index", "held_out_c_index"] and len(log) == 6
    assert log["held_out_c_index"].iloc[-1] >= 0.7
    predictions = result.predictions
    assert len(predictions) == 30 and {"risk", "hazard_0", "survival_3"} <= set(predictions.columns)


def test_training_is_deterministic_on_cpu():
    patients = planted_cohort(n=24)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32, seed=0)
        runs.append(train_fold(model, patients[:16], patients[16:], edges, TrainSettings(epochs=2, seed=3)))
    pd.testing.assert_frame_equal(runs[0].predictions, runs[1].predictions)


def test_poly_decay_and_weighted_sampling():
    patients = planted_cohort(n=24)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    torch.manual_seed(0)
    result = train_fold(
        DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32),
        patients[:16],
        patients[16:],
        edges,
        TrainSettings(epochs=3, poly_decay=True, weighted_sampling=True),
    )
    assert np.allclose(result.log["lr"], [5e-4 * (1 - e / 3) ** 0.9 for e in range(3)])


def test_stratified_folds_partition_the_patients():
    rng = np.random.default_rng(0)
    times, censorship = rng.exponential(20, 80), rng.integers(0, 2, 80)
    bins = assign_bins(times, time_bin_edges(times, censorship))
    patients = [f"P{i}" for i in range(80)]
    folds = stratified_folds(patients, bins, censorship, k=5, seed=1)
    held = [p for _, test in folds for p in test]
    assert sorted(held) == sorted(patients) and all(not set(train) & set(test) for train, test in folds)
    assert folds == stratified_folds(patients, bins, censorship, k=5, seed=1)


def test_mcat_split_files(tmp_path):
    pd.DataFrame({"train": ["A", "B", "C"], "val": ["D", "E", None]}).to_csv(tmp_path / "splits_0.csv")
    assert read_mcat_split(tmp_path / "splits_0.csv") == (["A", "B", "C"], ["D", "E"])
    pd.DataFrame({"train": ["A"], "test": ["B"]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="lacks column\\(s\\) \\['val'\\]"):
        read_mcat_split(tmp_path / "bad.csv")


@pytest.mark.realdata
def test_real_tcga_blca_splits(shared_data):
    table = pd.read_csv(shared_data / "tcga" / "tcga_blca_all_clean.csv.gz", usecols=["case_id"])
    everyone = set(table["case_id"])
    held = []
    for k in range(5):
        train, val = read_mcat_split(shared_data / "tcga" / "splits" / "tcga_blca" / f"splits_{k}.csv")
        assert len(train) + len(val) == 373 and set(train) | set(val) == everyone
        held += val
    assert sorted(held) == sorted(everyone)
