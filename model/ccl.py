"""CCL (Zhou, Zhou & Chen, IEEE TMI 2024): cohort-individual cooperative learning for WSI + genomics survival.

Paper (read here through its abstract and a published summary of its method; the full text was not
available): each modality gives one individual token; Multimodal Knowledge Decomposition (MKD) splits the
pair into four components, redundancy (common), synergy, and the genomic- and pathology-specific
knowledge (an MLP per modality, G = Φ_g(F_g), P = Φ_p(F_p)); a transformer fuses the four into the
hazards. Cohort Guidance Modeling (CGM) adds L = L_surv + alpha L_cohort: at the knowledge level each
component is pulled towards or pushed away from the two individual tokens, and at the patient
level a per-time-bin bank of past patients' components gives a contrastive term.

Authors' code (moothes/CCL-survival, ``models/CCL/network.py``, ``utils/loss_factory.py``):

- gene families: one SNN block each (Linear-SELU-AlphaDropout(0.15), d_i -> 256), one shared SNN
  block over the six tokens, then ``Conv1d(6, 1, 1)``-InstanceNorm-ReLU to one genomic token;
- patches: k-means (``kmeans_pytorch``, 6 clusters) seeded from a memory of cluster centres (each
  memory centre starts at its nearest patch; Lloyd iterations, an empty cluster's centre set to 0,
  stop when (Σ_k ‖shift_k‖)² < 1e-4), the centres put in the memory's order by the Hungarian
  matching on L1 distances, and in training the memory moved 10% towards them; an SNN block
  (wsi_dim -> 256) per centre and ``Conv1d(6, 1, 1)``-InstanceNorm-ReLU give one pathology token.
  the k-means runs without gradient: the patches reach the prediction only as their clusters' means;
- MKD: common and synergy are two co-attention blocks (Linear-LayerNorm-ReLU per modality, sigmoid
  gates read from the dim x dim outer product through ``Linear(dim, 1)``, the gated sum); the
  specific components are Linear-LayerNorm-ReLU blocks;
- a patient bank per time bin (the last 10 patients' four components), filled in training;
- fusion: a class token and two pre-norm Nyström layers with a final LayerNorm (``TransMIL``
  without PPEG; the authors build a PPEG they never call), a linear head, sigmoid hazards;
- loss ``nllsurv,cohort``, both weight 1: the NLL (alpha = 0) plus the cohort loss of ``cohort_loss``.

Differences, and what is followed:

- The code calls its decomposition with the two tokens in swapped order, so the component in the
  genomic-specific slot (the one the cohort loss pulls towards the genomic token) is computed from
  the *pathology* token, and the pathology-specific one from the genomic token. ``reference=True``
  (default) is the code; ``reference=False`` feeds each specific MLP its own modality, as the paper.
- Only batch 1 in the code; here bags are taken one after the other (memory and bank updates in
  that order), which for B = 1 is the same.
- The code keeps the memory as a plain tensor outside its ``state_dict`` (reloading a checkpoint gives
  back the initial random memory, not the trained one); here it is a persistent buffer, because the memory decides the k-means
  start and the slot order, so predictions from saved weights need it. The bank is a
  non-persistent buffer: a training-time cache of past patients, never used at prediction, which
  the authors' checkpoints do not hold either. Both are tensors, so runs are deterministic.
- k-means distances use ‖c‖² - 2 x·c (the same argmin) instead of the N x K x wsi_dim difference
  tensor, and the centre means a one-hot matmul; the code's k-means fails on a 1-patch bag, this
  one does not. The outer-product gates are computed factorised (g_i (w·p) + b), the same sums.
- CCL has no patch attention. ``attention`` is a proxy: patch n in cluster k weighs
  |w_slot(k)| / |C_k|, w the pathology ``Conv1d``'s weight of the centre's memory slot (each
  centre is the mean of its patches, and the convolution sums the centres with weights w),
  normalised to sum to 1.

Initialisation as the code: PyTorch's defaults, the memory N(0, 1), the class token N(0, (1e-6)²).

With MRI (``mri_channels``), ``VolumeTokens`` (the 3D ResNet's last-stage grid, T tokens) replaces
the six per-family SNNs; the shared SNN block follows. T depends on the volume's size, which the
constructor does not know, so the genomic ``Conv1d(6, 1, 1)`` becomes one weight on the token mean,
``Conv1d(1, 1, 1)`` (the same convolution with its T weights tied), before the InstanceNorm-ReLU.

Outputs besides hazards, survival, risk and ``attention`` (B, N): ``components`` (B, 4, dim), common,
synergy, genomic-specific, pathology-specific, and ``individual`` (B, 2, dim), the genomic (or MRI)
and pathology tokens, which the cohort loss reads (``loss_outputs``: not saved to details.h5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from model.encoders import TransMIL, VolumeTokens, check_second_modality
from model.survival import SurvivalNetwork, survival_outputs, weight_matrices

if TYPE_CHECKING:
    from model.train import TrainSettings

KMEANS_TOL = 1e-4  # kmeans_pytorch's default: stop when (Σ_k ‖centre shift_k‖)² < tol
KMEANS_MAX_ITERATIONS = 1000  # kmeans_pytorch has no cap; Lloyd's objective cannot rise, so it stops long before
# Which individual token (genomic, pathology) each component is pulled towards (1) or made orthogonal to (0).
ALIGNMENT = ((1.0, 1.0), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0))  # common, synergy, genomic- and pathology-specific


class SELUBlock(nn.Sequential):
    """Linear -> SELU -> AlphaDropout: CCL's SNN block (SELU, where ``SNNBlock`` has ELU)."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.15) -> None:
        super().__init__(nn.Linear(d_in, d_out), nn.SELU(), nn.AlphaDropout(dropout))


