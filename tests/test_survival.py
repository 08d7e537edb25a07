"""Discrete-time survival: the censored NLL against a hand computation, survival curves and risk."""

from __future__ import annotations

import math

import pytest
import torch

from model.survival import nll_survival_loss, risk_score, survival_curve


def test_nll_equals_a_hand_computation():
    hazards = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.2, 0.9]])
    bins = torch.tensor([2, 1])
    censorship = torch.tensor([0, 1])
    # Patient 0 (event in bin 2): -log[(1-.1)(1-.2)] - log(.3); patient 1 (censored in bin 1): -log[(1-.5)(1-.1)].
    expected = (-math.log(0.9 * 0.8) - math.log(0.3) - math.log(0.5 * 0.9)) / 2
    assert nll_survival_loss(hazards, bins, censorship).item() == pytest.approx(expected, rel=1e-6)
    # alpha up-weights the uncensored part only.
    alpha = 0.4
    weighted = ((-math.log(0.9 * 0.8) - math.log(0.3)) + 0.6 * (-math.log(0.5 * 0.9))) / 2
    assert nll_survival_loss(hazards, bins, censorship, alpha=alpha).item() == pytest.approx(weighted, rel=1e-6)


def test_survival_and_risk():
    hazards = torch.tensor([[0.5, 0.5], [0.1, 0.1]])
    assert torch.allclose(survival_curve(hazards), torch.tensor([[0.5, 0.25], [0.9, 0.81]]))
    risk = risk_score(hazards)
    assert risk[0] > risk[1]
