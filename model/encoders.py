"""Per-modality encoders of DeReF and HDMoE: SNNs for gene families, TransMIL over patch bags.

TransMIL here is the authors' configuration: pre-norm residual Nyström attention layers with no
feed-forward block (dim 256, 8 heads of 32, 128 landmarks, 6 pseudo-inverse iterations, a depthwise
33x1 convolution over the values added to the output), a class token, and for WSI bags the PPEG
position encoding between the two layers. Sequences are zero-padded at the front to a multiple of
the landmark count, as the reference does; for the 7-token genomic sequence that means attending
over 121 zero tokens, kept here because it changes the numbers (``pad_to_landmarks``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SNNBlock(nn.Sequential):
    """Linear -> ELU -> AlphaDropout, the self-normalising block of the reference."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.25) -> None:
        super().__init__(nn.Linear(d_in, d_out), nn.ELU(), nn.AlphaDropout(dropout))


class GeneFamilyEncoder(nn.Module):
    """One two-block SNN per gene family: (B, d_i) for each family -> (B, n_families, dim)."""

    def __init__(self, family_sizes: list[int], dim: int = 256, hidden: int = 1024, dropout: float = 0.25) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(SNNBlock(d, hidden, dropout), SNNBlock(hidden, dim, dropout)) for d in family_sizes
        )

    def forward(self, families: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([net(x) for net, x in zip(self.nets, families, strict=True)], dim=1)


def moore_penrose_pinv(x: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Iterative Moore-Penrose pseudo-inverse used by Nyströmformer (Razavi et al. initialisation)."""
    absolute = x.abs()
    z = x.transpose(-1, -2) / (absolute.sum(dim=-1).amax() * absolute.sum(dim=-2).amax())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Nyström self-attention with landmark means, an iterative pseudo-inverse and a value convolution."""

    def __init__(
        self,
        dim: int = 256,
        heads: int = 8,
        dim_head: int = 32,
        landmarks: int = 128,
        pinv_iterations: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.1,
        pad_to_landmarks: bool = True,
    ) -> None:
        super().__init__()
        self.heads, self.landmarks, self.pinv_iterations = heads, landmarks, pinv_iterations
        self.pad_to_landmarks = pad_to_landmarks
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))
        self.residual = nn.Conv2d(
            heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0), groups=heads, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, _ = x.shape
        if not self.pad_to_landmarks and n <= self.landmarks:
            return self._exact(x)
        m = self.landmarks
        pad = (m - n % m) % m
        x = F.pad(x, (0, 0, pad, 0))  # zeros in front, as the reference
        q, k, v = (
            t.reshape(batch, x.shape[1], self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        q = q * self.scale
        per = x.shape[1] // m
        q_land = q.reshape(batch, self.heads, m, per, -1).mean(dim=3)
        k_land = k.reshape(batch, self.heads, m, per, -1).mean(dim=3)
        kernel1 = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)
        kernel2 = torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1)
        kernel3 = torch.softmax(q_land @ k.transpose(-1, -2), dim=-1)
        out = (kernel1 @ moore_penrose_pinv(kernel2, self.pinv_iterations)) @ (kernel3 @ v)
        out = out + self.residual(v)
        out = out.transpose(1, 2).reshape(batch, x.shape[1], -1)
        return self.to_out(out)[:, -n:]

    def _exact(self, x: torch.Tensor) -> torch.Tensor:
        """Plain softmax attention (what Nyström approximates) for sequences shorter than the landmarks."""
        batch, n, _ = x.shape
        q, k, v = (t.reshape(batch, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1) @ v + self.residual(v)
        return self.to_out(out.transpose(1, 2).reshape(batch, n, -1))


class TransLayer(nn.Module):
    """x + NystromAttention(LayerNorm(x)); no feed-forward block, as TransMIL."""

    def __init__(self, dim: int = 256, pad_to_landmarks: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = NystromAttention(
            dim=dim, heads=8, dim_head=dim // 8, landmarks=dim // 2, pad_to_landmarks=pad_to_landmarks
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.norm(x))


class PPEG(nn.Module):
    """Pyramid position encoding: depthwise 7/5/3 convolutions over the patch tokens laid out on a square."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        cls, tokens = x[:, :1], x[:, 1:]
        grid = tokens.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(nn.Module):
    """Class-token transformer over a bag: two TransLayers, PPEG between them for patch bags.

    ``forward`` returns the class token (B, dim) and the token outputs (B, N, dim). Patch bags are
    padded to a square by repeating their first tokens, as the reference does. With
    ``pad_to_landmarks=False`` sequences shorter than the landmarks use exact softmax attention
    instead of Nyström over zero padding.
    """

    def __init__(self, dim: int = 256, ppeg: bool = True, pad_to_landmarks: bool = True) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
        self.layer1, self.layer2 = TransLayer(dim, pad_to_landmarks), TransLayer(dim, pad_to_landmarks)
        self.ppeg = PPEG(dim) if ppeg else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = tokens.shape[1]
        side = 0
        if self.ppeg is not None:
            side = math.ceil(math.sqrt(n))
            tokens = torch.cat([tokens, tokens[:, : side * side - n]], dim=1)
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = self.layer1(x)
        if self.ppeg is not None:
            x = self.ppeg(x, side)
        x = self.norm(self.layer2(x))
        return x[:, 0], x[:, 1 : n + 1]


class WSIGenomicEncoder(nn.Module):
    """The encoders DeReF and HDMoE share: patch features -> TransMIL with PPEG; gene families -> SNNs -> TransMIL.

    Patch features first pass two Linear-ReLU-Dropout layers to ``dim`` (model size "small").
    """

    def __init__(
        self,
        omic_sizes: list[int],
        wsi_dim: int = 1024,
        dim: int = 256,
        dropout: float = 0.25,
        genomic_padding: bool = True,
    ) -> None:
        super().__init__()
        self.wsi_fc = nn.Sequential(
            nn.Linear(wsi_dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.genomic_snn = GeneFamilyEncoder(omic_sizes, dim, dropout=dropout)
        self.wsi_encoder = TransMIL(dim, ppeg=True)
        self.genomic_encoder = TransMIL(dim, ppeg=False, pad_to_landmarks=genomic_padding)

    def forward(self, wsi: torch.Tensor, omics: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, wsi_dim) bag and per-family (B, d_i) -> WSI class token, patch tokens, genomic class token."""
        wsi_cls, patch_tokens = self.wsi_encoder(self.wsi_fc(wsi))
        genomic_cls, _ = self.genomic_encoder(self.genomic_snn(omics))
        return wsi_cls, patch_tokens, genomic_cls


def init_weights(module: nn.Module) -> None:
    """The reference's init: xavier-normal Linear weights with zero bias (SNNs included), LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