class MLPBlock(nn.Sequential):
    """Linear -> LayerNorm -> ReLU, the blocks of CCL's knowledge decomposition."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU())


class FamilyTokens(nn.Module):
    """One SELU block per gene family: (B, d_i) for each family -> (B, n_families, dim)."""

    def __init__(self, family_sizes: list[int], dim: int, dropout: float) -> None:
        super().__init__()
        self.nets = nn.ModuleList(SELUBlock(d, dim, dropout) for d in family_sizes)

    def forward(self, families: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([net(x) for net, x in zip(self.nets, families, strict=True)], dim=1)


class TokenMerge(nn.Module):
    """(B, T, dim) -> (B, 1, dim): ``Conv1d(T, 1, 1)`` -> InstanceNorm -> ReLU, CCL's ``conv1d_Block``.

    The 1x1 convolution over the token axis is a learned weighted sum of the tokens plus a bias; the
    instance norm then standardises that vector over its features. ``tokens=None`` ties the weights
    (one weight on the token mean), for a token count the constructor does not know (MRI).
    """

    def __init__(self, tokens: int | None) -> None:
        super().__init__()
        self.tied = tokens is None
        self.conv = nn.Conv1d(1 if tokens is None else tokens, 1, 1)
        self.norm = nn.InstanceNorm1d(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.tied:
            tokens = tokens.mean(dim=1, keepdim=True)
        return torch.relu(self.norm(self.conv(tokens)))


class ModalityInteraction(nn.Module):
    """Common or synergy knowledge: both tokens projected, each gated by the other, summed.

    The authors form the outer product A_ij = g_i p_j and read each modality's gate from it with a
    ``Linear(dim, 1)``: gate_g,i = sigmoid(Σ_j w_j g_i p_j + b) = sigmoid(g_i (w·p) + b), and likewise for the
    pathology gate over i. The factorised form is the same sum without the dim x dim tensor.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.genomic_proj, self.wsi_proj = MLPBlock(dim), MLPBlock(dim)
        self.genomic_gate, self.wsi_gate = nn.Linear(dim, 1), nn.Linear(dim, 1)

    def forward(self, genomic: torch.Tensor, wsi: torch.Tensor) -> torch.Tensor:
        """(B, 1, dim) tokens of each modality -> (B, 1, dim)."""
        g, p = self.genomic_proj(genomic), self.wsi_proj(wsi)
        g_gate = torch.sigmoid(g * F.linear(p, self.genomic_gate.weight) + self.genomic_gate.bias)
        p_gate = torch.sigmoid(p * F.linear(g, self.wsi_gate.weight) + self.wsi_gate.bias)
        return p * p_gate + g * g_gate


class KnowledgeDecomposition(nn.Module):
    """The two individual tokens -> (B, 4, dim): common, synergy, genomic-specific, pathology-specific.

    ``reference=True`` feeds the genomic-specific MLP the pathology token and the pathology-specific
    MLP the genomic token, as the authors' call order does; ``False`` gives each its own modality.
    """

    def __init__(self, dim: int, reference: bool = True) -> None:
        super().__init__()
        self.reference = reference
        self.common, self.synergy = ModalityInteraction(dim), ModalityInteraction(dim)
        self.genomic_specific, self.wsi_specific = MLPBlock(dim), MLPBlock(dim)

    def forward(self, genomic: torch.Tensor, wsi: torch.Tensor) -> torch.Tensor:
        into_genomic, into_wsi = (wsi, genomic) if self.reference else (genomic, wsi)
        parts = [self.common(genomic, wsi), self.synergy(genomic, wsi)]
        return torch.cat([*parts, self.genomic_specific(into_genomic), self.wsi_specific(into_wsi)], dim=1)


