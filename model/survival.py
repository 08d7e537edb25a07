"""Discrete-time survival: the censored negative log-likelihood, hazards to survival and risk.

As in MCAT, DeReF and HDMoE: hazards are per-bin sigmoid outputs over the bins of ``model.bins``,
the survival curve is S_k = prod_{j<=k} (1 - h_j), and the risk score is -sum_k S_k. Censorship
follows the TCGA convention (1 = censored/alive, 0 = event). ``SurvivalNetwork`` is the base of
every network, so training asks each model for its own loss terms instead of checking its class.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.encoders import SNNBlock

if TYPE_CHECKING:
    from model.train import TrainSettings


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


def survival_outputs(logits: torch.Tensor, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every network's outputs from its hazard logits: sigmoid hazards, their survival curve and risk, and ``extra``."""
    hazards = torch.sigmoid(logits)
    return {"hazards": hazards, "survival": survival_curve(hazards), "risk": risk_score(hazards), **extra}


def weight_matrices(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    """The trainable weight matrices (not biases or norms) of these modules, in parameter order."""
    return [p for m in modules for p in m.parameters() if p.ndim >= 2 and p.requires_grad]


class SurvivalNetwork(nn.Module):
    """A network mapping ``forward(wsi, second)`` to hazards, survival and risk, and what training asks of it.

    ``second`` is the list of second-modality tensors: the gene families or one MRI volume.
    """

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """The model's own loss terms besides the survival NLL (none by default).

        ``bins`` and ``censorship`` (B,) are the patients' labels, for the terms that use them
        (CLAM's instance clustering, CCL's cohort bank); training calls this once per forward.
        """
        return out["hazards"].new_zeros(())

    # the test-time mode in use; networks with a random test-time reorganisation switch it
    test_rfr: str = "none"
    # outputs only ``auxiliary_loss`` reads (per-patient intermediates): never saved to details.h5
    loss_outputs: tuple[str, ...] = ()

    def test_modes(self) -> tuple[str, ...]:
        """The test-time modes a repeated test compares ("none": nothing at test time is random)."""
        return ("none",)

    def reseed(self, seed: int) -> None:
        """Reset any test-time random generator (none by default)."""

    def decoupled_features(self) -> tuple[str, ...]:
        """The output keys that are decoupled per-patient features (none by default)."""
        return ()

    def genomic_weights(self) -> list[torch.Tensor]:
        """What the L1 penalty (MCAT's ``lambda_reg``) covers: the weight matrices of every SNN block."""
        return weight_matrices(m for m in self.modules() if isinstance(m, SNNBlock))
