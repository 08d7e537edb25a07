"""DeReF: Decouple, Reorganize, and Fuse (per-modality encoders, RCA decoupling, RFR, dense MoE).

The default follows the paper's text (Algorithm 1 as written, segment lengths {2, 8, 16, 32, 64},
gate softmax(W · V_fusion) over N experts, MLPs without a final ReLU). ``DeReFOptions.reference()``
reproduces the authors' code where it differs, one switch per difference (docs/models.md §1.9):

- ``rca``: "reference" swaps the vectors of Algorithm 1 and takes one softmax over each full row
  of M before slicing; "paper" softmaxes each sub-block over the summed axis.
- ``segments``: "reference" draws the number of segments L from {2, 4, ..., 64}.
- ``gate``: "reference" is one shared Linear(128 -> 1) over the four un-reorganised features,
  softmax across them, which ties the expert count to 4.
- ``final_relu``: a ReLU after the specific encoders and the experts.
- ``nystrom_padding``: Nyström zero-token padding of sequences shorter than the 128 landmarks (the
  7-token genomic sequence; WSI bags under 128 patches); off, they get the exact softmax attention
  that Nyström approximates.
- ``test_rfr``: at evaluation, "average" takes the mean hazards over every segment choice
  (deterministic); "random" draws one choice per call from a seeded generator, as the reference.

The second modality is the six gene families (``omic_sizes``) or, for MRI cohorts as in the paper,
a volume encoded by a 3D ResNet (``mri_channels``, ``mri_depth``; the paper's is depth 50).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.encoders import init_weights, paired_encoder
from model.losses import decoupling_loss
from model.reorganise import reorganise, segment_counts
from model.survival import SurvivalNetwork, risk_score, survival_curve

if TYPE_CHECKING:
    from model.train import TrainSettings


@dataclass(frozen=True)
class DeReFOptions:
    """Switches between the paper's text (defaults) and the authors' code (``reference()``)."""

    rca: str = "paper"
    segments: str = "paper"
    gate: str = "paper"
    n_experts: int = 4
    final_relu: bool = False
    nystrom_padding: bool = False
    test_rfr: str = "average"
    dropout: float = 0.25

    @classmethod
    def reference(cls) -> DeReFOptions:
        return cls(
            rca="reference",
            segments="reference",
            gate="reference",
            n_experts=4,
            final_relu=True,
            nystrom_padding=True,
            test_rfr="random",
        )

    def __post_init__(self) -> None:
        if self.gate == "reference" and self.n_experts != 4:
            raise ValueError("the reference gate weighs the 4 decoupled features, so it needs exactly 4 experts")
        for name, value, allowed in (
            ("rca", self.rca, ("paper", "reference")),
            ("segments", self.segments, ("paper", "reference")),
            ("gate", self.gate, ("paper", "reference")),
            ("test_rfr", self.test_rfr, ("average", "random")),
        ):
            if value not in allowed:
                raise ValueError(f"DeReF option {name}={value!r}; choose one of {allowed}")


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float, final_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)]
    if final_relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RegionalCrossAttention(nn.Module):
    """Algorithm 1: shared (or explore) feature from regions of the cross-attention matrix M = X1ᵀ X2."""

    def __init__(self, d_in: int = 256, d_out: int = 128, reference: bool = False) -> None:
        super().__init__()
        self.fc_m, self.fc_p = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)
        self.reference = reference

    def forward(self, second: torch.Tensor, pathology: torch.Tensor) -> torch.Tensor:
        """(B, d_in) second-modality and WSI class tokens -> (B, d_out)."""
        a, b = self.fc_m(second), self.fc_p(pathology)
        c = a.shape[-1]
        x1, x2 = torch.cat([a, b], dim=-1), torch.cat([b, a], dim=-1)
        m = x1.unsqueeze(-1) * x2.unsqueeze(-2)  # (B, 2C, 2C), M_ij = x1_i x2_j
        if self.reference:
            attention = torch.softmax(m, dim=-1)
            out1 = (x2.unsqueeze(1) @ attention[:, :, :c]).squeeze(1)
            out2 = (attention[:, :c, :] @ x1.unsqueeze(-1)).squeeze(-1)
        else:
            left = torch.softmax(m[:, :, :c], dim=1)  # [M_m1m2; M_m2m2], normalised over the summed axis
            top = torch.softmax(m[:, :c, :].transpose(1, 2), dim=1)  # [M_m1m2, M_m1m1]ᵀ
            out1 = (x1.unsqueeze(1) @ left).squeeze(1)
            out2 = (x2.unsqueeze(1) @ top).squeeze(1)
        return (out1 + out2) / 2


class DeReF(SurvivalNetwork):
    """WSI bag + gene families or MRI volume -> per-bin hazards, decoupled features, gate, patch attention.

    Give exactly one of ``omic_sizes`` (genomics cohorts) and ``mri_channels`` (MRI cohorts).
    """

    def __init__(
        self,
        omic_sizes: list[int] | None = None,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        dim: int = 256,
        c2: int = 128,
        options: DeReFOptions | None = None,
        seed: int = 0,
        *,
        mri_channels: int | None = None,
        mri_depth: int = 50,
    ) -> None:
        super().__init__()
        self.options = opts = options or DeReFOptions()
        self.encoders = paired_encoder(
            omic_sizes, mri_channels, mri_depth, wsi_dim, dim, opts.dropout, nystrom_padding=opts.nystrom_padding
        )
        self.genomic_specific = _mlp(dim, dim, c2, 0.1, opts.final_relu)
        self.wsi_specific = _mlp(dim, dim, c2, 0.1, opts.final_relu)
        self.shared = RegionalCrossAttention(dim, c2, reference=opts.rca == "reference")
        self.explore = RegionalCrossAttention(dim, c2, reference=opts.rca == "reference")
        self.experts = nn.ModuleList(_mlp(4 * c2, 64, c2, 0.1, opts.final_relu) for _ in range(opts.n_experts))
        self.gate = nn.Linear(c2, 1) if opts.gate == "reference" else nn.Linear(4 * c2, opts.n_experts)
        self.head = nn.Linear(opts.n_experts * c2, n_bins)
        self.segment_choices = segment_counts(c2, opts.segments)
        self._rng = random.Random(seed)
        self.apply(init_weights)

    def encode(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The four decoupled features (B, C2) each, and the WSI encoder's patch attention (B, N).

        "genomic" is the second modality's specific feature, MRI included (the key stays: details files store it).
        """
        wsi_cls, attention, second_cls = self.encoders(wsi, second)
        return {
            "genomic": self.genomic_specific(second_cls),
            "pathology": self.wsi_specific(wsi_cls),
            "shared": self.shared(second_cls, wsi_cls),
            "explore": self.explore(second_cls, wsi_cls),
            "attention": attention,
        }

    def fuse(self, decoupled: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hazard logits and gate weights from the stacked (B, 4, C2) features for one segment choice."""
        fusion = reorganise(decoupled, segments)
        outputs = torch.stack([expert(fusion) for expert in self.experts], dim=1)  # (B, N, C2)
        if self.options.gate == "reference":
            weights = torch.softmax(self.gate(decoupled).squeeze(-1), dim=-1)  # (B, 4)
        else:
            weights = torch.softmax(self.gate(fusion), dim=-1)  # (B, N)
        return self.head((outputs * weights.unsqueeze(-1)).flatten(1)), weights

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the second modality -> hazards, survival, risk, gate and ``encode``'s outputs."""
        features = self.encode(wsi, second)
        decoupled = torch.stack(
            [features["genomic"], features["pathology"], features["shared"], features["explore"]], dim=1
        )
        if self.training or self.options.test_rfr == "random":
            logits, gate = self.fuse(decoupled, self._rng.choice(self.segment_choices))
            hazards = torch.sigmoid(logits)
        else:
            runs = [self.fuse(decoupled, s) for s in self.segment_choices]
            hazards = torch.stack([torch.sigmoid(logits) for logits, _ in runs]).mean(0)
            gate = torch.stack([g for _, g in runs]).mean(0)
        return {
            "hazards": hazards,
            "survival": survival_curve(hazards),
            "risk": risk_score(hazards),
            "gate": gate,
            **features,
        }

    def reseed(self, seed: int) -> None:
        """Reset the generator of segment choices (training and the reference's random test draws)."""
        self._rng = random.Random(seed)

    def auxiliary_loss(self, out: dict[str, torch.Tensor], settings: TrainSettings) -> torch.Tensor:
        """The decoupling loss L_dis, weighted, with the settings' distance."""
        return settings.decoupling_weight * decoupling_loss(
            out["genomic"], out["pathology"], out["shared"], out["explore"], settings.distance
        )
