"""MoME (Xiong et al., MICCAI 2024): biased progressive encoding through mixtures of multimodal experts.

Paper (its abstract; the full text is not in this repository): each modality is encoded with the
other as a reference, alternately and repeatedly (Biased Progressive Encoding), and at every stage
a MoME layer dynamically selects one expert; the experts take in the reference to different
degrees, from balanced fusion to ignoring it.

The authors' code (``MoMETransformer``), followed here; ``dim`` defaults to their width, 512
(model size "small"), not the 256 of the other comparison methods:

- Patch features: Linear(wsi_dim, dim)-ReLU-Dropout. Gene families: two SNN blocks each to
  ``dim`` (six tokens). With MRI, ``VolumeTokens`` (the 3D ResNet's last-stage grid as tokens)
  replaces the six family tokens.
- Two rounds of [WSI MoME layer (reference: the genomic tokens), genomic MoME layer (reference:
  the updated WSI tokens)]. Each layer's router (two Linear-RMSNorm-GELU projections, each
  token-averaged, summed, Linear to 4, softmax) picks one of four experts by argmax:
  joint Nyström attention over both token sets (RMSNorm); bottleneck fusion (2 fixed tokens
  attend over the reference, the tokens attend over themselves and the bottleneck, LayerNorm);
  additive (RMSNorm-SNN of the tokens plus the token mean of RMSNorm-SNN of the reference); and
  ignoring the reference.
- Every Nyström layer is pre-norm with Admin's residual, omega * x + attention(norm(x)), omega =
  sqrt(9 / ln 9 - 1) ~ 1.76 (``admin_torch.as_module(8)``: a constant, not trained); attention is
  lucidrains' ``NystromAttention`` (8 heads, dim/2 landmarks, 6 pseudo-inverse iterations, 33x1
  value convolution, dropout 0.1, zero padding in front): ``model.encoders.NystromAttention``.
- A fixed class token, the WSI tokens and the genomic tokens pass one more Nyström layer
  (LayerNorm); its class token feeds the linear survival head. PyTorch's default init throughout.

Where the code differs from what it evidently intends, and what is followed:

- ``MoME.forward`` passes ``hard`` positionally as the router's temperature, so ``DiffSoftmax``
  never takes its straight-through branch, and the chosen expert's output is not weighted by the
  router: the router gets no gradient and keeps its random initialisation (Adam skips it). There
  is no Gumbel noise anywhere, so routing is deterministic in training and evaluation.
  ``reference=True`` (default) reproduces this; ``reference=False`` trains the router by the
  straight-through estimator the code implements (forward one-hot, gradient of the softmax).
- The bottleneck tokens and the class token are ``torch.rand`` tensors: neither trained nor in
  the authors' state_dict (a reloaded checkpoint draws new ones). Here they are persistent buffers
  (never trained, saved with the weights).
- The bottleneck expert's own RMSNorm is never used; it is left out (4 * dim fewer parameters).
- The routing is per sample (the code's ``.item()`` needs batch size 1); with B = 1 it is theirs.

The authors' trainer runs every bag (training and validation) in shuffled micro-batches of at
most 4096 patches and averages losses and risks; the network depends on patch order (Nyström
landmarks, value convolution). That is training-loop behaviour, not reproduced here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from model.encoders import GeneFamilyEncoder, NystromAttention, SNNBlock, second_tokens, wsi_projection
from model.survival import SurvivalNetwork, survival_outputs, weight_matrices

ADMIN_RESIDUAL_LAYERS = 8  # the authors' admin_torch.as_module(8) in every layer
EXPERTS = ("joint_attention", "bottleneck", "additive", "no_reference")


def admin_omega(residual_layers: int) -> float:
    """Admin's shortcut scale for an O(log n) output change (Liu et al. 2020), ``admin_torch``'s default.

    omega = sqrt((n + 1) / ln(n + 1) - 1) for n residual layers.
    """
    return math.sqrt((residual_layers + 1) / math.log(residual_layers + 1) - 1)


def rms_norm(dim: int) -> nn.RMSNorm:
    """The authors' RMSNorm: x / sqrt(mean(x^2) + 1e-6), times a weight initialised to one."""
    return nn.RMSNorm(dim, eps=1e-6)


