"""CMTA (Zhou & Chen, ICCV 2023): cross-modal translation and alignment of WSI and genomics for survival.

Paper: two parallel encoder-decoder structures, one per modality. Each encoder (Nyström
self-attention, TransMIL-style) gives an intra-modal representation; a cross-modal attention
module between the encoders and the decoders lets each modality's tokens gather the other's
information, and each decoder turns those translated tokens into a cross-modal representation of
its own modality. The cross-modal representations recalibrate the intra-modal ones before fusion,
and an alignment loss pulls each cross-modal representation towards the intra-modal one.

Authors' code (FT-ZHOU-ZZZ/CMTA, ``models/cmta/network.py``, sizes "small", fusion "concat"):

- patches: two Linear-ReLU-Dropout(0.25) layers to 256 (``wsi_projection``); gene families: two
  SNN blocks each, d_i -> 1024 -> 256 (``GeneFamilyEncoder``), six tokens;
- four class-token transformers of two pre-norm Nyström layers and a final LayerNorm, exactly the
  computation of ``model.encoders.TransMIL`` (lucidrains' Nyström attention with its zero padding
  in front to a multiple of the 128 landmarks and the 33x1 value convolution; docs/models.md
  §1.2): the pathology encoder and decoder with PPEG (square padding by repeating the first
  tokens), the genomic encoder and decoder without;
- the encoders' token outputs, the pathology ones *with* the square padding, meet in two
  single-head attentions (plain softmax attention with in/out projections, ``nn.MultiheadAttention``'s
  computation): pathology tokens query the genomic tokens (-> the pathology decoder) and genomic
  tokens query the pathology tokens (-> the genomic decoder);
- fusion: the concatenation of (encoder + decoder class token) / 2 of each modality, then
  Linear(512, 256)-ReLU-Linear(256, 256)-ReLU and a linear head to the hazards;
- loss (``models/cmta/engine.py``): NLL + alpha * (L1(P, P̂) + L1(G, Ĝ)), mean absolute
  differences between each encoder's class token, detached, and its decoder's class token
  (``auxiliary_loss``). The option default of alpha is 0.5; the README and ``run.sh`` run 1.0
  (BLCA, GBMLGG, UCEC), 100 (BRCA) and 1e-4 (LUAD); ``alignment_weight`` defaults to 1.0.

Only the paper's abstract and a third-party summary of it could be read here, not its method
section; they agree with the code as described, so there is no ``reference`` switch: this is the code.
``nystrom_padding=False`` gives sequences shorter than the landmarks exact attention instead of
Nyström over zero tokens, as in every TransMIL here (docs/models.md §1.2); the authors pad.

Initialisation as the authors' ``initialize_weights``: xavier-normal Linear weights (SNN blocks, the
attention output projections and, with MRI, the ResNet's token projection included) with zero bias,
LayerNorm (1, 0); the attention input projections keep ``nn.MultiheadAttention``'s xavier-uniform
with zero bias, the convolutions PyTorch's default, the class tokens N(0, 1e-6).

With MRI (``mri_channels``), ``VolumeTokens`` (the 3D ResNet's last-stage grid as T tokens) takes
the place of the six gene-family tokens; everything downstream is unchanged (the authors have no
MRI branch). Outputs besides hazards, survival and risk: ``attention`` (B, N), the second
modality's tokens' cross-attention over the patches (softmax over the square-padded patch tokens,
averaged over the T query tokens, restricted to the N real patches and renormalised), and the four
class tokens (B, dim) the alignment loss compares: ``wsi_intra``/``wsi_cross`` (pathology encoder /
decoder) and ``second_intra``/``second_cross`` (genomic or MRI encoder / decoder), ``loss_outputs``
that details.h5 does not keep.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.encoders import TransMIL, init_weights, second_tokens, wsi_projection
from model.survival import SurvivalNetwork, survival_outputs

if TYPE_CHECKING:
    from model.train import TrainSettings


def square_padded(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, dim) -> (B, side², dim), side = ceil(√N), repeating the first tokens (the PPEG layout).

    CMTA's cross-attention sees the padded tokens' encoder outputs, so the padding is done here and
    kept, rather than inside ``TransMIL`` (which drops it from its token output).
    """
    n = tokens.shape[1]
    side = math.ceil(math.sqrt(n))
    return torch.cat([tokens, tokens[:, : side * side - n]], dim=1)


class CMTA(SurvivalNetwork):
    """Pathology and genomic (or MRI) encoder-decoders bridged by cross-modal attention, concat fusion."""

    loss_outputs = ("wsi_intra", "wsi_cross", "second_intra", "second_cross")

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 256,
        dropout: float = 0.25,
        alignment_weight: float = 1.0,
        nystrom_padding: bool = True,
    ) -> None:
        super().__init__()
        self.alignment_weight = alignment_weight
        self.wsi_fc = wsi_projection(wsi_dim, dim, dropout)
        self.second_tokens = second_tokens(omic_sizes, mri_channels, mri_depth, dim, dropout, hidden=1024)
        self.wsi_encoder = TransMIL(dim, ppeg=True, pad_to_landmarks=nystrom_padding)
        self.wsi_decoder = TransMIL(dim, ppeg=True, pad_to_landmarks=nystrom_padding)
        self.second_encoder = TransMIL(dim, ppeg=False, pad_to_landmarks=nystrom_padding)
        self.second_decoder = TransMIL(dim, ppeg=False, pad_to_landmarks=nystrom_padding)
        # wsi_from_second: patch tokens query the second modality's tokens; second_from_wsi the reverse
        self.wsi_from_second = nn.MultiheadAttention(dim, num_heads=1, batch_first=True)
        self.second_from_wsi = nn.MultiheadAttention(dim, num_heads=1, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, n_bins)
        )
        self.apply(init_weights)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the families or [volume] -> hazards, patch attention, the four class tokens."""
        n = wsi.shape[1]
        wsi_intra, wsi_tokens, _ = self.wsi_encoder(square_padded(self.wsi_fc(wsi)))
        second_intra, second_tokens, _ = self.second_encoder(self.second_tokens(second))
        wsi_translated, _ = self.wsi_from_second(wsi_tokens, second_tokens, second_tokens, need_weights=False)
        second_translated, weights = self.second_from_wsi(second_tokens, wsi_tokens, wsi_tokens)
        wsi_cross = self.wsi_decoder(wsi_translated)[0]  # already square: the decoder adds no padding
        second_cross = self.second_decoder(second_translated)[0]
        fused = torch.cat([(wsi_intra + wsi_cross) / 2, (second_intra + second_cross) / 2], dim=-1)
        attention = weights.mean(dim=1)[:, :n]
        return survival_outputs(
            self.head(fused),
            attention=attention / attention.sum(dim=-1, keepdim=True),
            wsi_intra=wsi_intra,
            wsi_cross=wsi_cross,
            second_intra=second_intra,
            second_cross=second_cross,
        )

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """alignment_weight · (mean |P - P̂| + mean |G - Ĝ|), the encoders' class tokens P, G detached.

        P and G are targets: this term's gradient flows through P̂ and Ĝ only (the decoders, the
        cross-attention and, through the tokens it reads, the encoders), as the authors' engine.
        """
        wsi = (out["wsi_intra"].detach() - out["wsi_cross"]).abs().mean()
        second = (out["second_intra"].detach() - out["second_cross"]).abs().mean()
        return self.alignment_weight * (wsi + second)
