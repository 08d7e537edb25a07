"""MOTCat (Xu & Chen, ICCV 2023): MCAT with its co-attention replaced by an unbalanced optimal transport plan.

Paper: the patch embeddings and the genomic tokens are matched by entropic unbalanced optimal
transport (squared Euclidean cost, uniform marginals relaxed by KL with weight tau); the plan
serves as the co-attention, each genomic token collecting the patches it transports to. To make
OT affordable on whole bags, the paper approximates it with unbalanced mini-batch OT over
micro-batches of patches. Everything after the co-attention is MCAT's.

Authors' code (Innse/MOTCat, ``MOTCAT_Surv`` with ``OT_Attn_assem``, ``impl='pot-uot-l2'``,
``ot_reg=0.1``, ``ot_tau=0.5``): both token sets are shifted by their own per-token minimum over
the features, the cost is their squared ``torch.cdist`` divided by its maximum, and POT's
``ot.unbalanced.sinkhorn_knopp_unbalanced`` (float64, uniform marginals, 1000 iterations at most,
stop threshold 1e-6) gives the plan (N, T) on detached inputs, so no gradient flows through it.
The co-attended tokens are planᵀ @ patches (not renormalised: the plan's total mass is not 1 and
grows with the bag), the transport cost itself is never used, and the rest is MCAT's network
without its co-attention module, with PyTorch's default init. The authors pin ``pot==0.9.3``, whose default regulariser is the
plain entropy; POT 0.9.5 changed the default to the KL divergence to a ⊗ b, which rescales the
plan by a bag-size-dependent factor, so the authors' code run under a newer POT changes its
outputs. Here the reference measure is passed explicitly as all ones, which is their
``reg_type='entropy'`` on any POT version.

Micro-batches (``micro_batch``): the repository's default (``--use_micro_batch`` off, added
09/2024; ``--bs_micro 16384``) feeds the whole bag, and so does ``micro_batch=None`` here. Before
2024 the code always split (README), and its scripts still pass ``--bs_micro 256``, which without
``--use_micro_batch`` no longer splits. Split, the bag is shuffled and cut into N // m + 1
near-equal micro-batches (``np.array_split``), the whole network runs on each (their genomic SNNs
too; here the second modality is encoded once, which only changes the dropout masks in training
and spares an MRI volume's 3D ResNet a pass per micro-batch), and training
averages the micro-batches' NLL while evaluation averages their risks. ``micro_batch=m`` splits the
same way but averages the micro-batches' hazards, so training takes one NLL on the averaged hazards
(the same for one micro-batch, not for several). Training draws the shuffle from torch's global
generator; evaluation from a generator seeded with 0 on every call, so evaluation is deterministic
(the authors reshuffle with Python's ``random``).

``attention`` (B, N): the plan's patch marginal (the mass transported from each patch), normalised
to sum to 1; with micro-batches each one's normalised marginal weighted by 1 / (number of
micro-batches), as their predictions are averaged. No other outputs, no auxiliary loss. With MRI,
``VolumeTokens`` replaces the six family tokens, as in ``model.mcat``.
"""

from __future__ import annotations

import ot
import torch
from torch import nn

from model.mcat import CoAttentionSurvival
from model.survival import risk_score, survival_curve


def unbalanced_transport_plan(patches: torch.Tensor, tokens: torch.Tensor, reg: float, tau: float) -> torch.Tensor:
    """The authors' OT co-attention plan (N, T) between (N, D) patch and (T, D) genomic embeddings, float64.

    Entropic unbalanced Sinkhorn-Knopp (POT) with uniform marginals, KL marginal relaxation
    ``tau`` and entropy weight ``reg``, on the max-normalised squared distances of the
    min-shifted embeddings. Computed without gradient, as the authors detach the cost.
    """
    with torch.no_grad():
        shifted_patches = patches - patches.min(dim=-1, keepdim=True).values
        shifted_tokens = tokens - tokens.min(dim=-1, keepdim=True).values
        cost = torch.cdist(shifted_patches, shifted_tokens) ** 2
        cost = (cost / cost.max()).double()
        n, t = cost.shape
        return ot.unbalanced.sinkhorn_knopp_unbalanced(
            cost.new_full((n,), 1 / n),
            cost.new_full((t,), 1 / t),
            cost,
            reg=reg,
            reg_m=tau,
            reg_type="kl",
            c=torch.ones_like(cost),  # the plain entropy: POT < 0.9.5's default, which the authors ran
        )


class OptimalTransportCoAttention(nn.Module):
    """Each genomic token collects the patches the transport plan sends it: planᵀ @ patches (no parameters)."""

    def __init__(self, reg: float = 0.1, tau: float = 0.5) -> None:
        super().__init__()
        self.reg, self.tau = reg, tau

    def forward(self, queries: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, dim) genomic tokens, (B, N, dim) patches -> co-attended tokens (B, T, dim), planᵀ (B, T, N)."""
        plans = torch.stack(
            [unbalanced_transport_plan(p, q, self.reg, self.tau) for p, q in zip(patches, queries, strict=True)]
        )
        weights = plans.transpose(1, 2).to(patches.dtype)
        return weights @ patches, weights


def micro_batches(n: int, size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The authors' split of n patches: a random order cut into n // size + 1 near-equal parts (np.array_split)."""
    return list(torch.randperm(n, generator=generator).tensor_split(n // size + 1))


class MOTCat(CoAttentionSurvival):
    """MOTCat: MCAT with an unbalanced-OT co-attention; optionally over micro-batches of patches."""

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 256,
        dropout: float = 0.25,
        ot_reg: float = 0.1,
        ot_tau: float = 0.5,
        micro_batch: int | None = None,
        heads: int = 8,
        feedforward: int = 512,
        layers: int = 2,
    ) -> None:
        super().__init__(
            OptimalTransportCoAttention(ot_reg, ot_tau),
            wsi_dim,
            n_bins,
            omic_sizes,
            mri_channels,
            mri_depth,
            dim,
            dropout,
            heads,
            feedforward,
            layers,
        )
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(f"micro_batch must be a positive number of patches or None, not {micro_batch}")
        self.micro_batch = micro_batch

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the families (or [volume]) -> hazards and the patch attention (B, N)."""
        n = wsi.shape[1]
        if self.micro_batch is None or n // self.micro_batch == 0:  # one micro-batch: the whole bag
            return super().forward(wsi, second)
        generator = None if self.training else torch.Generator().manual_seed(0)
        parts = [rows.to(wsi.device) for rows in micro_batches(n, self.micro_batch, generator)]
        tokens = self.second_encoder(second)  # once: the same tokens meet every micro-batch
        outs = [self.from_tokens(wsi[:, rows], tokens) for rows in parts]
        hazards = torch.stack([out["hazards"] for out in outs]).mean(dim=0)
        attention = wsi.new_zeros(wsi.shape[0], n)
        for rows, out in zip(parts, outs, strict=True):
            attention[:, rows] = out["attention"] / len(parts)
        return {
            "hazards": hazards,
            "survival": survival_curve(hazards),
            "risk": risk_score(hazards),
            "attention": attention,
        }
