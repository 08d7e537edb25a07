"""Unimodal and late-fusion baselines under the same contract as DeReF and HDMoE.

Each takes ``forward(wsi, second)`` (and ignores the modality it does not use) and returns the
per-bin sigmoid hazards with their survival curve and risk; the WSI models add the patch
attention (B, N). The MRI models import the 3D ResNet (and torchvision) only when built.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.encoders import SNNBlock, TransMIL, check_second_modality, init_weights, single_volume, wsi_projection
from model.survival import SurvivalNetwork, survival_outputs, weight_matrices


def _lecun_normal(module: nn.Module) -> None:
    """MCAT's ``init_max_weights``: N(0, 1/fan_in) Linear weights and zero bias, which SNNs rely on."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 1.0 / math.sqrt(module.weight.shape[1]))
        nn.init.zeros_(module.bias)


class ConcatenatedSNN(nn.Sequential):
    """The gene families concatenated -> two SNN blocks to ``dim`` (MCAT's genomic branch, ``fc_omic``)."""

    def __init__(self, omic_sizes: list[int], dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__(SNNBlock(sum(omic_sizes), dim, dropout), SNNBlock(dim, dim, dropout))

    def forward(self, families: list[torch.Tensor]) -> torch.Tensor:
        return super().forward(torch.cat(families, dim=-1))


class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al. 2018; CLAM/MCAT ``Attn_Net_Gated``): one score per token and head.

    score = Linear(hidden, heads)(tanh branch ⊙ sigmoid branch), each branch Linear(in_dim, hidden)
    followed by dropout; unnormalised, so callers choose the softmax (over patches, per head).
    """

    def __init__(self, in_dim: int = 256, hidden: int = 256, dropout: float = 0.25, heads: int = 1) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(in_dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(hidden, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, in_dim) -> (B, N, heads)."""
        return self.attention_c(self.attention_a(x) * self.attention_b(x))

    def pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One head: (B, N, in_dim) -> the softmax-weighted sum (B, in_dim) and the weights (B, N)."""
        weights = torch.softmax(self(x).squeeze(-1), dim=-1)
        return (weights.unsqueeze(1) @ x).squeeze(1), weights


class GatedAttentionPool(nn.Module):
    """Gated attention MIL pooling over a patch bag (ABMIL; MCAT's ``MIL_Attention_FC_surv``).

    Linear(wsi_dim, dim)-ReLU-Dropout per patch, ``GatedAttention`` scores, softmax over the
    patches, attention-weighted sum of the patch embeddings.
    """

    def __init__(self, wsi_dim: int = 1024, dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        self.fc = wsi_projection(wsi_dim, dim, dropout, layers=1)
        self.gate = GatedAttention(dim, dim, dropout)

    def forward(self, wsi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, wsi_dim) -> pooled embedding (B, dim) and attention (B, N) summing to 1."""
        return self.gate.pool(self.fc(wsi))


class SNN(SurvivalNetwork):
    """Genomics only: MCAT's self-normalising network over the concatenated gene families.

    Two SNN blocks and a linear head, with MCAT's LeCun-normal init. (MCAT's standalone ``SNN``
    "small" stacks four 256-wide blocks; its fusion models' genomic branch, used here, has two.)
    """

    def __init__(self, omic_sizes: list[int], n_bins: int = 4, hidden: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        self.encoder = ConcatenatedSNN(omic_sizes, hidden, dropout)
        self.head = nn.Linear(hidden, n_bins)
        self.apply(_lecun_normal)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The bag is ignored; ``second`` is the list of per-family (B, d_i) tensors."""
        return survival_outputs(self.head(self.encoder(second)))

    def genomic_weights(self) -> list[torch.Tensor]:
        """The whole network is genomic: every weight matrix, head included (MCAT's ``l1_reg_all``)."""
        return weight_matrices([self])


class ABMIL(SurvivalNetwork):
    """WSI only: MCAT's ``MIL_Attention_FC_surv`` without fusion (gated attention, rho, linear head).

    MCAT's size "small" is 1024 -> 512 -> 256; here every width is ``dim``. PyTorch's default
    init, as MCAT.
    """

    def __init__(self, wsi_dim: int = 1024, n_bins: int = 4, dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        self.pool = GatedAttentionPool(wsi_dim, dim, dropout)
        self.rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(dim, n_bins)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag -> hazards and patch attention; ``second`` is ignored."""
        pooled, attention = self.pool(wsi)
        return survival_outputs(self.head(self.rho(pooled)), attention=attention)


class TransMILSurvival(SurvivalNetwork):
    """WSI only: TransMIL (Shao et al. 2021) as DeReF/HDMoE configure it, with a linear survival head.

    One Linear-ReLU-Dropout to ``dim``, the class-token TransMIL with PPEG, and the reference's
    xavier init. The attention is TransMIL's heatmap proxy (see ``model.encoders.TransMIL``).
    """

    def __init__(
        self, wsi_dim: int = 1024, n_bins: int = 4, dim: int = 256, dropout: float = 0.25, nystrom_padding: bool = True
    ) -> None:
        super().__init__()
        self.fc = wsi_projection(wsi_dim, dim, dropout, layers=1)
        self.encoder = TransMIL(dim, ppeg=True, pad_to_landmarks=nystrom_padding)
        self.head = nn.Linear(dim, n_bins)
        self.apply(init_weights)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag -> hazards and patch attention; ``second`` is ignored."""
        cls, _, attention = self.encoder(self.fc(wsi))
        return survival_outputs(self.head(cls), attention=attention)


class ConcatMLP(SurvivalNetwork):
    """Late fusion: gated-attention WSI embedding concatenated with the second modality's, then an MLP.

    The second modality is the gene families (the SNN branch of MCAT's concat fusion) or an MRI
    volume (3D ResNet); give exactly one of ``omic_sizes`` and ``mri_channels``. PyTorch's default
    init, as MCAT's fusion models.
    """

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 256,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        check_second_modality(omic_sizes, mri_channels)
        self.pool = GatedAttentionPool(wsi_dim, dim, dropout)
        self.mri = mri_channels is not None
        if self.mri:
            from model.mri_encoder import ResNet3D  # imports torchvision, seconds; only MRI models pay for it

            self.second_encoder: nn.Module = ResNet3D(mri_channels, mri_depth, dim)
        else:
            self.second_encoder = ConcatenatedSNN(omic_sizes, dim, dropout)
        self.head = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, n_bins))

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the families or [volume] -> hazards and patch attention."""
        pooled, attention = self.pool(wsi)
        embedding = self.second_encoder(single_volume(second) if self.mri else second)
        return survival_outputs(self.head(torch.cat([pooled, embedding], dim=-1)), attention=attention)


class MRIResNet(SurvivalNetwork):
    """MRI only: the 3D ResNet of the paper's MRI branch with a linear survival head (torchvision's init)."""

    def __init__(self, mri_channels: int, n_bins: int = 4, mri_depth: int = 10, dim: int = 256) -> None:
        super().__init__()
        from model.mri_encoder import ResNet3D  # imports torchvision, seconds; only MRI models pay for it

        self.encoder = ResNet3D(mri_channels, mri_depth, dim)
        self.head = nn.Linear(dim, n_bins)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``second`` is [(B, C, D, H, W)]; the bag is ignored."""
        return survival_outputs(self.head(self.encoder(single_volume(second))))
