"""MOTCat: outputs, the transport plan by hand, micro-batches, gradients, seeding, training, the authors' network."""

from __future__ import annotations

import functools

import numpy as np
import ot
import pytest
import torch

from model.motcat import MOTCat, micro_batches, unbalanced_transport_plan
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


def build(modality: str, dim: int = 16, **kwargs) -> MOTCat:
    second = {"mri_channels": 2, "mri_depth": 10} if modality == "mri" else {"omic_sizes": SMALL}
    return MOTCat(WSI_DIM, dim=dim, **second, **kwargs)


@pytest.mark.parametrize(
    ("modality", "n_patches", "micro_batch"),
    [
        ("genomics", 1, None),
        ("genomics", 7, None),
        ("genomics", 40, None),
        ("genomics", 1, 8),
        ("genomics", 40, 8),
        ("mri", 7, None),  # building the 3D ResNet costs seconds: two MRI cases
        ("mri", 40, 8),
    ],
)
def test_output_contract(modality, n_patches, micro_batch):
    torch.manual_seed(0)
    model = build(modality, micro_batch=micro_batch).eval()
    with torch.no_grad():
        out = model(*random_inputs(modality, n_patches, batch=2))
    assert_survival_contract(out, batch=2, n_patches=n_patches, exact=False)
    assert model.auxiliary_loss(out, TrainSettings(), *LABELS).item() == 0.0  # no loss terms besides the NLL


def numpy_unbalanced_sinkhorn(x: np.ndarray, y: np.ndarray, reg: float, tau: float) -> np.ndarray:
    """The plan by hand: u = (a / K v)^f, v = (b / Kᵀ u)^f with f = tau / (tau + reg), K = exp(-C / reg)."""
    x = x - x.min(axis=1, keepdims=True)
    y = y - y.min(axis=1, keepdims=True)
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-cost / cost.max() / reg)
    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    u, v = np.ones(len(x)), np.ones(len(y))
    f = tau / (tau + reg)
    for _ in range(5000):
        u = (a / (kernel @ v)) ** f
        v = (b / (kernel.T @ u)) ** f
    return u[:, None] * kernel * v[None, :]


def test_transport_plan_matches_a_hand_sinkhorn():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    expected = numpy_unbalanced_sinkhorn(x, y, reg=0.1, tau=0.5)
    plan = unbalanced_transport_plan(torch.tensor(x), torch.tensor(y), reg=0.1, tau=0.5).numpy()
    assert plan.shape == (5, 3)
    np.testing.assert_allclose(plan, expected, rtol=1e-4, atol=1e-7)  # POT stops at a 1e-6 relative change


def test_newer_pot_default_would_rescale_the_plan():
    """POT >= 0.9.5's default (KL to a ⊗ b) gives the same plan times a bag-size-dependent factor."""
    rng = np.random.default_rng(1)
    factors = []
    for n in (5, 50):
        x, y = torch.tensor(rng.standard_normal((n, 4))), torch.tensor(rng.standard_normal((6, 4)))
        ours = unbalanced_transport_plan(x, y, reg=0.1, tau=0.5)
        cost = torch.cdist(x - x.min(1, keepdim=True).values, y - y.min(1, keepdim=True).values) ** 2
        a, b = torch.full((n,), 1 / n, dtype=torch.float64), torch.full((6,), 1 / 6, dtype=torch.float64)
        kl = ot.unbalanced.sinkhorn_knopp_unbalanced(a, b, cost / cost.max(), reg=0.1, reg_m=0.5, reg_type="kl")
        ratio = kl / ours
        assert (ratio.max() - ratio.min()).item() <= 1e-6 * ratio.mean().item()
        factors.append(ratio.mean().item())
    assert abs(factors[0] - factors[1]) > 0.05


def test_plan_is_the_co_attention_and_gets_no_gradient():
    torch.manual_seed(0)
    model = build("genomics").eval()
    wsi, second = random_inputs("genomics", n_patches=9)
    patches = model.wsi_fc(wsi)
    tokens = model.second_encoder(second)
    co_attended, weights = model.co_attention(tokens, patches)
    plan = unbalanced_transport_plan(patches[0], tokens[0], 0.1, 0.5)
    assert not plan.requires_grad and weights.shape == (1, 6, 9)
    torch.testing.assert_close(weights[0], plan.T.float())
    torch.testing.assert_close(co_attended[0], plan.T.float() @ patches[0])
    marginal = plan.sum(1) / plan.sum()
    with torch.no_grad():
        torch.testing.assert_close(model(wsi, second)["attention"][0], marginal.float())


