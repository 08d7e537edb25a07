"""Training one cross-validation fold: batch size 1 over patients, NLL + the model's auxiliary loss.

Per epoch the training C-index (train-mode predictions as the epochs run, as the reference) and the
held-out C-index (eval mode) are logged. The returned predictions are those of the last epoch: the
honest protocol. Choosing the epoch by held-out C-index, as the reference does, is optimistic and
left to the aggregation step, which must label it so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sksurv.metrics import concordance_index_censored
from torch import nn

from model.deref import DeReF
from model.hdmoe import HDMoE, hdmoe_auxiliary_loss
from model.losses import decoupling_loss
from model.survival import assign_bins, nll_survival_loss


@dataclass
class Patient:
    """One patient's inputs and outcome: WSI bag (N, D), per-family genomic vectors, time, censorship."""

    patient_id: str
    bag: torch.Tensor
    omics: list[torch.Tensor]
    time: float
    censorship: int


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (defaults: the papers' Adam 5e-4, weight decay 1e-5, 30 epochs)."""

    epochs: int = 30
    lr: float = 5e-4
    weight_decay: float = 1e-5
    nll_alpha: float = 0.0
    decoupling_weight: float = 1.0
    distance: str = "mse"
    poly_decay: bool = False  # the reference's per-epoch lr * (1 - epoch / epochs) ** 0.9
    weighted_sampling: bool = False  # the reference's sampling with replacement over bin x censorship strata
    seed: int = 0


def harrell_c(times: np.ndarray, censorship: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (scikit-survival), with censorship = 1 meaning censored."""
    return float(
        concordance_index_censored(
            (np.asarray(censorship) == 0), np.asarray(times, float), np.asarray(risk, float), tied_tol=1e-8
        )[0]
    )


def auxiliary_loss(model: nn.Module, out: dict[str, torch.Tensor], settings: TrainSettings) -> torch.Tensor:
    """The model's own loss terms besides the survival NLL."""
    if isinstance(model, DeReF):
        return settings.decoupling_weight * decoupling_loss(
            out["genomic"], out["pathology"], out["shared"], out["explore"], settings.distance
        )
    if isinstance(model, HDMoE):
        return hdmoe_auxiliary_loss(out)
    return out["hazards"].new_zeros(())


def _epoch_order(bins: np.ndarray, censorship: np.ndarray, rng: np.random.Generator, weighted: bool) -> np.ndarray:
    if not weighted:
        return rng.permutation(len(bins))
    strata = 2 * bins + censorship
    counts = np.bincount(strata, minlength=strata.max() + 1)
    weights = len(strata) / counts[strata]
    return rng.choice(len(strata), size=len(strata), replace=True, p=weights / weights.sum())


def predict(model: nn.Module, patients: list[Patient]) -> pd.DataFrame:
    """Eval-mode risk, hazards and survival per patient."""
    model.eval()
    rows = []
    with torch.no_grad():
        for p in patients:
            out = model(p.bag.unsqueeze(0), [x.unsqueeze(0) for x in p.omics])
            rows.append(
                {
                    "patient_id": p.patient_id,
                    "survival_months": p.time,
                    "censorship": p.censorship,
                    "risk": float(out["risk"][0]),
                    **{f"hazard_{k}": float(v) for k, v in enumerate(out["hazards"][0])},
                    **{f"survival_{k}": float(v) for k, v in enumerate(out["survival"][0])},
                }
            )
    return pd.DataFrame(rows)


def train_fold(
    model: nn.Module, train: list[Patient], held_out: list[Patient], edges: np.ndarray, settings: TrainSettings
) -> dict[str, Any]:
    """Train for ``settings.epochs``; return the per-epoch log, last-epoch predictions and the weights."""
    rng = np.random.default_rng(settings.seed)
    optimiser = torch.optim.Adam(
        filter(lambda p: p.requires_grad, model.parameters()), lr=settings.lr, weight_decay=settings.weight_decay
    )
    times = np.array([p.time for p in train])
    censorship = np.array([p.censorship for p in train], dtype=np.int64)
    bins = assign_bins(times, edges)
    log = []
    for epoch in range(settings.epochs):
        if settings.poly_decay:
            for group in optimiser.param_groups:
                group["lr"] = settings.lr * (1 - epoch / settings.epochs) ** 0.9
        model.train()
        losses, risks, seen = [], [], []
        for i in _epoch_order(bins, censorship, rng, settings.weighted_sampling):
            p = train[i]
            out = model(p.bag.unsqueeze(0), [x.unsqueeze(0) for x in p.omics])
            loss = nll_survival_loss(
                out["hazards"], torch.tensor([bins[i]]), torch.tensor([censorship[i]]), settings.nll_alpha
            )
            loss = loss + auxiliary_loss(model, out, settings)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            risks.append(out["risk"][0].item())
            seen.append(i)
        held = predict(model, held_out)
        log.append(
            {
                "epoch": epoch,
                "lr": optimiser.param_groups[0]["lr"],
                "loss": float(np.mean(losses)),
                "train_c_index": harrell_c(times[seen], censorship[seen], np.array(risks)),
                "held_out_c_index": harrell_c(held["survival_months"], held["censorship"], held["risk"]),
            }
        )
    return {
        "log": pd.DataFrame(log),
        "predictions": held,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
