"""The classical baseline: a penalised Cox model (scikit-survival) on per-patient summaries of each modality.

Per modality, one row per patient: genomics, every family's columns side by side; WSI, the mean
patch feature; MRI, per-channel statistics of the tumour voxels (mean, std, 10th/50th/90th
percentile). Each block is standardised on the fold's training patients and, with ``pca``,
reduced to its first principal components fit on those patients; the blocks are concatenated
and a ridge (``l1_ratio: 0``, ``CoxPHSurvivalAnalysis``) or elastic-net (``CoxnetSurvivalAnalysis``)
Cox model is fit. Nothing is chosen on the held-out patients, and the fit is deterministic.

Predictions follow the networks' contract: risk is the linear predictor; ``survival_k`` is the
model's survival function at the end of time bin k, and ``hazard_k`` the matching discrete hazard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.util import Surv

from model.data import CohortData, Standardizer
from model.metrics import harrell_c
from model.train import FoldResult

MRI_PERCENTILES = (10, 50, 90)


@dataclass(frozen=True)
class CoxSettings:
    """Penalty and reduction: ``alpha`` is passed to the estimator as is (ridge: 0.5 alpha ||b||^2)."""

    pca: int | None = 10  # components per modality, fit on the training patients; None keeps every column
    alpha: float = 1.0
    l1_ratio: float = 0.0  # 0: ridge (CoxPHSurvivalAnalysis); > 0: elastic net (CoxnetSurvivalAnalysis)

    def __post_init__(self) -> None:
        if not 0 <= self.l1_ratio <= 1:
            raise ValueError(f"coxph l1_ratio must lie in [0, 1], not {self.l1_ratio}")
        if self.pca is not None and self.pca < 1:
            raise ValueError(f"coxph pca must be at least 1 component (or null), not {self.pca}")


def mri_statistics(volumes: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(patients, C, D, H, W) ROIs and (patients, D, H, W) masks -> (patients, C * 5) tumour statistics."""
    rows = []
    for volume, mask in zip(volumes, masks, strict=True):
        if not mask.any():
            raise ValueError("an MRI ROI has an empty tumour mask; rerun the MRI stage")
        tumour = volume[:, mask]  # (C, voxels)
        stats = [tumour.mean(1), tumour.std(1), *np.percentile(tumour, MRI_PERCENTILES, axis=1)]
        rows.append(np.stack(stats, axis=1).ravel())
    return np.asarray(rows, np.float64)


def modality_blocks(data: CohortData) -> dict[str, np.ndarray]:
    """One (patients, features) matrix per modality the data holds, rows in outcomes order."""
    patients = list(data.outcomes.index)
    blocks = {}
    if data.bags:
        blocks["wsi"] = np.stack([data.bags[p].double().mean(0).numpy() for p in patients])
    if data.families:
        blocks["genomics"] = np.concatenate(list(data.families.values()), axis=1).astype(np.float64)
    if data.mri is not None:
        blocks["mri"] = mri_statistics(data.mri, data.mri_mask)
    return blocks


class _Block:
    """Standardise, then optionally PCA, one modality's matrix, fit on the training rows."""

    def __init__(self, name: str, train: np.ndarray, n_components: int | None) -> None:
        self.name = name
        self.scaler = Standardizer().fit(train)
        self.pca = None
        if n_components is not None:
            k = min(n_components, *train.shape)
            self.pca = PCA(n_components=k, svd_solver="full").fit(self.scaler.transform(train).astype(np.float64))

    def transform(self, values: np.ndarray) -> np.ndarray:
        z = self.scaler.transform(values).astype(np.float64)
        return z if self.pca is None else self.pca.transform(z)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"{self.name}.mean": self.scaler.mean_, f"{self.name}.scale": self.scaler.scale_}
        if self.pca is not None:
            out |= {f"{self.name}.pca_mean": self.pca.mean_, f"{self.name}.components": self.pca.components_}
        # contiguous, as a saved file reads back: the sums of design_matrix then run in the same order
        return {k: torch.as_tensor(np.ascontiguousarray(v, np.float64)) for k, v in out.items()}


def _estimator(settings: CoxSettings) -> CoxPHSurvivalAnalysis | CoxnetSurvivalAnalysis:
    if settings.l1_ratio == 0:
        return CoxPHSurvivalAnalysis(alpha=settings.alpha, ties="breslow")
    return CoxnetSurvivalAnalysis(l1_ratio=settings.l1_ratio, alphas=[settings.alpha], fit_baseline_model=True)


def _cumulative_hazard_at_zero(estimator, n_features: int, times: np.ndarray) -> np.ndarray:
    """H(t | x = 0) at ``times``, clipped to the baseline's domain: x = 0 is the training mean of every input."""
    function = estimator.predict_cumulative_hazard_function(np.zeros((1, n_features)))[0]
    low, high = function.domain
    return np.asarray(function(np.clip(times, low, high)), np.float64)