def test_micro_batches_split_as_the_authors():
    """n // m + 1 parts of a permutation, sizes as np.array_split (their ``split_chunk_list``)."""
    for n, m in [(50, 8), (256, 256), (255, 256), (1000, 256), (7, 3)]:
        parts = micro_batches(n, m, torch.Generator().manual_seed(0))
        assert [len(p) for p in parts] == [len(p) for p in np.array_split(np.arange(n), n // m + 1)]
        assert torch.equal(torch.cat(parts).sort().values, torch.arange(n))


def test_micro_batch_switch_changes_the_result_only_with_several_micro_batches():
    wsi, second = random_inputs("genomics", n_patches=40)
    hazards = {}
    for micro_batch in (None, 8, 64):
        torch.manual_seed(0)
        with torch.no_grad():
            hazards[micro_batch] = build("genomics", micro_batch=micro_batch).eval()(wsi, second)["hazards"]
    assert torch.equal(hazards[None], hazards[64])  # 40 // 64 + 1 = 1 micro-batch: the whole bag
    assert (hazards[None] - hazards[8]).abs().max().item() > 1e-4


def test_micro_batches_average_the_parts_hazards():
    torch.manual_seed(0)
    model = build("genomics", micro_batch=8).eval()
    wsi, second = random_inputs("genomics", n_patches=20)
    parts = micro_batches(20, 8, torch.Generator().manual_seed(0))  # what evaluation draws
    with torch.no_grad():
        out = model(wsi, second)
        model.micro_batch = None
        singles = [model(wsi[:, rows], second) for rows in parts]
    torch.testing.assert_close(out["hazards"], torch.stack([s["hazards"] for s in singles]).mean(0))
    for rows, single in zip(parts, singles, strict=True):
        torch.testing.assert_close(out["attention"][:, rows], single["attention"] / len(parts))


def test_micro_batch_must_be_positive():
    with pytest.raises(ValueError, match="micro_batch must be a positive number of patches or None, not 0"):
        build("genomics", micro_batch=0)


@pytest.mark.parametrize("micro_batch", [None, 16])
def test_demo_size_step_gives_every_parameter_a_finite_gradient(micro_batch):
    torch.manual_seed(0)
    model = MOTCat(omic_sizes=BLCA, micro_batch=micro_batch).train()
    out = model(*random_inputs("genomics", 50, wsi_dim=1024, sizes=BLCA))
    out["risk"].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("modality", ["genomics", "mri"])
@pytest.mark.parametrize("micro_batch", [None, 4])
def test_same_seed_same_outputs_and_eval_is_deterministic(modality, micro_batch):
    wsi, second = random_inputs(modality, n_patches=9)
    built = functools.partial(build, modality, micro_batch=micro_batch)
    assert_seeded_and_deterministic(built, wsi, second, ("hazards", "attention"))


def test_batched_forward_equals_single_forwards():
    torch.manual_seed(0)
    model = build("genomics").eval()
    wsi, second = random_inputs("genomics", n_patches=11, batch=3)
    assert_batched_equals_single_forwards(model, wsi, second, ("hazards", "attention"))


def test_parameter_count_is_mcats_without_the_co_attention():
    # MCAT's 4,492,038 (tests/test_mcat.py) less its co-attention's 3 * 256 * 256 + 768 + 256 * 256 + 256 = 263,168
    assert sum(p.numel() for p in MOTCat(omic_sizes=BLCA).parameters()) == 4_492_038 - 263_168


def test_tiny_training_run():
    result, _, held_out = train_briefly(lambda: build("genomics", micro_batch=4), planted_cohort(12), 8)
    for patient in held_out:
        attention = result.details[patient.patient_id]["attention"]
        assert attention.shape == (patient.bag.shape[0],) and attention.sum() == pytest.approx(1, abs=1e-5)


@pytest.mark.authors_code
@pytest.mark.parametrize("n_patches", [50, 300])
def test_matches_the_authors_motcat(monkeypatch, n_patches):
    module = authors_module("MOTCat", "models.model_motcat", packages=["ot"])
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # their plan is moved with .cuda()
    # their pinned pot==0.9.3 regularised with the plain entropy; POT >= 0.9.5 defaults to KL (a rescaled plan)
    entropic = functools.partial(ot.unbalanced.sinkhorn_knopp_unbalanced, reg_type="entropy")
    monkeypatch.setattr(ot.unbalanced, "sinkhorn_knopp_unbalanced", entropic)
    torch.manual_seed(1)
    theirs = module.MOTCAT_Surv(fusion="concat", omic_sizes=BLCA, n_classes=4).eval()  # ot_reg 0.1, ot_tau 0.5
    ours = MOTCat(1024, 4, omic_sizes=BLCA).eval()
    out, plan = compared_with_theirs("MOTCat", theirs, ours, n_patches)
    assert (plan.sum(0) / plan.sum() - out["attention"][0]).abs().max().item() <= 1e-6
