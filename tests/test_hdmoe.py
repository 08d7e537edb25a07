"""HDMoE: the reference's parameter count, shapes, routing and its auxiliary losses, the fixed crashes, MRI."""

from __future__ import annotations

import copy

import pytest
import torch

from model.hdmoe import HDMoE, Router, SharedRoutedMoE
from model.registry import Inputs, ModelChoice, build_model
from model.train import TrainSettings
from tests.tiny_cohort import BLCA, LABELS, SMALL


def inputs(n_patches=40):
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, n_patches, 1024, generator=g), [torch.randn(1, d, generator=g) for d in SMALL]


def test_parameter_counts_match_the_authors_model():
    model = HDMoE(BLCA)
    assert sum(p.numel() for p in model.parameters()) == 8_625_188
    assert sum(p.numel() for p in model.genomic_moe.parameters()) == 595_328
    assert sum(p.numel() for p in model.fusion_moe.parameters()) == 446_720


def test_shapes_and_loss():
    torch.manual_seed(0)
    model = HDMoE(SMALL).train()
    out = model(*inputs())
    assert out["hazards"].shape == (1, 4) and out["risk"].shape == (1,)
    assert out["g_intra"].shape == (1, 256) and out["emb_specific"].shape == (1, 512)
    assert out["inter"].shape == (1, 512) and out["fusion_router"].shape == (1, 4, 8)
    assert out["attention"].shape == (1, 40) and torch.allclose(out["attention"].sum(), torch.tensor(1.0))
    loss = model.auxiliary_loss(out, TrainSettings(), *LABELS)
    loss.backward()
    assert torch.isfinite(loss) and model.genomic_moe.router.weight.grad is not None


def test_one_token_balance_loss_is_eight_times_the_top_probability():
    """docs/models.md §2: with batch size 1 the first-level aux loss is 8 * p_top (minimum 1 at a flat router)."""
    torch.manual_seed(0)
    router = Router(16, 8).train()
    token = torch.randn(1, 16)
    weights, _, _, aux = router(token)
    assert aux.item() == pytest.approx(8 * weights.max().item(), rel=1e-6)
    assert router.eval()(token)[3].item() == 0.0  # training only


def test_routed_output_is_the_chosen_expert_scaled_by_its_probability():
    torch.manual_seed(0)
    moe = SharedRoutedMoE(16, 8).eval()
    tokens = torch.randn(1, 3, 16)
    routed, shared, probs, _ = moe(tokens)
    for t in range(3):
        e = int(probs[0, t].argmax())
        expected = probs[0, t, e] * moe.experts[e](tokens[0, t])
        assert torch.allclose(routed[0, t * 8 : (t + 1) * 8], expected, atol=1e-6)
        assert torch.allclose(shared[0, t * 8 : (t + 1) * 8], moe.shared(tokens[0, t]), atol=1e-6)


def test_without_shared_expert_it_runs():
    torch.manual_seed(0)
    model = HDMoE(SMALL, shared_expert=False).train()
    out = model(*inputs())
    assert torch.equal(out["g_share"], torch.zeros_like(out["g_share"]))
    assert torch.isfinite(model.auxiliary_loss(out, TrainSettings(), *LABELS))


def test_test_time_reorganisation():
    torch.manual_seed(0)
    wsi, second = inputs()
    model = HDMoE(SMALL).eval()
    with torch.no_grad():
        assert torch.equal(model(wsi, second)["hazards"], model(wsi, second)["hazards"])
    reference = HDMoE(SMALL, test_rfr="random", seed=5).eval()
    with torch.no_grad():
        first = [reference(wsi, second)["hazards"] for _ in range(5)]
        reference.reseed(5)
        again = [reference(wsi, second)["hazards"] for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(first[0], h) for h in first[1:])


def test_mri_cohort_shapes():
    torch.manual_seed(0)
    model = HDMoE(wsi_dim=32, mri_channels=5, mri_depth=10, test_rfr="random").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 7, 32), [torch.randn(1, 5, 16, 16, 16)])
    assert out["hazards"].shape == (1, 4) and out["survival"].shape == (1, 4) and out["risk"].shape == (1,)
    assert out["g_intra"].shape == (1, 256) and out["genomic_router"].shape == (1, 1, 8)
    assert out["attention"].shape == (1, 7) and torch.allclose(out["attention"].sum(), torch.tensor(1.0))


def test_exactly_one_second_modality():
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        HDMoE()
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        HDMoE(SMALL, mri_channels=5)


@pytest.mark.parametrize("call_every_expert", [True, False])
def test_unselected_experts_move_only_when_every_expert_is_called(call_every_expert):
    """The authors call every routed expert: unselected ones get zero gradients, so Adam's decay moves them."""
    torch.manual_seed(0)
    model = HDMoE(SMALL, seed=1, call_every_expert=call_every_expert).train()
    flipped = copy.deepcopy(model)
    for moe in (flipped.genomic_moe, flipped.wsi_moe, flipped.fusion_moe):
        moe.call_every_expert = not call_every_expert
    torch.manual_seed(2)
    out = model(*inputs())
    torch.manual_seed(2)
    assert torch.equal(out["hazards"], flipped(*inputs())["hazards"])  # the switch leaves the forward alone
    chosen = int(out["genomic_router"][0, 0].argmax())
    unselected = model.genomic_moe.experts[(chosen + 1) % 8][0].weight
    before = unselected.detach().clone()
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    (out["hazards"].sum() + model.auxiliary_loss(out, TrainSettings(), *LABELS)).backward()
    optimiser.step()
    if call_every_expert:
        assert unselected.grad is not None and not unselected.grad.any()
        assert not torch.equal(unselected.detach(), before)
    else:
        assert unselected.grad is None and torch.equal(unselected.detach(), before)


def test_reference_preset_calls_every_expert():
    inputs_ = Inputs(("wsi", "genomics"), 1024, tuple(SMALL))
    for preset, expected in (("reference", True), ("paper", False)):
        model = build_model("hdmoe", inputs_, ModelChoice(preset=preset))
        assert all(moe.call_every_expert is expected for moe in (model.genomic_moe, model.wsi_moe, model.fusion_moe))
