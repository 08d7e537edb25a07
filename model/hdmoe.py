"""HDMoE: hierarchical decoupling mixture of experts, as the authors coded it.

The abstract says: per-modality MoEs with shared and routed experts decouple intra-modality
information, a second-level MoE decouples inter-modality information, and a random feature
reorganisation follows each level. The code adds what the abstract does not say (docs/models.md §2):
one token per modality at the first level, 8 routed experts with top-1 routing scaled by the
router probability plus one shared expert, experts Linear-ReLU-Dropout-Linear-ReLU, the
reorganised first-level features read as 4 tokens for the second level, two linear projections
used only by the alignment loss, and the loss L = NLL + alignment + decoupling cosine terms
+ 0.01 x load balancing. The code's crashes are fixed rather than reproduced: the gate width is
the encoder width (the code's default 64 fails), and ``shared_expert=False`` works.

At evaluation the authors draw both reorganisations at random; the default here averages the
hazards over every pair of choices (deterministic), ``test_rfr="random"`` draws from a seeded
generator as the reference.

The authors call every routed expert, unselected ones on no tokens: they add nothing to the
output but get zero gradients rather than none, so Adam's weight decay and momentum move them at
every step. ``call_every_expert`` reproduces that; off, an expert no token was routed to is
skipped and stays put.

The second modality is the six gene families (``omic_sizes``) or an MRI volume encoded by a 3D
ResNet (``mri_channels``, ``mri_depth``), the "genomics/MRI" V1 of the authors' figure.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders import init_weights, paired_encoder
from model.reorganise import reorganise
from model.survival import SurvivalNetwork, risk_score, survival_curve

if TYPE_CHECKING:
    from model.train import TrainSettings

FIRST_LEVEL_SEGMENTS = (1, 2, 4, 8, 16, 32, 64, 128)
SECOND_LEVEL_SEGMENTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Router(nn.Module):
    """Softmax router with top-k selection and the Switch-style load-balancing loss (training only)."""

    def __init__(self, dim: int, n_experts: int, top_k: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.top_k = top_k

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (T, dim) -> top-k weights (T, k), expert indices (T, k), probabilities (T, E), aux loss."""
        probs = torch.softmax(tokens @ self.weight.t(), dim=-1)
        weights, index = probs.topk(self.top_k, dim=-1)
        aux = tokens.new_zeros(())
        if self.training:
            n_experts = probs.shape[-1]
            counts = F.one_hot(index.flatten(), n_experts).float().mean(0) * n_experts / self.top_k
            aux = (probs.mean(0) * counts).sum()
        return weights, index, probs, aux


def _expert(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, d_out), nn.ReLU())


class SharedRoutedMoE(nn.Module):
    """Routed experts (top-k, outputs scaled by their router probability) plus one shared expert.

    ``call_every_expert`` also calls the experts no token was routed to, on no tokens (zero gradients).
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        n_experts: int = 8,
        top_k: int = 1,
        shared_expert: bool = True,
        call_every_expert: bool = False,
    ) -> None:
        super().__init__()
        self.router = Router(dim, n_experts, top_k)
        self.experts = nn.ModuleList(_expert(dim, out_dim) for _ in range(n_experts))
        self.shared = _expert(dim, out_dim) if shared_expert else None
        self.out_dim, self.call_every_expert = out_dim, call_every_expert

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, T, dim) -> routed (B, T*out), shared (B, T*out), router probabilities (B, T, E), aux."""
        batch, n_tokens, dim = tokens.shape
        flat = tokens.reshape(-1, dim)
        weights, index, probs, aux = self.router(flat)
        routed = flat.new_zeros(flat.shape[0], self.out_dim)
        for slot in range(index.shape[1]):
            for e, expert in enumerate(self.experts):
                chosen = index[:, slot] == e
                if self.call_every_expert or chosen.any():
                    routed[chosen] = routed[chosen] + weights[chosen, slot, None] * expert(flat[chosen])
        shared = self.shared(flat) if self.shared is not None else torch.zeros_like(routed)
        return routed.reshape(batch, -1), shared.reshape(batch, -1), probs.reshape(batch, n_tokens, -1), aux


