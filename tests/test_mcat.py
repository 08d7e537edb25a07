"""MCAT: outputs, the co-attention as patch attention, gradients, seeding, a training run, the authors' network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.mcat import MCAT
from model.train import TrainSettings
from tests.authors_code import authors_module
from tests.coattention_mapping import compared_with_theirs
from tests.tiny_cohort import (
    BLCA,
    LABELS,
    SMALL,
    WSI_DIM,
    assert_batched_equals_single_forwards,
    assert_seeded_and_deterministic,
    assert_survival_contract,
    planted_cohort,
    random_inputs,
    train_briefly,
)


def build(modality: str, dim: int = 16) -> MCAT:
    second = {"mri_channels": 2, "mri_depth": 10} if modality == "mri" else {"omic_sizes": SMALL}
    return MCAT(WSI_DIM, dim=dim, **second)


@pytest.mark.parametrize(
    ("modality", "n_patches"),
    [("genomics", 1), ("genomics", 7), ("genomics", 40), ("mri", 40)],  # building the 3D ResNet costs seconds
)
def test_output_contract(modality, n_patches):
    torch.manual_seed(0)
    model = build(modality).eval()
    with torch.no_grad():
        out = model(*random_inputs(modality, n_patches, batch=2))
    assert_survival_contract(out, batch=2, n_patches=n_patches)
    assert model.auxiliary_loss(out, TrainSettings(), *LABELS).item() == 0.0  # no loss terms besides the NLL


def test_attention_is_the_co_attention_averaged_over_the_genomic_queries():
    """softmax((W_q g + b_q)(W_k h + b_k)ᵀ / sqrt(dim)) over the patches, averaged over the six family tokens."""
    torch.manual_seed(0)
    model = build("genomics").eval()
    wsi, second = random_inputs("genomics", n_patches=5)
    with torch.no_grad():
        attention = model(wsi, second)["attention"][0].numpy()
        h = model.wsi_fc(wsi)[0].numpy().astype(np.float64)
        g = model.second_encoder(second)[0].numpy().astype(np.float64)
    weight = model.co_attention.attention.in_proj_weight.detach().numpy().astype(np.float64)
    bias = model.co_attention.attention.in_proj_bias.detach().numpy().astype(np.float64)
    dim = h.shape[1]
    q = g @ weight[:dim].T + bias[:dim]
    k = h @ weight[dim : 2 * dim].T + bias[dim : 2 * dim]
    scores = q @ k.T / np.sqrt(dim)
    rows = np.exp(scores - scores.max(axis=1, keepdims=True))
    rows /= rows.sum(axis=1, keepdims=True)
    assert rows.shape == (6, 5)
    np.testing.assert_allclose(attention, rows.mean(axis=0), atol=1e-6)


def test_demo_size_step_gives_every_parameter_a_finite_gradient():
    torch.manual_seed(0)
    model = MCAT(omic_sizes=BLCA).train()
    out = model(*random_inputs("genomics", 50, wsi_dim=1024, sizes=BLCA))
    out["risk"].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_mri_step_reaches_the_volume_encoder():
    torch.manual_seed(0)
    model = MCAT(WSI_DIM, mri_channels=2, dim=16).train()
    wsi = torch.randn(1, 9, WSI_DIM)
    volume = torch.randn(1, 2, 33, 33, 33)  # batch norm in training needs > 1 value per channel after layer4
    model(wsi, [volume])["risk"].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("modality", ["genomics", "mri"])
def test_same_seed_same_outputs_and_eval_is_deterministic(modality):
    wsi, second = random_inputs(modality, n_patches=9)
    assert_seeded_and_deterministic(lambda: build(modality), wsi, second, ("hazards", "attention"))


def test_batched_forward_equals_single_forwards():
    torch.manual_seed(0)
    model = build("genomics").eval()
    wsi, second = random_inputs("genomics", n_patches=11, batch=3)
    assert_batched_equals_single_forwards(model, wsi, second, ("hazards", "attention"))


def test_parameter_count_by_hand_for_blca():
    # Family SNNs (d_i -> 256 -> 256): 256 * 3392 + 6 * 256 + 6 * (256 * 256 + 256) = 1264640
    # Patch layer 1024 -> 256: 262400
    # Co-attention, one head: in-projection 3 * 256 * 256 + 768 = 197376, out-projection 65792: 263168
    # Per branch: two encoder layers 2 * 527104 (see tests/test_snn_trans.py), gated attention
    #   2 * 65792 + 257 = 131841, rho 65792: 1251841; two branches 2503682
    # Fusion 512 -> 256 -> 256: 131328 + 65792 = 197120; head 256 * 4 + 4 = 1028
    expected = 1264640 + 262400 + 263168 + 2 * (2 * 527104 + 131841 + 65792) + 197120 + 1028
    assert expected == 4_492_038
    assert sum(p.numel() for p in MCAT(omic_sizes=BLCA).parameters()) == expected


def test_pytorch_default_init():
    torch.manual_seed(0)
    model = MCAT(omic_sizes=BLCA)
    first = model.second_encoder.nets[4][0][0]  # the 1496-gene family's first Linear: U(±1/sqrt(fan_in)), not LeCun
    assert first.weight.abs().max().item() <= 1496**-0.5 and first.bias.any()
    assert not model.co_attention.attention.in_proj_bias.any()  # torch's (and the authors') zero in-projection bias


def test_tiny_training_run():
    result, _, held_out = train_briefly(lambda: build("genomics"), planted_cohort(12), 8)
    for patient in held_out:
        attention = result.details[patient.patient_id]["attention"]
        assert attention.shape == (patient.bag.shape[0],) and attention.sum() == pytest.approx(1, abs=1e-5)


@pytest.mark.authors_code
@pytest.mark.parametrize("n_patches", [50, 300])
def test_matches_the_authors_mcat(n_patches):
    module = authors_module("MCAT", "models.model_coattn")
    torch.manual_seed(1)
    theirs = module.MCAT_Surv(fusion="concat", omic_sizes=BLCA, n_classes=4).eval()
    ours = MCAT(1024, 4, omic_sizes=BLCA).eval()
    out, scores = compared_with_theirs("MCAT", theirs, ours, n_patches)
    assert (torch.softmax(scores, dim=-1).mean(dim=0) - out["attention"][0]).abs().max().item() <= 1e-6
