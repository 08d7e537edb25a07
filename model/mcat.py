"""MCAT (Chen et al., ICCV 2021): genomic-guided co-attention over the patch bag, then two token transformers.

Paper: each gene family's embedding is a query that attends over the patch embeddings (the
genomic-guided co-attention layer), giving one "co-attended" patch token per family; a set-based
transformer with gated attention pooling summarises these tokens, another summarises the family
tokens themselves, and the two summaries are concatenated into an MLP and a hazard head.

Authors' code (mahmoodlab/MCAT, ``MCAT_Surv`` with its default ``fusion='concat'``): patches
Linear(1024, 256)-ReLU-Dropout; one SNN per family, two 256-wide blocks (``GeneFamilyEncoder``);
co-attention with one head (their copy of torch's ``MultiheadAttention``, which returns the
pre-softmax scores but computes the same output); per branch a two-layer post-norm
``nn.TransformerEncoder`` (8 heads, feed-forward 512, ReLU, dropout 0.25), ``Attn_Net_Gated``
scores with a softmax over the tokens, a weighted sum and Linear-ReLU-Dropout ("rho"); the fusion
Linear(512, 256)-ReLU-Linear(256, 256)-ReLU and a linear head. PyTorch's default init throughout
(``MCAT_Surv`` never calls ``init_max_weights``); the co-attention's in-projection is
xavier-uniform with zero biases, as torch's own module. We found no difference between the paper
and the code that changes the network, so there is no ``reference`` switch.

Here: torch's ``nn.MultiheadAttention`` carries the authors' co-attention weights exactly (same
``in_proj_weight`` and ``out_proj``); the transformers run sequence-first as theirs, which also
keeps torch's fused evaluation fast path (batch-first only) out, so the arithmetic is theirs.
``dim`` sets every width (256 in the authors' code), ``dropout`` every dropout (theirs hard-code
0.25 in the patch and SNN layers; the defaults agree). The authors' forward takes one patient;
this one takes a batch.

The co-attended path tokens are one per genomic token, not per patch, so the gated attention of
the path branch is not a patch attention. ``attention`` (B, N) is instead the co-attention matrix
averaged over the genomic queries: each query's softmax row sums to 1 over the N patches, so the
average does too. No other outputs (no auxiliary loss).

With MRI (``mri_channels``), ``VolumeTokens`` (the 3D ResNet's last-stage grid, T tokens) replaces
the six family tokens as the queries and as the second branch's tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from model.baselines import GatedAttention
from model.encoders import second_tokens, token_transformer, wsi_projection
from model.survival import SurvivalNetwork, survival_outputs


class TokenPool(nn.Module):
    """One branch after the co-attention: transformer, gated attention over the tokens, weighted sum, rho."""

    def __init__(self, dim: int, heads: int, feedforward: int, dropout: float, layers: int) -> None:
        super().__init__()
        self.transformer = token_transformer(dim, heads, feedforward, dropout, layers, batch_first=False)
        self.gate = GatedAttention(dim, dim, dropout)
        self.rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, dim)."""
        pooled, _ = self.gate.pool(self.transformer(tokens.transpose(0, 1)).transpose(0, 1))
        return self.rho(pooled)


class GenomicGuidedCoAttention(nn.Module):
    """Each genomic token queries the patches: softmax(q kᵀ / sqrt(dim)) v, one head, then the output projection."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads=1)

    def forward(self, queries: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, dim) queries, (B, N, dim) patches -> co-attended tokens (B, T, dim), weights (B, T, N)."""
        keys = patches.transpose(0, 1)
        tokens, weights = self.attention(queries.transpose(0, 1), keys, keys, need_weights=True)
        return tokens.transpose(0, 1), weights


class CoAttentionSurvival(SurvivalNetwork):
    """MCAT's network around a co-attention module: MCAT passes its softmax attention, MOTCat its transport plan.

    ``co_attention(queries, patches)`` returns the co-attended tokens (B, T, dim) and its weights
    (B, T, N); ``attention`` is those weights' patch marginal, normalised to sum to 1.
    """

    def __init__(
        self,
        co_attention: nn.Module,
        wsi_dim: int,
        n_bins: int,
        omic_sizes: list[int] | None,
        mri_channels: int | None,
        mri_depth: int,
        dim: int,
        dropout: float,
        heads: int,
        feedforward: int,
        layers: int,
    ) -> None:
        super().__init__()
        self.wsi_fc = wsi_projection(wsi_dim, dim, dropout, layers=1)
        self.second_encoder = second_tokens(omic_sizes, mri_channels, mri_depth, dim, dropout)
        self.co_attention = co_attention
        self.path_pool = TokenPool(dim, heads, feedforward, dropout, layers)
        self.second_pool = TokenPool(dim, heads, feedforward, dropout, layers)
        self.fusion = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.head = nn.Linear(dim, n_bins)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the families (or [volume]) -> hazards and the patch attention (B, N)."""
        return self.from_tokens(wsi, self.second_encoder(second))

    def from_tokens(self, wsi: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network after the second modality's encoder: (B, N, wsi_dim) bag, (B, T, dim) tokens."""
        patches = self.wsi_fc(wsi)
        co_attended, weights = self.co_attention(tokens, patches)
        fused = self.fusion(torch.cat([self.path_pool(co_attended), self.second_pool(tokens)], dim=-1))
        marginal = weights.sum(dim=1)
        return survival_outputs(self.head(fused), attention=marginal / marginal.sum(dim=-1, keepdim=True))


class MCAT(CoAttentionSurvival):
    """MCAT: genomic-guided softmax co-attention (one head) between the genomic tokens and the patches."""

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 256,
        dropout: float = 0.25,
        heads: int = 8,
        feedforward: int = 512,
        layers: int = 2,
    ) -> None:
        super().__init__(
            GenomicGuidedCoAttention(dim),
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