class AdminTransLayer(nn.Module):
    """omega * x + NystromAttention(norm(x)): the authors' TransLayer with the Admin residual."""

    def __init__(self, dim: int, norm: Callable[[int], nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm(dim)
        self.omega = admin_omega(ADMIN_RESIDUAL_LAYERS)
        self.attention = NystromAttention(
            dim=dim, heads=8, dim_head=dim // 8, landmarks=dim // 2, pinv_iterations=6, residual_kernel=33, dropout=0.1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(x)[0]

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, dim) -> the layer's output (B, L, dim) and the first token's exact attention row (B, L)."""
        out, first_row = self.attention.attend(self.norm(x))
        return self.omega * x + out, first_row


class JointAttentionExpert(nn.Module):
    """Balanced fusion: one Nyström layer over the tokens and the reference together; the tokens' rows are kept."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer = AdminTransLayer(dim, rms_norm)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.cat([x, reference], dim=1))[:, : x.shape[1]]


class BottleneckExpert(nn.Module):
    """Fusion through a few bottleneck tokens: they attend over the reference, then the tokens attend over them.

    The bottleneck tokens are U(0, 1) draws fixed at construction, as the authors' (never trained).
    """

    def __init__(self, dim: int, n_bottlenecks: int) -> None:
        super().__init__()
        self.fuse = AdminTransLayer(dim)
        self.gather = AdminTransLayer(dim)
        self.register_buffer("bottleneck", torch.rand(1, n_bottlenecks, dim))

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        n = self.bottleneck.shape[1]
        bottleneck = self.bottleneck.expand(reference.shape[0], -1, -1)
        summary = self.gather(torch.cat([bottleneck, reference], dim=1))[:, :n]
        return self.fuse(torch.cat([x, summary], dim=1))[:, : x.shape[1]]


class AdditiveExpert(nn.Module):
    """Light fusion: SNN(RMSNorm(tokens)) plus the token mean of SNN(RMSNorm(reference)), added to every token."""

    def __init__(self, dim: int, dropout: float = 0.25) -> None:
        super().__init__()
        self.snn, self.reference_snn = SNNBlock(dim, dim, dropout), SNNBlock(dim, dim, dropout)
        self.norm, self.reference_norm = rms_norm(dim), rms_norm(dim)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        shared = self.reference_snn(self.reference_norm(reference)).mean(dim=1, keepdim=True)
        return self.snn(self.norm(x)) + shared


class NoReferenceExpert(nn.Module):
    """Fully biased: the tokens pass unchanged and the reference is ignored."""

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return x


class Router(nn.Module):
    """Expert probabilities from both token sets: Linear-RMSNorm-GELU on each, token means summed, Linear, softmax."""

    def __init__(self, dim: int, n_experts: int) -> None:
        super().__init__()
        self.x_proj = nn.Sequential(nn.Linear(dim, dim), rms_norm(dim), nn.GELU())
        self.reference_proj = nn.Sequential(nn.Linear(dim, dim), rms_norm(dim), nn.GELU())
        self.scores = nn.Linear(dim, n_experts)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, N, dim), (B, M, dim) -> (B, n_experts) probabilities."""
        pooled = self.x_proj(x).mean(dim=1) + self.reference_proj(reference).mean(dim=1)
        return torch.softmax(self.scores(pooled), dim=-1)


class MoMELayer(nn.Module):
    """Encodes ``x`` with ``reference`` by the one expert (per sample) the router rates highest.

    ``straight_through``: the output is scaled by 1 - p + p (p the chosen probability, the first
    detached), one in value, so the router learns; off (the authors' code), it gets no gradient.
    """

    def __init__(self, dim: int, n_bottlenecks: int = 2, dropout: float = 0.25, straight_through: bool = False) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            [
                JointAttentionExpert(dim),
                BottleneckExpert(dim, n_bottlenecks),
                AdditiveExpert(dim, dropout),
                NoReferenceExpert(),
            ]
        )
        self.router = Router(dim, len(self.experts))
        self.straight_through = straight_through

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, dim) tokens and (B, M, dim) reference -> encoded tokens (B, N, dim), expert probabilities (B, 4)."""
        probabilities = self.router(x, reference)
        outputs = []
        for i, k in enumerate(probabilities.argmax(dim=-1).tolist()):
            out = self.experts[k](x[i : i + 1], reference[i : i + 1])
            if self.straight_through:
                chosen = probabilities[i, k]
                out = out * (1 - chosen.detach() + chosen)
            outputs.append(out)
        return torch.cat(outputs), probabilities


class MoME(SurvivalNetwork):
    """MoME over a patch bag and the gene families (or an MRI volume); see the module docstring.

    Outputs besides hazards, survival and risk: ``attention`` (B, N), the class token's exact softmax
    attention over the patch tokens in the last Nyström layer (heads averaged, renormalised over the
    patches; a heatmap proxy that ignores the Nyström approximation), and ``expert_probabilities``
    (B, 4 layers, 4 experts) in the order WSI 1, second 1, WSI 2, second 2 and ``EXPERTS``; the
    argmax is the expert used.
    """

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 512,
        dropout: float = 0.25,
        n_bottlenecks: int = 2,
        reference: bool = True,
    ) -> None:
        super().__init__()
        self.wsi_fc = wsi_projection(wsi_dim, dim, dropout, layers=1)
        self.second_encoder = second_tokens(omic_sizes, mri_channels, mri_depth, dim, dropout)
        layer = {"dim": dim, "n_bottlenecks": n_bottlenecks, "dropout": dropout, "straight_through": not reference}
        self.wsi_layers = nn.ModuleList(MoMELayer(**layer) for _ in range(2))
        self.second_layers = nn.ModuleList(MoMELayer(**layer) for _ in range(2))
        self.fusion_layer = AdminTransLayer(dim)
        self.register_buffer("cls_token", torch.rand(1, 1, dim))  # U(0, 1), fixed: the authors' cls_multimodal
        self.head = nn.Linear(dim, n_bins)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the per-family (B, d_i) tensors or [(B, C, D, H, W)] -> the outputs."""
        wsi_tokens, second_tokens = self.wsi_fc(wsi), self.second_encoder(second)
        routing = []
        for wsi_layer, second_layer in zip(self.wsi_layers, self.second_layers, strict=True):
            wsi_tokens, wsi_probabilities = wsi_layer(wsi_tokens, second_tokens)
            second_tokens, second_probabilities = second_layer(second_tokens, wsi_tokens)
            routing += [wsi_probabilities, second_probabilities]
        n = wsi_tokens.shape[1]
        cls = self.cls_token.expand(wsi_tokens.shape[0], -1, -1)
        tokens, first_row = self.fusion_layer.attend(torch.cat([cls, wsi_tokens, second_tokens], dim=1))
        attention = first_row[:, 1 : n + 1]
        return survival_outputs(
            self.head(tokens[:, 0]),
            attention=attention / attention.sum(dim=-1, keepdim=True),
            expert_probabilities=torch.stack(routing, dim=1),
        )

    def genomic_weights(self) -> list[torch.Tensor]:
        """The gene-family SNNs only (the additive experts' SNN blocks fuse both modalities); none with MRI."""
        return weight_matrices([self.second_encoder]) if isinstance(self.second_encoder, GeneFamilyEncoder) else []