def _nearest_centre(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Each point's nearest centre (N,), Euclidean, ties to the first.

    Ranked by ‖c‖² - 2 x·c (‖x‖² is the same for every centre of a point). Identical centres (memory
    centres that started at the same patch) are scored once and share the score, so the first wins,
    as with kmeans_pytorch's element-wise distances; a matmul might round two equal columns apart.
    """
    unique, inverse = torch.unique(centres, dim=0, return_inverse=True)
    return ((unique * unique).sum(-1) - 2 * points @ unique.T)[:, inverse].argmin(dim=1)


def lloyd_kmeans(
    points: torch.Tensor, memory: torch.Tensor, tol: float = KMEANS_TOL, max_iterations: int = KMEANS_MAX_ITERATIONS
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of ``points`` (N, D) seeded from ``memory`` (K, D), as ``kmeans_pytorch`` with given centres.

    Each memory centre starts at its nearest point (two may start at the same one, leaving a
    cluster empty); every iteration assigns the points to their nearest centre and moves each
    centre to its points' mean, an empty cluster's to the origin, until (Σ_k ‖shift_k‖)² < ``tol``.
    Returns the last assignment (N,) and the centres (K, D), the means of that assignment.
    """
    n_clusters = memory.shape[0]
    # nearest point of each memory centre: argmin over points of ‖x‖² - 2 x·m (‖m‖² is the same for all)
    centres = points[((points * points).sum(-1, keepdim=True) - 2 * points @ memory.T).argmin(dim=0)]
    for _ in range(max_iterations):
        assignment = _nearest_centre(points, centres)
        members = F.one_hot(assignment, n_clusters).T.to(points.dtype)
        previous, centres = centres, (members @ points) / members.sum(1, keepdim=True).clamp(min=1)
        if (centres - previous).norm(dim=1).sum() ** 2 < tol:
            break
    return assignment, centres


def memory_slots(centres: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """The memory slot (K,) of each centre: the Hungarian matching on L1 distances, as the authors."""
    cost = torch.cdist(centres, memory, p=1).cpu().numpy()
    return torch.as_tensor(linear_sum_assignment(cost)[1], device=centres.device)


def cohort_loss(
    components: torch.Tensor,
    individual: torch.Tensor,
    banks: Sequence[torch.Tensor],
    label: int,
    censored: bool,
    temperature: float = 2.0,
) -> torch.Tensor:
    """CCL's cohort loss for one patient, whose components are already the last entry of ``banks[label]``.

    ``components`` (4, dim), ``individual`` (2, dim) the genomic and pathology tokens, ``banks`` one
    (M_j, 4, dim) tensor per time bin. Knowledge level: with s the cosine similarities (4 x 2) of the
    components to the detached individual tokens and a = ``ALIGNMENT``, mean(|s|(1 - a) - a s) + 1.
    Patient level: an uncensored patient's positives are its own bin's earlier entries and its
    negatives every other bin's; a censored patient in bin y > 0 has the bins >= y (itself
    included) as positives and the bins < y as negatives; in bin 0 it has no patient-level term,
    nor does a patient with no positives or no negatives. The term is
    -log(P / (P + Q + 1e-10)), P and Q the means of exp(component ⊙ bank entry / temperature) over
    every element of the positives and the negatives (element-wise products, not dot products).
    """
    similarity = F.cosine_similarity(components.unsqueeze(1), individual.detach().unsqueeze(0), dim=-1)
    aligned = similarity.new_tensor(ALIGNMENT)
    knowledge = (similarity.abs() * (1 - aligned) - aligned * similarity).mean() + 1
    if censored and label == 0:
        return knowledge
    if censored:
        negatives, positives = banks[:label], banks[label:]
    else:
        negatives = [bank for j, bank in enumerate(banks) if j != label]
        positives = [banks[label][:-1]]
    none = components.new_zeros(0, *components.shape)
    negatives, positives = torch.cat([none, *negatives]).detach(), torch.cat([none, *positives]).detach()
    if len(negatives) == 0 or len(positives) == 0:
        return knowledge
    pos = torch.exp(components * positives / temperature).mean()
    neg = torch.exp(components * negatives / temperature).mean()
    return knowledge - torch.log(pos / (pos + neg + 1e-10))


class CCL(SurvivalNetwork):
    """CCL: k-means pathology prototypes and gene-family tokens, knowledge decomposition, cohort bank.

    Defaults are the authors': 6 clusters, memory update ratio 0.1, a bank of 10 patients per time
    bin, temperature 2, cohort loss weight 1, SNN dropout 0.15. ``reference`` chooses the
    specific-knowledge inputs (module docstring); ``nystrom_padding=False`` gives the five-token
    fusion exact attention instead of Nyström over zero tokens (docs/models.md §1.2).
    """

    loss_outputs = ("components", "individual")

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 256,
        dropout: float = 0.15,
        n_clusters: int = 6,
        update_ratio: float = 0.1,
        bank_length: int = 10,
        temperature: float = 2.0,
        cohort_weight: float = 1.0,
        reference: bool = True,
        nystrom_padding: bool = True,
    ) -> None:
        super().__init__()
        check_second_modality(omic_sizes, mri_channels)
        self.mri = mri_channels is not None
        self.second_tokens: nn.Module = (
            VolumeTokens(mri_channels, mri_depth, dim) if self.mri else FamilyTokens(omic_sizes, dim, dropout)
        )
        self.second_fc = SELUBlock(dim, dim, dropout)
        self.second_merge = TokenMerge(None if self.mri else len(omic_sizes))
        self.register_buffer("memory", torch.randn(n_clusters, wsi_dim))
        self.update_ratio = update_ratio
        self.wsi_fc = SELUBlock(wsi_dim, dim, dropout)
        self.wsi_merge = TokenMerge(n_clusters)
        self.decomposition = KnowledgeDecomposition(dim, reference)
        self.register_buffer("bank", torch.zeros(n_bins, bank_length, len(ALIGNMENT), dim), persistent=False)
        self.register_buffer("bank_size", torch.zeros(n_bins, dtype=torch.long), persistent=False)
        self.temperature, self.cohort_weight = temperature, cohort_weight
        self.fusion = TransMIL(dim, ppeg=False, pad_to_landmarks=nystrom_padding)
        self.head = nn.Linear(dim, n_bins)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the families or [volume] -> hazards, patch attention, components."""
        second_token = self.second_merge(self.second_fc(self.second_tokens(second)))
        centres, attention = self._prototypes(wsi)
        wsi_token = self.wsi_merge(self.wsi_fc(centres))
        components = self.decomposition(second_token, wsi_token)
        fused, _, _ = self.fusion(components)
        individual = torch.cat([second_token, wsi_token], dim=1)
        return survival_outputs(self.head(fused), attention=attention, components=components, individual=individual)

    @torch.no_grad()
    def _prototypes(self, wsi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each bag's k-means centres in memory-slot order (B, K, wsi_dim) and the patch attention (B, N).

        In training the memory moves ``update_ratio`` of the way to each bag's centres, bag by bag.
        """
        centres, attention = [], []
        for bag in wsi.to(self.memory.dtype):
            assignment, found = lloyd_kmeans(bag, self.memory)
            slots = memory_slots(found, self.memory)
            aligned = torch.empty_like(found)
            aligned[slots] = found
            if self.training:
                self.memory.copy_(self.memory * (1 - self.update_ratio) + aligned * self.update_ratio)
            centres.append(aligned)
            attention.append(self._patch_weights(assignment, slots))
        return torch.stack(centres), torch.stack(attention)

    def _patch_weights(self, assignment: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """|pathology conv weight of the patch's centre's slot| / its cluster's size, summing to 1."""
        slot_weight = self.wsi_merge.conv.weight.detach().abs().view(-1)
        sizes = torch.bincount(assignment, minlength=len(slots))
        weights = slot_weight[slots][assignment] / sizes[assignment]
        return weights / weights.sum()

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """``cohort_weight`` x the cohort loss, patients in batch order, each first added to its bin's bank.

        The authors fill the bank in their training forward and compute the loss right after; here
        the labels arrive with this call, so it does both, in that order. Nothing in eval mode (the
        authors' evaluation passes no censorship, and their cohort loss is then 0).
        """
        if not self.training:
            return out["hazards"].new_zeros(())
        losses = []
        for components, individual, label, censored in zip(
            out["components"], out["individual"], bins.tolist(), censorship.tolist(), strict=True
        ):
            self._remember(label, components.detach())
            banks = [self.bank[j, :size] for j, size in enumerate(self.bank_size.tolist())]
            losses.append(cohort_loss(components, individual, banks, label, bool(censored), self.temperature))
        return self.cohort_weight * torch.stack(losses).mean()

    def _remember(self, label: int, components: torch.Tensor) -> None:
        """Append to the bin's bank; a full bank drops its oldest patient first."""
        size = int(self.bank_size[label])
        if size < self.bank.shape[1]:
            self.bank[label, size] = components
            self.bank_size[label] += 1
        else:
            self.bank[label] = torch.cat([self.bank[label, 1:], components.unsqueeze(0)])

    def genomic_weights(self) -> list[torch.Tensor]:
        """The genomic SNN blocks' weight matrices (per family and shared); none with MRI."""
        return [] if self.mri else weight_matrices([self.second_tokens, self.second_fc])
