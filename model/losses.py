"""DeReF's decoupling loss: pull shared and explore features to the specific features' midpoint.

L_dis = D(g, sh) + D(p, sh) + D(g, ex) + D(p, ex) + D(sh, ex) - D(g, p) (paper eq. 1), g the second
modality's specific feature and p the WSI's. With the mean squared error,
L_dis = mean[2 (sh - m)² + 2 (ex - m)² + (sh - ex)²] with m = (g + p) / 2, so it is never negative
and is zero exactly when shared = explore = m.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The reference's bounded "distance": relu(2 - KL(softmax(a) || softmax(b))).
    kl = F.kl_div(F.log_softmax(b, dim=-1), F.softmax(a, dim=-1), reduction="batchmean")
    return F.relu(2 - kl)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda a, b: F.mse_loss(a, b),
    "l1": lambda a, b: F.l1_loss(a, b),
    "cosine": lambda a, b: (1 - F.cosine_similarity(a, b, dim=-1)).mean(),
    "kl": _kl,
}


def decoupling_loss(
    second: torch.Tensor,
    pathology: torch.Tensor,
    shared: torch.Tensor,
    explore: torch.Tensor | None,
    distance: str = "mse",
) -> torch.Tensor:
    """L_dis for (B, C) specific (second modality, WSI), shared and explore features.

    Without V_explore (the W/o V_explore ablation) its three terms drop out.
    """
    d = DISTANCES[distance]
    loss = d(second, shared) + d(pathology, shared) - d(second, pathology)
    if explore is not None:
        loss = loss + d(second, explore) + d(pathology, explore) + d(shared, explore)
    return loss
