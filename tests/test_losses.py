"""DeReF's decoupling loss: the MSE identity and every distance's gradient."""

from __future__ import annotations

import pytest
import torch

from model.losses import DISTANCES, decoupling_loss


def test_decoupling_identity_for_mse():
    g, p, sh, ex = torch.randn(4, 3, 128).unbind(0)
    m = (g + p) / 2
    identity = (2 * (sh - m) ** 2 + 2 * (ex - m) ** 2 + (sh - ex) ** 2).mean()
    assert decoupling_loss(g, p, sh, ex).item() == pytest.approx(identity.item(), rel=1e-5)
    assert decoupling_loss(g, p, m, m).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distance", sorted(DISTANCES))
def test_decoupling_distances_are_finite_and_differentiable(distance):
    tensors = [torch.randn(2, 128, requires_grad=True) for _ in range(4)]
    loss = decoupling_loss(*tensors, distance=distance)
    loss.backward()
    assert torch.isfinite(loss) and all(t.grad is not None for t in tensors)
