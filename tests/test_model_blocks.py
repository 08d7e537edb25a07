"""Survival targets and loss, feature reorganisation, decoupling loss, TransMIL attention (model/ building blocks)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from model.bins import assign_bins, time_bin_edges
from model.encoders import TransMIL
from model.losses import DISTANCES, decoupling_loss
from model.reorganise import reorganise, restore, segment_counts
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


def test_bins_from_uncensored_quartiles():
    times = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 50.0])
    censorship = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    edges = time_bin_edges(times, censorship)
    assert edges[0] == pytest.approx(1.0 - 1e-6) and edges[-1] == pytest.approx(50.0 + 1e-6)
    assert np.allclose(edges[1:-1], np.quantile(times[:8], [0.25, 0.5, 0.75]))
    labels = assign_bins(times, edges)
    assert labels.min() == 0 and labels.max() == 3 and np.all(np.diff(labels) >= 0)
    assert assign_bins(np.array([-5.0, 500.0]), edges).tolist() == [0, 3]  # held-out times outside the range
    reference = pd.cut(times, bins=edges, right=False, include_lowest=True, labels=False)
    assert np.array_equal(labels, reference)


@pytest.mark.realdata
def test_real_tcga_blca_bin_edges(shared_data):
    table = pd.read_csv(
        shared_data / "tcga" / "tcga_blca_all_clean.csv.gz", usecols=["case_id", "survival_months", "censorship"]
    )
    patients = table.drop_duplicates("case_id")
    edges = time_bin_edges(patients["survival_months"].to_numpy(), patients["censorship"].to_numpy())
    assert np.round(edges, 2).tolist() == [0.49, 7.62, 13.57, 21.85, 163.17]
    counts = np.bincount(assign_bins(patients["survival_months"].to_numpy(), edges))
    assert counts.tolist() == [63, 75, 95, 140]


@pytest.mark.parametrize("segments", [2, 4, 8, 16, 32, 64])
def test_reorganisation_index_pattern_and_inverse(segments):
    channels, n = 128, 4
    features = torch.arange(n * channels).reshape(n, channels)
    flat = reorganise(features, segments)
    length = channels // segments
    expected = [f * channels + s * length + i for s in range(segments) for f in range(n) for i in range(length)]
    assert flat.tolist() == expected
    assert torch.equal(restore(flat, n, segments), features)
    assert sorted(flat.tolist()) == list(range(n * channels))  # a permutation


def test_reorganisation_examples_from_the_reference():
    features = torch.arange(4 * 128).reshape(4, 128)
    assert reorganise(features, 64)[:6].tolist() == [0, 1, 128, 129, 256, 257]
    assert reorganise(features, 2)[:128].tolist() == list(range(64)) + list(range(128, 192))
    batched = torch.stack([features, features + 1000])
    assert torch.equal(reorganise(batched, 8)[1], reorganise(features + 1000, 8))


def test_segment_presets():
    assert segment_counts(128, "paper") == (64, 16, 8, 4, 2)
    assert segment_counts(128, "reference") == (2, 4, 8, 16, 32, 64)


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


@pytest.mark.parametrize(
    ("ppeg", "pad_to_landmarks", "n"),
    [(True, True, 50), (True, True, 7), (False, False, 7), (False, True, 7)],
    ids=["wsi-50", "wsi-7", "exact-7", "padded-7"],
)
def test_transmil_attention_is_the_class_token_row_of_the_last_layer(ppeg, pad_to_landmarks, n):
    """The heatmap equals the explicit attention matrix's class row, head-averaged, cut to the real tokens."""
    torch.manual_seed(0)
    model = TransMIL(64, ppeg=ppeg, pad_to_landmarks=pad_to_landmarks).eval()
    tokens = torch.randn(2, n, 64)
    inputs = {}
    model.layer2.register_forward_pre_hook(lambda _, args: inputs.setdefault("x", args[0]))
    with torch.no_grad():
        cls, out_tokens, attention = model(tokens)
        layer = model.layer2.attention
        x = model.layer2.norm(inputs["x"])
        q, k, _ = (t.reshape(2, x.shape[1], 8, 8).transpose(1, 2) for t in layer.to_qkv(x).chunk(3, dim=-1))
        full = torch.softmax(q @ k.transpose(-1, -2) * layer.scale, dim=-1)  # (B, heads, L, L)
    expected = full[:, :, 0].mean(1)[:, 1 : n + 1]
    assert cls.shape == (2, 64) and out_tokens.shape == (2, n, 64) and attention.shape == (2, n)
    assert torch.allclose(attention, expected / expected.sum(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(attention.sum(-1), torch.ones(2))
