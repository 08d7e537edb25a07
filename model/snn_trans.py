"""SNN-Trans: a genomics-only transformer over gene-family tokens (a comparison method of DeReF's Table III).

The DeReF paper cites it to Klambauer et al.'s self-normalising networks and takes its numbers
from the tables of CMTA (Zhou & Chen, ICCV 2023); neither paper describes the architecture and
neither group published code for it. This follows the only public implementation found, a
third-party ``Genomic_SNN_Transformer_MIL`` (written here in our own code): each of the six gene
families through its own two 256-wide SNN blocks (MCAT's ``sig_networks``) gives six tokens, a
two-layer post-norm transformer encoder (8 heads, feed-forward 512, ReLU, dropout 0.25) mixes them,
gated attention with a softmax over the six tokens pools them, and a linear head gives the hazards.

Differences from that implementation: it runs sequence-first and squeezes the batch, so it only
takes one patient; here the tokens are batch-first and any batch size works (training stacks
genomics-only patients into one forward). Its SNN blocks always use dropout 0.25; here ``dropout``
sets all three dropouts (0.25 by default, so the defaults agree).

Initialisation: PyTorch's default, as that implementation (it has no init call) and as MCAT's own
transformer model over the same family SNNs (``MCAT_Surv``); MCAT applies its LeCun-normal
``init_max_weights`` only to the standalone SNN. As in both, ``nn.TransformerEncoder`` copies one
freshly built layer, so the transformer's layers start from identical weights.

Beyond the survival outputs, ``family_attention`` (B, 6) holds the pooling weights over the family
tokens (they sum to 1); it is saved per patient to details.h5. There is no patch attention.
"""

from __future__ import annotations

import torch
from torch import nn

from model.baselines import GatedAttention
from model.encoders import GeneFamilyEncoder, token_transformer
from model.survival import SurvivalNetwork, survival_outputs, weight_matrices


class SNNTrans(SurvivalNetwork):
    """Genomics only: per-family SNN tokens, a transformer encoder, gated-attention pooling, a linear head."""

    def __init__(
        self,
        omic_sizes: list[int],
        n_bins: int = 4,
        dim: int = 256,
        dropout: float = 0.25,
        layers: int = 2,
        heads: int = 8,
        feedforward: int = 512,
    ) -> None:
        super().__init__()
        self.families = GeneFamilyEncoder(omic_sizes, dim=dim, hidden=dim, dropout=dropout)
        self.transformer = token_transformer(dim, heads, feedforward, dropout, layers, batch_first=True)
        self.gate = GatedAttention(dim, dim, dropout)
        self.head = nn.Linear(dim, n_bins)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The bag is ignored; ``second`` is the list of per-family (B, d_i) tensors."""
        pooled, family_attention = self.gate.pool(self.transformer(self.families(second)))
        return survival_outputs(self.head(pooled), family_attention=family_attention)

    def genomic_weights(self) -> list[torch.Tensor]:
        """The whole network is genomic: every weight matrix (MCAT's ``l1_reg_all`` for genomics-only models)."""
        return weight_matrices([self])
