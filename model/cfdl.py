"""CFDL (Liu et al., arXiv 2407.04916, JBHI 2025): complete feature disentanglement with a dynamic MoE fusion.

Paper (read through its abstract and published summaries; the full text was not available here): a
multimodal MRI classifier. Complete Feature Disentanglement splits the modalities' features into a
modality-shared feature, one modality-specific feature per modality and modality-partial-shared features
(one per subset of two or more modalities smaller than the whole set); the Dynamic Mixture-of-Experts
Fusion (DMF) weighs the decoupled features with a gating network (LinG_GN) that reads their
local-global relationships.

Authors' code (IsDling/CFDL, ``models/CFDL.py`` with ``main.py``'s option defaults), which we follow:

- one encoder per modality (a 3D ResNet-18 to its pooled 512-d vector), then ``Dropout(0.5)``;
- disentanglement heads, each ReLU -> Linear(512, 32): one shared head applied to every modality (the
  modality-shared feature is the mean of its outputs), one specific head per modality, and per
  partial subset one head applied to each member (its feature the mean);
- DMF (``MoE``, ``gating_type='importance'``, ``moe_fusion_type='concat'``): expert e is ReLU ->
  Linear(32, 32) on decoupled feature e; the gate (LinG_GN) maps the flattened features through
  ReLU -> Linear(E·32, 32) to one global vector g and weighs expert e's output by softmax_e(x_e · g);
  the output is the concatenation of the weighted expert outputs (E·32);
- classifier Linear(E·32, 32)-ReLU-Dropout(0.5)-Linear(32, 32)-ReLU-Dropout(0.5)-Linear(32, classes);
- loss = CE + w_sim · Σ_pairs MSE(shared_i, shared_j) (every pair of modalities' shared-head outputs,
  and of each partial subset's members) + w_diff · Σ_pairs mean_b |cos(a, b)| over every pair of fused
  features, ``w_sim = w_diff = 1``; PyTorch's default init (the code applies none). Options off by
  default are not built: per-feature auxiliary classifiers (``ifmoe_aux``) and a centre loss on the gate
  weights (``if_ccl``, whose ``CC_Loss`` the code never defines).

The DeReF paper's setting has two modalities, the WSI and the gene families (or an MRI volume), so
there are no partial-shared subsets (the code's ``ifdis_sup`` adds nothing) and the DMF fuses three
features: [shared, WSI-specific, second-specific]. ``DisentangledFusion`` computes the heads, DMF and
classifier as the code does for M modalities without partial-shared features; the tests compare it with
their forward for three and four modalities and with their modules built for two. The classifier's
classes become ``n_bins`` sigmoid hazards and CE the survival NLL (training adds it); the two
disentanglement terms are ``auxiliary_loss``. Without the paper's full text no paper-versus-code
difference could be established, so there is no ``reference`` switch.

Encoders (ours; the authors' 3D ResNets cannot read a patch bag or genes): the WSI through
``GatedAttentionPool`` (ABMIL's gated attention: the attention output is what pools the bag), the gene
families concatenated through MCAT's two-block SNN (``ConcatenatedSNN``), or with ``mri_channels`` the
volume through ``ResNet3D`` (depth ``mri_depth``; the authors' own default is 18), each to ``dim``
(the 3D ResNet through its final Linear, where the authors' heads read the pooled 512 directly): the
encoders of ``ConcatMLP``. Each embedding then gets the authors' encoder dropout. PyTorch's default
init throughout (torchvision's for the 3D ResNet), as the authors' heads and ``ConcatMLP``.

Outputs besides hazards, survival, risk and ``attention`` (B, N): ``shared`` and ``specific`` (B, 2,
feature_dim), each head's output for the WSI and the second modality, and ``gates`` (B, 3), the DMF
weights of [shared, WSI-specific, second-specific].
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from model.baselines import ConcatenatedSNN, GatedAttentionPool
from model.encoders import check_second_modality, single_volume
from model.survival import SurvivalNetwork, survival_outputs

if TYPE_CHECKING:
    from model.train import TrainSettings

CLASSIFIER_HIDDEN = 32  # the authors' second classifier layer is 32 wide whatever the feature width


def relu_linear(d_in: int, d_out: int) -> nn.Sequential:
    """ReLU -> Linear: every CFDL head, expert and the gate's global projection has this shape."""
    return nn.Sequential(nn.ReLU(), nn.Linear(d_in, d_out))


class ModalityDisentanglement(nn.Module):
    """Per modality, a shared feature (one head for all modalities) and a specific one (a head each)."""

    def __init__(self, in_dim: int, feature_dim: int, n_modalities: int) -> None:
        super().__init__()
        self.shared = relu_linear(in_dim, feature_dim)
        self.specific = nn.ModuleList(relu_linear(in_dim, feature_dim) for _ in range(n_modalities))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """M tensors (B, in_dim) -> shared and specific features, (B, M, feature_dim) each."""
        shared = torch.stack([self.shared(x) for x in features], dim=1)
        specific = torch.stack([head(x) for head, x in zip(self.specific, features, strict=True)], dim=1)
        return shared, specific


