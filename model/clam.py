"""CLAM-SB and CLAM-MB (Lu et al., Nature BME 2021) for survival: gated attention MIL with instance clustering.

Paper and authors' code (mahmoodlab/CLAM ``models/model_clam.py``, ``utils/core_utils.py``):
patches are embedded by Linear(1024, 512)-ReLU-Dropout, scored by gated attention (512 -> 256 ->
one score per branch: one branch for CLAM-SB, one per class for CLAM-MB) and pooled by the
softmaxed attention. CLAM-SB classifies the pooled vector with one Linear(512, n_classes);
CLAM-MB has one Linear(512, 1) per class, each reading its own branch's pooled vector. Instance
clustering: for class c, a two-way instance classifier (Linear(512, 2)) reads the k = 8 most and
k least attended patches (under branch c for MB, the single branch for SB). For the label's
class the top k are positive and the bottom k negative; with ``subtyping`` the top k of every
other class's branch are negative too, and the sum over classes is divided by their number.
Each branch's loss is averaged over its instances. Training minimises
``bag_weight * bag_loss + (1 - bag_weight) * instance_loss``, with bag_weight = 0.7. The
authors' network, sizes ("small") and PyTorch's default init are followed exactly (construction
order included, so one seed gives the authors' weights).

For survival (the DeReF paper gives no details and no repository it cites trains CLAM for survival):
- The bag classifier gives ``n_bins`` hazard logits (sigmoid, as every model here), and the
  instance "class" is the patient's time bin. ``subtyping`` defaults to True: time bins exclude
  each other as subtypes do.
- Censored patients: the bin is a lower bound on the event time. The event cannot lie in an
  earlier bin, so those branches still get their out-of-class negatives. The patient's own bin
  and the later bins are unknown, so they get no instance loss. With ``subtyping`` the sum is
  divided by ``n_bins`` for every patient (so every branch term weighs the same for all);
  without it only the in-class term is left. A patient censored in bin 0 has no instance loss.
- k is clamped to the bag size. With fewer than 2k patches, the top and bottom sets share
  patches, which then get both targets. The authors' ``topk`` fails on bags under k patches.
- The instance loss is cross-entropy by default: that is what the authors' ``main.py`` runs
  (``--inst_loss`` defaults to None, which builds ``nn.CrossEntropyLoss``). The paper and the
  README's commands use the smooth top-1 SVM of the ``topk`` package (Berrada et al. 2018;
  not on PyPI), which ``instance_loss="svm"`` reimplements.
- Training adds ``auxiliary_loss`` to the NLL with weight 1. So the auxiliary term is
  ``(1 - bag_weight) / bag_weight * instance_loss``: the total is the authors' total divided
  by ``bag_weight``. Adam does not see that constant factor, except through the weight decay,
  which acts as ``bag_weight`` times the configured one (``clam_*_authors`` set 1e-5 / 0.7); under
  SGD the factor also scales the learning rate.
- ``attention`` (B, N) is the softmaxed attention (SB), or for MB the mean of the branches'
  softmaxed attentions; both sum to 1 over the patches.

MOTCat and MoME ship a survival ``model_clam.py``, but no trainer of theirs builds it. It differs
from CLAM: size "small" = [1024, 256, 256], xavier init, dropout only when a flag is set, and
the instance loss returned beside the hazards. It is not followed here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from model.baselines import GatedAttention
from model.encoders import wsi_projection
from model.survival import SurvivalNetwork, survival_outputs

if TYPE_CHECKING:
    from model.train import TrainSettings

INSTANCE_LOSSES = ("ce", "svm")


def smooth_top1_svm(
    scores: torch.Tensor, target: torch.Tensor, alpha: float = 1.0, tau: float = 1.0, hard_ratio: float = 1e3
) -> torch.Tensor:
    """Per-sample smooth top-1 SVM loss (Berrada et al. 2018), as ``topk.svm.SmoothTop1SVM`` defines it.

    With shifted scores s_j + alpha [j != y] - s_y, the loss is tau * logsumexp(shifted / tau). Where
    the best score leads the second by at least tau * log(hard_ratio), the hard max is used
    instead, as the package does. ``scores`` (..., C), ``target`` (...) -> (...).
    """
    margin = alpha * (1 - F.one_hot(target, scores.shape[-1]).to(scores.dtype))
    shifted = scores + margin - scores.gather(-1, target.unsqueeze(-1))
    smooth = tau * torch.logsumexp(shifted / tau, dim=-1)
    hard = shifted.max(dim=-1).values
    best = scores.topk(2, dim=-1).values
    return torch.where(best[..., 0] - best[..., 1] >= tau * math.log(hard_ratio), hard, smooth)


def per_instance_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """The instance classifiers' loss per instance: cross-entropy or the smooth top-1 SVM; (..., 2) -> (...)."""
    if kind == "svm":
        return smooth_top1_svm(logits, target)
    return F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(target.shape)


