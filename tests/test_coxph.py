"""The classical Cox baseline: per-modality summaries, fold-fit scaling and PCA, scikit-survival's fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from model.coxph import CoxSettings, fit_coxph, modality_blocks, mri_statistics
from model.data import CohortData
from model.metrics import harrell_c


def planted(n=60, seed=0):
    """Genomics whose first columns carry the log hazard, bags whose mean carries it too."""
    rng = np.random.default_rng(seed)
    risk = rng.standard_normal(n)
    times = rng.exponential(20 * np.exp(-risk)) + 0.1
    censorship = (rng.uniform(size=n) < 0.3).astype(int)
    ids = [f"C{i}" for i in range(n)]
    outcomes = pd.DataFrame({"survival_months": times, "censorship": censorship}, index=ids)
    families = {
        "a": rng.standard_normal((n, 5)) + risk[:, None],
        "b": rng.standard_normal((n, 7)),
    }
    bags = {
        p: torch.tensor(rng.standard_normal((4 + i % 3, 6)) + risk[i], dtype=torch.float32) for i, p in enumerate(ids)
    }
    return outcomes, families, bags


def test_coxph_is_scikit_survival_on_fold_fit_pca():
    outcomes, families, _ = planted()
    data = CohortData(outcomes, families=families)
    ids = list(outcomes.index)
    train, held = ids[:45], ids[45:]
    edges = np.array([0.0, 5.0, 10.0, 20.0, 1e3])
    result = fit_coxph(data, train, held, edges, CoxSettings(pca=3, alpha=0.5))

    x = np.concatenate(list(families.values()), axis=1)
    mean, scale = x[:45].mean(0), x[:45].std(0)
    pca = PCA(3).fit((x[:45] - mean) / scale)
    z_train, z_held = pca.transform((x[:45] - mean) / scale), pca.transform((x[45:] - mean) / scale)
    y = Surv.from_arrays(outcomes["censorship"].to_numpy()[:45] == 0, outcomes["survival_months"].to_numpy()[:45])
    reference = CoxPHSurvivalAnalysis(alpha=0.5, ties="breslow").fit(z_train, y)
    assert np.allclose(result.predictions["risk"], reference.predict(z_held), atol=1e-5)
    assert np.allclose(result.predictions_train["risk"], reference.predict(z_train), atol=1e-5)
    at_bin_ends = np.stack([f(np.clip(edges[1:], *f.domain)) for f in reference.predict_survival_function(z_held)])
    survival = result.predictions[[f"survival_{k}" for k in range(4)]].to_numpy()
    hazards = result.predictions[[f"hazard_{k}" for k in range(4)]].to_numpy()
    assert np.allclose(survival, at_bin_ends, atol=1e-6)
    assert np.allclose(np.cumprod(1 - hazards, axis=1), survival, atol=1e-6)
    assert list(result.predictions["patient_id"]) == held and result.selected_epochs == [0]
    assert result.state_dict["coef"].shape == (3,) and result.state_dict["genomics.components"].shape == (3, 12)
    assert harrell_c(outcomes["survival_months"][45:], outcomes["censorship"][45:], result.predictions["risk"]) > 0.65


def test_coxph_blocks_per_modality_and_elastic_net():
    outcomes, families, bags = planted(n=40, seed=1)
    data = CohortData(outcomes, bags=bags, families=families)
    blocks = modality_blocks(data)
    assert set(blocks) == {"wsi", "genomics"} and blocks["genomics"].shape == (40, 12)
    assert np.allclose(blocks["wsi"][2], bags["C2"].double().mean(0).numpy())
    ids = list(outcomes.index)
    result = fit_coxph(
        data, ids[:30], ids[30:], np.array([0, 5, 10, 20, 1e3]), CoxSettings(pca=2, alpha=0.05, l1_ratio=0.5)
    )
    assert result.state_dict["coef"].shape == (4,)  # 2 components per modality
    assert np.isfinite(result.predictions["risk"]).all()
    with pytest.raises(ValueError, match="l1_ratio"):
        CoxSettings(l1_ratio=1.5)


def test_mri_statistics_by_hand():
    volume = np.arange(2 * 2 * 2 * 2, dtype=float).reshape(1, 2, 2, 2, 2)  # one patient, two channels
    mask = np.zeros((1, 2, 2, 2), bool)
    mask[0, 0, 0, :] = True  # voxels 0 and 1 of each channel
    stats = mri_statistics(volume, mask).reshape(2, 5)
    assert np.allclose(stats[0], [0.5, 0.5, 0.1, 0.5, 0.9])
    assert np.allclose(stats[1], [8.5, 0.5, 8.1, 8.5, 8.9])
    with pytest.raises(ValueError, match="empty tumour mask"):
        mri_statistics(volume, np.zeros_like(mask))