def linear_predictions(state: Mapping[str, torch.Tensor], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Risk (the linear predictor) and survival at the bin ends of (patients, features) inputs, from the saved state.

    S(t | x) = exp(-H(t | 0) exp(x b)): the fold's predictions and a model package's are both computed
    here from the saved coefficients, so a package scores a patient exactly as the fold did.
    """
    coef = state["coef"].numpy()
    # products summed by numpy, not BLAS: a patient's value never depends on the others scored with it
    linear = (x * coef[None, :]).sum(axis=1)
    survival = np.exp(-state["cumhaz_at_zero"].numpy()[None, :] * np.exp(linear)[:, None])
    return linear + float(state["bias"]), survival


def design_matrix(state: Mapping[str, torch.Tensor], data: CohortData, ids: Sequence[str]) -> np.ndarray:
    """The Cox model's inputs for patients ``ids``: each modality block scaled and reduced as saved.

    A genomics value missing in a new patient (NaN, allowed only by ``predict: impute:
    training_mean``) becomes the training mean (0 after scaling).
    """
    row = {p: i for i, p in enumerate(data.outcomes.index)}
    rows = [row[p] for p in ids]
    blocks = modality_blocks(data)
    parts = []
    for name in [name for name in blocks if f"{name}.mean" in state]:
        mean, scale = state[f"{name}.mean"].numpy(), state[f"{name}.scale"].numpy()
        # float32 z-scores, as the fit's Standardizer gave them
        z = np.nan_to_num(((blocks[name][rows] - mean) / scale).astype(np.float32), nan=0.0).astype(np.float64)
        if f"{name}.components" in state:  # PCA's projection (z - mean) @ components.T, summed as above
            centred = z - state[f"{name}.pca_mean"].numpy()
            z = (centred[:, None, :] * state[f"{name}.components"].numpy()[None, :, :]).sum(axis=2)
        parts.append(z)
    return np.concatenate(parts, axis=1)


def prediction_table(
    ids: Sequence[str], outcomes: pd.DataFrame, risk: np.ndarray, survival: np.ndarray
) -> pd.DataFrame:
    """The networks' predictions table (risk, hazard_k, survival_k per patient) from a Cox model's risk and survival."""
    table = pd.DataFrame(
        {
            "patient_id": list(ids),
            "survival_months": outcomes.loc[list(ids), "survival_months"].to_numpy(float),
            "censorship": outcomes.loc[list(ids), "censorship"].to_numpy(int),
            "risk": risk,
        }
    )
    before = np.concatenate([np.ones((len(survival), 1)), survival[:, :-1]], axis=1)
    hazards = np.where(before > 0, 1 - survival / np.where(before > 0, before, 1), 1.0)
    for k in range(survival.shape[1]):
        table[f"hazard_{k}"] = np.clip(hazards[:, k], 0.0, 1.0)
    for k in range(survival.shape[1]):
        table[f"survival_{k}"] = survival[:, k]
    return table


def fit_coxph(
    data: CohortData, train_ids: Sequence[str], held_ids: Sequence[str], edges: np.ndarray, settings: CoxSettings
) -> FoldResult:
    """Fit on the fold's training patients; predict them and the held-out ones (one 'epoch': nothing to select)."""
    row = {p: i for i, p in enumerate(data.outcomes.index)}
    train_rows = [row[p] for p in train_ids]
    blocks = modality_blocks(data)
    fitted = [_Block(name, matrix[train_rows], settings.pca) for name, matrix in blocks.items()]
    x_train = np.concatenate([b.transform(blocks[b.name][train_rows]) for b in fitted], axis=1)
    outcomes = data.outcomes
    train_outcomes = outcomes.loc[list(train_ids)]
    y = Surv.from_arrays(
        event=train_outcomes["censorship"].to_numpy() == 0, time=train_outcomes["survival_months"].to_numpy(float)
    )
    estimator = _estimator(settings).fit(x_train, y)
    state = {
        "coef": torch.as_tensor(np.asarray(estimator.coef_, np.float64).ravel()),
        "bias": torch.as_tensor(np.asarray(estimator.predict(np.zeros((1, x_train.shape[1]))), np.float64)),
        "cumhaz_at_zero": torch.as_tensor(_cumulative_hazard_at_zero(estimator, x_train.shape[1], edges[1:])),
    }
    for block in fitted:
        state |= block.tensors()
    x_train, x_held = design_matrix(state, data, train_ids), design_matrix(state, data, held_ids)
    train_table = prediction_table(train_ids, outcomes, *linear_predictions(state, x_train))
    held_table = prediction_table(held_ids, outcomes, *linear_predictions(state, x_held))
    log = pd.DataFrame(
        [
            {
                "epoch": 0,
                "train_c_index": harrell_c(
                    train_table["survival_months"], train_table["censorship"], train_table["risk"]
                ),
                "held_out_c_index": harrell_c(
                    held_table["survival_months"], held_table["censorship"], held_table["risk"]
                ),
            }
        ]
    )
    return FoldResult(
        log=log,
        selected_epochs=[0],
        predictions=held_table,
        predictions_train=train_table,
        details={},
        state_dict=state,
        best_epoch=0,
        best_epoch_predictions=held_table,
        parameters=int(state["coef"].numel()),
    )
