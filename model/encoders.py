"""Per-modality encoders of DeReF and HDMoE: SNNs for gene families, TransMIL over patch bags.

TransMIL here is the authors' configuration: pre-norm residual Nyström attention layers with no
feed-forward block (dim 256, 8 heads of 32, 128 landmarks, 6 pseudo-inverse iterations, a depthwise
33x1 convolution over the values added to the output), a class token, and for WSI bags the PPEG
position encoding between the two layers. Sequences are zero-padded at the front to a multiple of
the landmark count, as the reference does; for the 7-token genomic sequence that means attending
over 121 zero tokens, kept here because it changes the numbers (``pad_to_landmarks``).

The second modality is either the six gene families (``WSIGenomicEncoder``, as the authors coded
it) or, for MRI cohorts, a one-element list holding the (B, C, D, H, W) volume (``WSIMRIEncoder``,
a 3D ResNet as the DeReF paper describes; it has no code).
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
        """(B, L, dim) -> (B, L, dim)."""
        return self.attend(x)[0]

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output (B, L, dim) and the first token's exact attention row (B, L), averaged over heads.

        Nyström never forms the attention matrix; the row softmax(q_0 · kᵀ · scale) over the L input
        tokens (not the zero padding) costs O(L · dim) and is what a heatmap of the class token needs.
        """
        batch, n, _ = x.shape
        if not self.pad_to_landmarks and n <= self.landmarks:
            return self._exact(x)
        m = self.landmarks
        pad = (m - n % m) % m
        x = F.pad(x, (0, 0, pad, 0))  # zeros in front, as the reference
        q, k, v = self._heads(x)
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
        first_row = torch.softmax(q[:, :, pad : pad + 1] @ k[:, :, pad:].transpose(-1, -2), dim=-1)
        return self.to_out(out)[:, -n:], first_row.mean(dim=1).squeeze(1)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values split into heads: (B, heads, L, dim_head) each."""
        return tuple(
            t.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1)
        )

    def _exact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain softmax attention (what Nyström approximates) for sequences shorter than the landmarks."""
        batch, n, _ = x.shape
        q, k, v = self._heads(x)
        attention = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1)
        out = attention @ v + self.residual(v)
        return self.to_out(out.transpose(1, 2).reshape(batch, n, -1)), attention[:, :, 0].mean(dim=1)


class TransLayer(nn.Module):
    """x + NystromAttention(LayerNorm(x)); no feed-forward block, as TransMIL."""

    def __init__(self, dim: int = 256, pad_to_landmarks: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = NystromAttention(
            dim=dim, heads=8, dim_head=dim // 8, landmarks=dim // 2, pad_to_landmarks=pad_to_landmarks
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, dim) -> the layer's output (B, L, dim) and the first token's attention row (B, L)."""
        out, first_row = self.attention.attend(self.norm(x))
        return x + out, first_row


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

    ``forward`` returns the class token (B, dim), the token outputs (B, N, dim) and an attention
    map (B, N) over the N input tokens. Patch bags are padded to a square by repeating their first
    tokens, as the reference does. With ``pad_to_landmarks=False`` sequences shorter than the
    landmarks use exact softmax attention instead of Nyström over zero padding.

    The attention map is a heatmap proxy, not what produced the class token: the exact softmax
    attention of the class token in the last TransLayer, softmax(q_cls · kᵀ · scale) over the keys
    of that layer's normed input, averaged over heads, restricted to the N real tokens (the
    repeated square padding dropped) and renormalised to sum to 1. It ignores the Nyström
    approximation, the value convolution, the first layer and the PPEG mixing. Cost O(N · dim).
    """

    def __init__(self, dim: int = 256, ppeg: bool = True, pad_to_landmarks: bool = True) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
        self.layer1, self.layer2 = TransLayer(dim, pad_to_landmarks), TransLayer(dim, pad_to_landmarks)
        self.ppeg = PPEG(dim) if ppeg else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = tokens.shape[1]
        side = 0
        if self.ppeg is not None:
            side = math.ceil(math.sqrt(n))
            tokens = torch.cat([tokens, tokens[:, : side * side - n]], dim=1)
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x, _ = self.layer1(x)
        if self.ppeg is not None:
            x = self.ppeg(x, side)
        x, first_row = self.layer2(x)
        x = self.norm(x)
        attention = first_row[:, 1 : n + 1]
        return x[:, 0], x[:, 1 : n + 1], attention / attention.sum(dim=-1, keepdim=True)


def wsi_projection(wsi_dim: int, dim: int, dropout: float, layers: int = 2) -> nn.Sequential:
    """Patch features to ``dim``: Linear-ReLU-Dropout layers (two: DeReF's model size "small"; one: MCAT's, CLAM's)."""
    modules: list[nn.Module] = []
    for d_in in [wsi_dim] + [dim] * (layers - 1):
        modules += [nn.Linear(d_in, dim), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*modules)


def second_tokens(
    omic_sizes: list[int] | None, mri_channels: int | None, mri_depth: int, dim: int, dropout: float, hidden: int = 0
) -> nn.Module:
    """The second modality as tokens: one two-block SNN per gene family (``hidden`` wide; 0: ``dim``), or
    for MRI cohorts the volume's grid tokens (``VolumeTokens``); exactly one of the two is given."""
    check_second_modality(omic_sizes, mri_channels)
    if omic_sizes is not None:
        return GeneFamilyEncoder(omic_sizes, dim=dim, hidden=hidden or dim, dropout=dropout)
    return VolumeTokens(mri_channels, mri_depth, dim)


def token_transformer(
    dim: int, heads: int, feedforward: int, dropout: float, layers: int, batch_first: bool
) -> nn.TransformerEncoder:
    """torch's post-norm ReLU transformer over a token set (MCAT's, SNN-Trans's), no final norm.

    ``batch_first=False`` is MCAT's layout, which also keeps torch's fused evaluation path (batch-first
    only) out, so the arithmetic is the authors'.
    """
    layer = nn.TransformerEncoderLayer(
        d_model=dim,
        nhead=heads,
        dim_feedforward=feedforward,
        dropout=dropout,
        activation="relu",
        batch_first=batch_first,
    )
    # nested tensors only help with padding masks, which these fixed token sets never need
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


class WSIGenomicEncoder(nn.Module):
    """The encoders DeReF and HDMoE share: patch features -> TransMIL with PPEG; gene families -> SNNs -> TransMIL."""

    def __init__(
        self,
        omic_sizes: list[int],
        wsi_dim: int = 1024,
        dim: int = 256,
        dropout: float = 0.25,
        nystrom_padding: bool = True,
    ) -> None:
        super().__init__()
        self.wsi_fc = wsi_projection(wsi_dim, dim, dropout)
        self.genomic_snn = GeneFamilyEncoder(omic_sizes, dim, dropout=dropout)
        self.wsi_encoder = TransMIL(dim, ppeg=True, pad_to_landmarks=nystrom_padding)
        self.genomic_encoder = TransMIL(dim, ppeg=False, pad_to_landmarks=nystrom_padding)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, wsi_dim) bag and per-family (B, d_i) -> WSI class token, patch attention (B, N), genomic class token."""
        wsi_cls, _, attention = self.wsi_encoder(self.wsi_fc(wsi))
        genomic_cls, _, _ = self.genomic_encoder(self.genomic_snn(second))
        return wsi_cls, attention, genomic_cls


class WSIMRIEncoder(nn.Module):
    """DeReF/HDMoE encoders for MRI cohorts: the WSI side as ``WSIGenomicEncoder``, the volume through a 3D ResNet."""

    def __init__(
        self,
        mri_channels: int,
        wsi_dim: int = 1024,
        dim: int = 256,
        dropout: float = 0.25,
        mri_depth: int = 50,
        nystrom_padding: bool = True,
    ) -> None:
        super().__init__()
        from model.mri_encoder import ResNet3D  # imports torchvision, seconds; only MRI models pay for it

        self.wsi_fc = wsi_projection(wsi_dim, dim, dropout)
        self.mri_encoder = ResNet3D(mri_channels, mri_depth, dim)
        self.wsi_encoder = TransMIL(dim, ppeg=True, pad_to_landmarks=nystrom_padding)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, wsi_dim) bag and [(B, C, D, H, W)] -> WSI class token, patch attention (B, N), MRI embedding."""
        wsi_cls, _, attention = self.wsi_encoder(self.wsi_fc(wsi))
        return wsi_cls, attention, self.mri_encoder(single_volume(second))