class LocalGlobalGate(nn.Module):
    """LinG_GN: weights of E features from their agreement with one global vector read from all of them.

    g = Linear(E·F, F)(ReLU(flattened features)); weight_e = softmax_e(x_e · g).
    """

    def __init__(self, feature_dim: int, n_features: int) -> None:
        super().__init__()
        self.global_fc = relu_linear(feature_dim * n_features, feature_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, E, F) -> (B, E), summing to 1 over the features."""
        summary = self.global_fc(features.flatten(1))
        return torch.softmax((features @ summary.unsqueeze(-1)).squeeze(-1), dim=-1)


class DynamicExpertFusion(nn.Module):
    """DMF: one ReLU-Linear expert per decoupled feature, weighted by LinG_GN and concatenated."""

    def __init__(self, feature_dim: int, n_features: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(relu_linear(feature_dim, feature_dim) for _ in range(n_features))
        self.gate = LocalGlobalGate(feature_dim, n_features)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, E, F) -> the fused vector (B, E·F) and the gate weights (B, E)."""
        weights = self.gate(features)
        experts = torch.stack([expert(features[:, e]) for e, expert in enumerate(self.experts)], dim=1)
        return (experts * weights.unsqueeze(-1)).flatten(1), weights


class DisentangledFusion(nn.Module):
    """CFDL after its encoders, for M modalities without partial-shared features: heads, DMF, classifier.

    The fused features are [mean of the shared features, specific_0, ..., specific_{M-1}], in the
    authors' order. Returns the logits (B, n_out), ``shared`` and ``specific`` (B, M, F) and ``gates``.
    """

    def __init__(
        self, in_dim: int, feature_dim: int, n_modalities: int, n_out: int, classifier_dropout: float = 0.5
    ) -> None:
        super().__init__()
        n_features = n_modalities + 1
        self.disentangle = ModalityDisentanglement(in_dim, feature_dim, n_modalities)
        self.fusion = DynamicExpertFusion(feature_dim, n_features)
        self.classifier = nn.Sequential(
            nn.Linear(feature_dim * n_features, feature_dim),
            nn.ReLU(),
            nn.Dropout(classifier_dropout),
            nn.Linear(feature_dim, CLASSIFIER_HIDDEN),
            nn.ReLU(),
            nn.Dropout(classifier_dropout),
            nn.Linear(CLASSIFIER_HIDDEN, n_out),
        )

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        shared, specific = self.disentangle(features)
        fused, gates = self.fusion(torch.cat([shared.mean(dim=1, keepdim=True), specific], dim=1))
        return {"logits": self.classifier(fused), "shared": shared, "specific": specific, "gates": gates}


def similarity_loss(shared: torch.Tensor) -> torch.Tensor:
    """Σ over modality pairs of the mean squared difference of their shared features (the code's ``l2norm``)."""
    return sum(F.mse_loss(shared[:, i], shared[:, j]) for i, j in combinations(range(shared.shape[1]), 2))


def difference_loss(shared: torch.Tensor, specific: torch.Tensor) -> torch.Tensor:
    """Σ over pairs of fused features (the mean shared one and each specific) of the batch mean |cosine|."""
    fused = [shared.mean(dim=1), *specific.unbind(dim=1)]
    return sum(F.cosine_similarity(a, b, dim=-1).abs().mean() for a, b in combinations(fused, 2))


class CFDL(SurvivalNetwork):
    """CFDL for two modalities, the WSI and the gene families or an MRI volume (see the module docstring)."""

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 256,
        dropout: float = 0.25,
        feature_dim: int = 32,
        encoder_dropout: float = 0.5,
        classifier_dropout: float = 0.5,
        similarity_weight: float = 1.0,
        difference_weight: float = 1.0,
    ) -> None:
        super().__init__()
        check_second_modality(omic_sizes, mri_channels)
        self.similarity_weight, self.difference_weight = similarity_weight, difference_weight
        self.wsi_pool = GatedAttentionPool(wsi_dim, dim, dropout)
        self.mri = mri_channels is not None
        if self.mri:
            from model.mri_encoder import ResNet3D  # imports torchvision, seconds; only MRI models pay for it

            self.second_encoder: nn.Module = ResNet3D(mri_channels, mri_depth, dim)
        else:
            self.second_encoder = ConcatenatedSNN(omic_sizes, dim, dropout)
        self.encoder_dropout = nn.Dropout(encoder_dropout)
        self.fusion = DisentangledFusion(dim, feature_dim, 2, n_bins, classifier_dropout)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the families or [volume] -> hazards, patch attention and the decoupled features."""
        pooled, attention = self.wsi_pool(wsi)
        embedding = self.second_encoder(single_volume(second) if self.mri else second)
        out = self.fusion([self.encoder_dropout(pooled), self.encoder_dropout(embedding)])
        return survival_outputs(
            out["logits"], attention=attention, shared=out["shared"], specific=out["specific"], gates=out["gates"]
        )

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """w_sim · shared-feature MSE + w_diff · |cosine| between the fused features (labels unused)."""
        return self.similarity_weight * similarity_loss(out["shared"]) + self.difference_weight * difference_loss(
            out["shared"], out["specific"]
        )