class HDMoE(SurvivalNetwork):
    """WSI bag + gene families or MRI volume -> per-bin hazards, the features the losses need, patch attention.

    Give exactly one of ``omic_sizes`` (genomics cohorts) and ``mri_channels`` (MRI cohorts).
    ``nystrom_padding=False`` gives sequences shorter than the Nyström landmarks exact attention
    instead of the reference's zero-token padding. ``call_every_expert`` is on in the reference
    preset, as the authors' code, and off in the paper preset: the abstract says nothing of it, and
    an expert that received no token has no signal, so it should not drift with weight decay and
    stale momentum.
    """

    BALANCE_WEIGHT = 0.01  # the reference engine's weight of the load-balancing losses

    def __init__(
        self,
        omic_sizes: list[int] | None = None,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        dim: int = 256,
        n_experts: int = 8,
        top_k: int = 1,
        shared_expert: bool = True,
        test_rfr: str = "average",
        seed: int = 0,
        *,
        mri_channels: int | None = None,
        mri_depth: int = 50,
        nystrom_padding: bool = True,
        call_every_expert: bool = False,
    ) -> None:
        super().__init__()
        if test_rfr not in ("average", "random"):
            raise ValueError("test_rfr must be 'average' or 'random'")
        self.encoders = paired_encoder(
            omic_sizes, mri_channels, mri_depth, wsi_dim, dim, nystrom_padding=nystrom_padding
        )
        self.genomic_moe = SharedRoutedMoE(dim, dim, n_experts, top_k, shared_expert, call_every_expert)
        self.wsi_moe = SharedRoutedMoE(dim, dim, n_experts, top_k, shared_expert, call_every_expert)
        self.fusion_moe = SharedRoutedMoE(dim, dim // 2, n_experts, top_k, shared_expert, call_every_expert)
        self.project_specific = nn.Linear(2 * dim, 2 * dim)
        self.project_shared = nn.Linear(2 * dim, 2 * dim)
        self.head = nn.Linear(4 * dim, n_bins)
        self.dim, self.test_rfr = dim, test_rfr
        self._rng = random.Random(seed)
        self.apply(init_weights)

    def _second_level(self, first: torch.Tensor, l1: int, l2: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tokens = reorganise(first, l1).reshape(first.shape[0], 4, self.dim)
        inter, shared, probs, aux = self.fusion_moe(tokens)
        fusion = torch.stack([inter, shared], dim=1)  # (B, 2, 2*dim)
        logits = self.head(reorganise(fusion, l2))
        return logits, {"inter": inter, "inter_shared": shared, "fusion_router": probs, "aux_fusion": aux}

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the second modality -> hazards, survival, risk, patch attention, loss terms.

        The "genomic"/"g_" outputs are the second modality's, MRI included (the keys stay: details files store them).
        """
        wsi_cls, attention, second_cls = self.encoders(wsi, second)
        g_intra, g_share, g_router, aux_g = self.genomic_moe(second_cls.unsqueeze(1))
        p_intra, p_share, p_router, aux_p = self.wsi_moe(wsi_cls.unsqueeze(1))
        first = torch.stack([g_intra, p_intra, g_share, p_share], dim=1)  # (B, 4, dim)
        out = {
            "g_intra": g_intra,
            "g_share": g_share,
            "p_intra": p_intra,
            "p_share": p_share,
            "emb_specific": self.project_specific(torch.cat([g_intra, p_intra], dim=-1)),
            "emb_share": self.project_shared(torch.cat([g_share, p_share], dim=-1)),
            "genomic_router": g_router,
            "wsi_router": p_router,
            "aux_genomic": aux_g,
            "aux_wsi": aux_p,
            "attention": attention,
        }
        if self.training or self.test_rfr == "random":
            logits, second = self._second_level(
                first, self._rng.choice(FIRST_LEVEL_SEGMENTS), self._rng.choice(SECOND_LEVEL_SEGMENTS)
            )
            hazards = torch.sigmoid(logits)
        else:
            runs = [
                self._second_level(first, l1, l2)
                for l1, l2 in itertools.product(FIRST_LEVEL_SEGMENTS, SECOND_LEVEL_SEGMENTS)
            ]
            hazards = torch.stack([torch.sigmoid(logits) for logits, _ in runs]).mean(0)
            second = {k: torch.stack([s[k] for _, s in runs]).mean(0) for k in runs[0][1]}
        out |= second
        return {"hazards": hazards, "survival": survival_curve(hazards), "risk": risk_score(hazards), **out}

    def test_modes(self) -> tuple[str, ...]:
        """Both test-time reorganisations: the deterministic average and one random draw per call."""
        return ("average", "random")

    def reseed(self, seed: int) -> None:
        """Reset the generator of reorganisation choices."""
        self._rng = random.Random(seed)

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """Alignment + decoupling cosine terms + weighted load balancing (the reference's nll_surv_cos).

        Fixed as the authors' code: the settings' decoupling weight and distance are DeReF's.
        """

        def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return F.cosine_similarity(a, b, dim=-1, eps=1e-8).mean()

        alignment = (1 - cos(out["inter"], out["emb_specific"])) + (1 - cos(out["inter_shared"], out["emb_share"]))
        decoupling = (
            cos(out["g_intra"], out["g_share"])
            + cos(out["p_intra"], out["p_share"])
            + cos(out["inter"], out["inter_shared"])
        )
        balance = out["aux_genomic"] + out["aux_wsi"] + out["aux_fusion"]
        return alignment + decoupling + self.BALANCE_WEIGHT * balance