class VolumeTokens(nn.Module):
    """MRI as tokens for the co-attention methods: [(B, C, D, H, W)] -> (B, T, dim) (``ResNet3DTokens``).

    It takes the place of the six gene-family tokens when a method is trained on an MRI cohort.
    """

    def __init__(self, mri_channels: int, mri_depth: int = 10, dim: int = 256) -> None:
        super().__init__()
        from model.mri_encoder import ResNet3DTokens  # imports torchvision, seconds; only MRI models pay for it

        self.resnet = ResNet3DTokens(mri_channels, mri_depth, dim)

    def forward(self, second: list[torch.Tensor]) -> torch.Tensor:
        return self.resnet(single_volume(second))


def single_volume(second: list[torch.Tensor]) -> torch.Tensor:
    """The MRI cohorts' second modality: a one-element list holding a (B, C, D, H, W) volume."""
    if len(second) != 1 or second[0].dim() != 5:
        shapes = [tuple(t.shape) for t in second]
        raise ValueError(f"MRI models take [volume of shape (B, C, D, H, W)]; got tensors of shapes {shapes}")
    return second[0]


def check_second_modality(omic_sizes: list[int] | None, mri_channels: int | None) -> None:
    """A model pairs the WSI (or nothing) with exactly one second modality: genomics or MRI."""
    if (omic_sizes is None) == (mri_channels is None):
        raise ValueError(
            "give exactly one of omic_sizes (genomics cohorts) and mri_channels (MRI cohorts); "
            f"got omic_sizes={omic_sizes!r}, mri_channels={mri_channels!r}"
        )


def paired_encoder(
    omic_sizes: list[int] | None,
    mri_channels: int | None,
    mri_depth: int,
    wsi_dim: int,
    dim: int,
    dropout: float = 0.25,
    nystrom_padding: bool = True,
) -> WSIGenomicEncoder | WSIMRIEncoder:
    """The DeReF/HDMoE encoders for whichever second modality is given."""
    check_second_modality(omic_sizes, mri_channels)
    if omic_sizes is not None:
        return WSIGenomicEncoder(omic_sizes, wsi_dim, dim, dropout, nystrom_padding)
    return WSIMRIEncoder(mri_channels, wsi_dim, dim, dropout, mri_depth, nystrom_padding)


def init_weights(module: nn.Module) -> None:
    """The reference's init: xavier-normal Linear weights with zero bias (SNNs included), LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