def instance_clustering_loss(
    instance_logits: torch.Tensor,
    bins: torch.Tensor,
    censorship: torch.Tensor,
    subtyping: bool = True,
    kind: str = "ce",
) -> torch.Tensor:
    """CLAM's instance loss with the time bin as class, averaged over the batch (see the module docstring).

    ``instance_logits`` (B, n_bins, 2k, 2): per bin c, instance classifier c on the k most attended
    patches of branch c, then on its k least attended. The patient's own bin (events only) gets the
    in-class term: the top k are positive and the bottom k negative. Every other bin that is known
    to be wrong gets, with ``subtyping``, the out-of-class term: its top k are negative. For a
    censored patient, the known-wrong bins are the earlier ones.
    """
    batch, n_bins, two_k, _ = instance_logits.shape
    k = two_k // 2
    device = instance_logits.device
    in_targets = (torch.arange(two_k, device=device) < k).long()  # top k positive, bottom k negative
    in_class = per_instance_loss(instance_logits, in_targets.expand(batch, n_bins, two_k), kind).mean(-1)
    out_targets = torch.zeros(batch, n_bins, k, dtype=torch.long, device=device)
    out_class = per_instance_loss(instance_logits[:, :, :k], out_targets, kind).mean(-1)
    bin_index = torch.arange(n_bins, device=device)
    bins = bins.long().view(-1, 1)
    event = censorship.view(-1, 1) == 0
    own = bin_index == bins
    total = torch.where(own & event, in_class, 0.0)
    if subtyping:
        known_wrong = ~own & (event | (bin_index < bins))
        total = (total + torch.where(known_wrong, out_class, 0.0)) / n_bins
    return total.sum(-1).mean()


class CLAM(SurvivalNetwork):
    """CLAM-SB (``multi_branch=False``) or CLAM-MB (one attention branch and bag head per time bin).

    ``dim`` and ``attention_dim`` are CLAM's size "small" (512, 256), ``dropout`` its 0.25, and
    ``k_sample``, ``bag_weight`` its defaults (``--B 8``, ``--bag_weight 0.7``). The forward also
    returns ``instance_logits`` (B, n_bins, 2k, 2), the input of the instance clustering loss.
    """

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        multi_branch: bool = False,
        dim: int = 512,
        attention_dim: int = 256,
        dropout: float = 0.25,
        k_sample: int = 8,
        bag_weight: float = 0.7,
        subtyping: bool = True,
        instance_loss: str = "ce",
    ) -> None:
        super().__init__()
        if instance_loss not in INSTANCE_LOSSES:
            raise ValueError(f"instance_loss {instance_loss!r}; choose one of {INSTANCE_LOSSES}")
        if not 0 < bag_weight <= 1 or k_sample < 1:
            raise ValueError(f"bag_weight must be in (0, 1] and k_sample at least 1, not {bag_weight} and {k_sample}")
        self.multi_branch = multi_branch
        self.k_sample = k_sample
        self.bag_weight = bag_weight
        self.subtyping = subtyping
        self.instance_loss = instance_loss
        self.fc = wsi_projection(wsi_dim, dim, dropout, layers=1)
        self.gate = GatedAttention(dim, attention_dim, dropout, heads=n_bins if multi_branch else 1)
        if multi_branch:
            self.bag_head: nn.Module = nn.ModuleList(nn.Linear(dim, 1) for _ in range(n_bins))
        else:
            self.bag_head = nn.Linear(dim, n_bins)
        self.instance_heads = nn.ModuleList(nn.Linear(dim, 2) for _ in range(n_bins))

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag -> hazards, attention (B, N) and instance logits; ``second`` is ignored."""
        h = self.fc(wsi)
        attention = torch.softmax(self.gate(h), dim=1).transpose(1, 2)  # (B, branches, N), softmax over patches
        pooled = attention @ h  # (B, branches, dim)
        if self.multi_branch:
            logits = torch.cat([head(pooled[:, c]) for c, head in enumerate(self.bag_head)], dim=-1)
        else:
            logits = self.bag_head(pooled[:, 0])
        return survival_outputs(
            logits, attention=attention.mean(1), instance_logits=self._instance_logits(attention, h)
        )

    def _instance_logits(self, attention: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Per bin c, instance classifier c on branch c's k most then k least attended patches: (B, n_bins, 2k, 2)."""
        k = min(self.k_sample, h.shape[1])
        top = attention.topk(k, dim=-1).indices
        bottom = (-attention).topk(k, dim=-1).indices
        rows = torch.arange(h.shape[0], device=h.device).view(-1, 1, 1)
        picked = h[rows, torch.cat([top, bottom], dim=-1)]  # (B, branches, 2k, dim)
        return torch.stack(
            [head(picked[:, c if self.multi_branch else 0]) for c, head in enumerate(self.instance_heads)], dim=1
        )

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """The instance clustering loss times (1 - bag_weight) / bag_weight: the NLL is added with weight 1."""
        clustering = instance_clustering_loss(
            out["instance_logits"], bins, censorship, self.subtyping, self.instance_loss
        )
        return (1 - self.bag_weight) / self.bag_weight * clustering
