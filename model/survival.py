"""Discrete-time survival: the censored negative log-likelihood, hazards to survival and risk.

As in MCAT, DeReF and HDMoE: hazards are per-bin sigmoid outputs over the bins of ``model.bins``,
the survival curve is S_k = prod_{j<=k} (1 - h_j), and the risk score is -sum_k S_k. Censorship
follows the TCGA convention (1 = censored/alive, 0 = event).
"""

from __future__ import annotations

import torch


def nll_survival_loss(
    hazards: torch.Tensor, bins: torch.Tensor, censorship: torch.Tensor, alpha: float = 0.0, eps: float = 1e-7
) -> torch.Tensor:
    """Censored discrete-time NLL (DeReF eq. 5), averaged over the batch.

    Uncensored: -log S(y-1) - log h(y); censored: -log S(y); ``alpha`` up-weights the uncensored part.
    """
    bins = bins.long().view(-1, 1)
    censorship = censorship.float().view(-1, 1)
    survival = torch.cumprod(1 - hazards, dim=1)
    padded = torch.cat([torch.ones_like(censorship), survival], dim=1)
    before = torch.gather(padded, 1, bins).clamp(min=eps)
    at = torch.gather(hazards, 1, bins).clamp(min=eps)
    after = torch.gather(padded, 1, bins + 1).clamp(min=eps)
    uncensored = -(1 - censorship) * (torch.log(before) + torch.log(at))
    censored = -censorship * torch.log(after)
    return ((1 - alpha) * (censored + uncensored) + alpha * uncensored).mean()


def survival_curve(hazards: torch.Tensor) -> torch.Tensor:
    """S_k = prod_{j<=k} (1 - h_j)."""
    return torch.cumprod(1 - hazards, dim=1)


def risk_score(hazards: torch.Tensor) -> torch.Tensor:
    """Higher means worse: minus the sum of the survival curve."""
    return -survival_curve(hazards).sum(dim=1)
