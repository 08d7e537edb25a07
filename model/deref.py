"""DeReF: Decouple, Reorganize, and Fuse (per-modality encoders, RCA decoupling, RFR, dense MoE).

The default follows the paper's text (Algorithm 1 as written, segment lengths {2, 8, 16, 32, 64},
gate softmax(W · V_fusion) over N experts, MLPs without a final ReLU). ``DeReFOptions.reference()``
reproduces the authors' code where it differs, one switch per difference, and the paper's
ablations are switches too (``model.deref_options`` lists them all).

The second modality is the six gene families (``omic_sizes``) or, for MRI cohorts, as in the paper,
a volume encoded by a 3D ResNet (``mri_channels``, ``mri_depth``; the paper's is depth 50).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch
from torch import nn

from model.deref_options import DeReFOptions
from model.encoders import init_weights, paired_encoder
from model.losses import decoupling_loss
from model.reorganise import reorganise, segment_counts
from model.survival import SurvivalNetwork, risk_score, survival_curve

if TYPE_CHECKING:
    from model.train import TrainSettings


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float, final_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)]
    if final_relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RegionalCrossAttention(nn.Module):
    """Algorithm 1: shared (or explore) feature from regions of the cross-attention matrix M = X1ᵀ X2.

    ``regions="inter"`` keeps only the inter-modality block M_m1m2 (plain cross-attention, the
    paper's W/o RCA² ablation): each modality's vector attends over the other's alone.
    """

    def __init__(self, d_in: int = 256, d_out: int = 128, reference: bool = False, regions: str = "all") -> None:
        super().__init__()
        self.fc_m, self.fc_p = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)
        self.reference = reference
        self.regions = regions

    def forward(self, second: torch.Tensor, pathology: torch.Tensor) -> torch.Tensor:
        """(B, d_in) second-modality and WSI class tokens -> (B, d_out)."""
        a, b = self.fc_m(second), self.fc_p(pathology)
        if self.regions == "inter":
            m = a.unsqueeze(-1) * b.unsqueeze(-2)  # (B, C, C), M_ij = a_i b_j
            out1 = (a.unsqueeze(1) @ torch.softmax(m, dim=1)).squeeze(1)
            out2 = (b.unsqueeze(1) @ torch.softmax(m.transpose(1, 2), dim=1)).squeeze(1)
            return (out1 + out2) / 2
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


class ConcatDecoupler(nn.Module):
    """The W/o RCA¹ ablation: an MLP on the concatenated class tokens instead of cross-attention."""

    def __init__(self, d_in: int = 256, d_out: int = 128, final_relu: bool = False) -> None:
        super().__init__()
        self.mlp = _mlp(2 * d_in, d_in, d_out, 0.1, final_relu)

    def forward(self, second: torch.Tensor, pathology: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([second, pathology], dim=-1))


def _decoupler(opts: DeReFOptions, dim: int, c2: int) -> nn.Module:
    if opts.decoupler == "concat_mlp":
        return ConcatDecoupler(dim, c2, opts.final_relu)
    regions = "inter" if opts.decoupler == "cross_attention" else "all"
    return RegionalCrossAttention(dim, c2, reference=opts.rca == "reference", regions=regions)


class DeReF(SurvivalNetwork):
    """WSI bag + gene families or MRI volume -> per-bin hazards, decoupled features, gate, patch attention.

    Give exactly one of ``omic_sizes`` (genomics cohorts) and ``mri_channels`` (MRI cohorts).
    """

    # the decoupled features, in the order the fusion stacks them ("genomic": the second
    # modality's specific feature, MRI included; the key stays because details files store it)
    FEATURES = ("genomic", "pathology", "shared", "explore")

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
        self.test_rfr = opts.test_rfr
        self.encoders = paired_encoder(
            omic_sizes, mri_channels, mri_depth, wsi_dim, dim, opts.dropout, nystrom_padding=opts.nystrom_padding
        )
        if opts.decouple:
            self.genomic_specific = _mlp(dim, dim, c2, 0.1, opts.final_relu)
            self.wsi_specific = _mlp(dim, dim, c2, 0.1, opts.final_relu)
            self.shared = _decoupler(opts, dim, c2)
            if opts.explore:
                self.explore = _decoupler(opts, dim, c2)
        width = c2 if opts.decouple else dim  # the fused features' length
        n_features = opts.n_features
        n_experts = opts.n_experts if opts.moe else 1
        self.experts = nn.ModuleList(_mlp(n_features * width, 64, c2, 0.1, opts.final_relu) for _ in range(n_experts))
        if opts.moe:
            self.gate = nn.Linear(c2, 1) if opts.gate == "reference" else nn.Linear(n_features * width, n_experts)
        self.head = nn.Linear(n_experts * c2, n_bins)
        if not opts.rfr:
            self.segment_choices: tuple[int, ...] = (1,)
        elif opts.segment_length is not None:
            if width % opts.segment_length:
                raise ValueError(f"segment_length {opts.segment_length} does not divide the {width}-d features")
            self.segment_choices = (width // opts.segment_length,)
        else:
            self.segment_choices = segment_counts(width, opts.segments)
        self._rng = random.Random(seed)
        self.apply(init_weights)

    def encode(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The features the fusion reorganises (B, C2) each (``fused``, stacked) and the WSI encoder's patch attention.

        With the decoupling module: the decoupled features by name (``FEATURES``, V_explore absent
        when ablated); without it, the two encoders' class tokens.
        """
        wsi_cls, attention, second_cls = self.encoders(wsi, second)
        if not self.options.decouple:
            return {"fused": torch.stack([second_cls, wsi_cls], dim=1), "attention": attention}
        features = {
            "genomic": self.genomic_specific(second_cls),
            "pathology": self.wsi_specific(wsi_cls),
            "shared": self.shared(second_cls, wsi_cls),
        }
        if self.options.explore:
            features["explore"] = self.explore(second_cls, wsi_cls)
        return {**features, "fused": torch.stack(list(features.values()), dim=1), "attention": attention}

    def fuse(self, decoupled: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hazard logits and gate weights (None without the MoE) from the stacked (B, F, C) features."""
        fusion = reorganise(decoupled, segments)
        outputs = torch.stack([expert(fusion) for expert in self.experts], dim=1)  # (B, N, C2)
        if not self.options.moe:
            return self.head(outputs.flatten(1)), None
        if self.options.gate == "reference":
            weights = torch.softmax(self.gate(decoupled).squeeze(-1), dim=-1)  # (B, 4)
        else:
            weights = torch.softmax(self.gate(fusion), dim=-1)  # (B, N)
        return self.head((outputs * weights.unsqueeze(-1)).flatten(1)), weights

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the second modality -> hazards, survival, risk, gate and ``encode``'s outputs."""
        features = self.encode(wsi, second)
        fused = features.pop("fused")
        if self.training or self.test_rfr == "random":
            logits, gate = self.fuse(fused, self._rng.choice(self.segment_choices))
            hazards = torch.sigmoid(logits)
        else:
            runs = [self.fuse(fused, s) for s in self.segment_choices]
            hazards = torch.stack([torch.sigmoid(logits) for logits, _ in runs]).mean(0)
            gate = None if runs[0][1] is None else torch.stack([g for _, g in runs]).mean(0)
        out = {"hazards": hazards, "survival": survival_curve(hazards), "risk": risk_score(hazards), **features}
        if gate is not None:
            out["gate"] = gate
        return out

    def test_modes(self) -> tuple[str, ...]:
        """The test-time reorganisations a repeated test can compare (one when there is nothing random)."""
        return ("average", "random") if len(self.segment_choices) > 1 else ("average",)

    def reseed(self, seed: int) -> None:
        """Reset the generator of segment choices (training and the reference's random test draws)."""
        self._rng = random.Random(seed)

    def decoupled_features(self) -> tuple[str, ...]:
        """The decoupled features this network outputs (none without the decoupling module)."""
        if not self.options.decouple:
            return ()
        return tuple(f for f in self.FEATURES if f != "explore" or self.options.explore)

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """The decoupling loss L_dis, weighted, with the settings' distance (none without decoupling)."""
        if not self.options.decouple:
            return out["hazards"].new_zeros(())
        return settings.decoupling_weight * decoupling_loss(
            out["genomic"], out["pathology"], out["shared"], out.get("explore"), settings.distance
        )
