"""MoME: outputs (genomics and MRI), gradients, seeding, a training run, Admin by hand, the router switch, fidelity."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from model.encoders import GeneFamilyEncoder
from model.mome import EXPERTS, AdminTransLayer, MoME, MoMELayer, admin_omega, rms_norm
from model.survival import risk_score, survival_curve, weight_matrices
from model.train import TrainSettings
from tests.authors_code import authors_module, renamed
from tests.tiny_cohort import (
    BLCA,
    LABELS,
    SMALL,
    WSI_DIM,
    assert_seeded_and_deterministic,
    planted_cohort,
    train_briefly,
)


def genomic_inputs(
    n_patches: int = 20, batch: int = 1, wsi_dim: int = WSI_DIM, sizes: list[int] = SMALL, seed: int = 0
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_patches, wsi_dim, generator=g), [torch.randn(batch, d, generator=g) for d in sizes]


def layers_in_order(model: MoME) -> list[MoMELayer]:
    """The MoME layers in the order of ``expert_probabilities``: WSI 1, second 1, WSI 2, second 2."""
    return [model.wsi_layers[0], model.second_layers[0], model.wsi_layers[1], model.second_layers[1]]


@pytest.mark.parametrize("modality", ["genomics", "mri"])
def test_output_shapes_and_attention(modality):
    torch.manual_seed(0)
    if modality == "genomics":
        model, batch = MoME(WSI_DIM, omic_sizes=SMALL, dim=16).eval(), 2
        wsi, second = genomic_inputs(n_patches=7, batch=batch)
    else:
        model, batch = MoME(WSI_DIM, mri_channels=2, mri_depth=10, dim=16).eval(), 1
        wsi, second = torch.randn(1, 7, WSI_DIM), [torch.randn(1, 2, 16, 32, 32)]
    with torch.no_grad():
        out = model(wsi, second)
    assert set(out) == {"hazards", "survival", "risk", "attention", "expert_probabilities"}
    assert out["hazards"].shape == (batch, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    assert out["attention"].shape == (batch, 7) and (out["attention"] >= 0).all()
    assert torch.allclose(out["attention"].sum(-1), torch.ones(batch))
    probabilities = out["expert_probabilities"]
    assert probabilities.shape == (batch, 4, len(EXPERTS)) and torch.allclose(
        probabilities.sum(-1), torch.ones(batch, 4)
    )
    assert model.auxiliary_loss(out, TrainSettings(), *LABELS).item() == 0.0  # no loss terms besides the NLL


@pytest.mark.parametrize("reference", [True, False], ids=["reference", "straight_through"])
def test_demo_size_step_gives_the_used_parameters_finite_gradients(reference):
    """The chosen experts, encoders, fusion layer and head get gradients; routers only with straight-through."""
    torch.manual_seed(0)
    model = MoME(1024, omic_sizes=BLCA, dim=256, reference=reference).train()
    out = model(*genomic_inputs(n_patches=50, wsi_dim=1024, sizes=BLCA))
    out["risk"].sum().backward()
    chosen = out["expert_probabilities"][0].argmax(-1).tolist()
    idle = set()
    for layer, k in zip(layers_in_order(model), chosen, strict=True):
        idle |= {id(p) for i, expert in enumerate(layer.experts) if i != k for p in expert.parameters()}
        if reference:
            idle |= {id(p) for p in layer.router.parameters()}
    for name, p in model.named_parameters():
        if id(p) in idle:
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert len(idle) < len(list(model.parameters()))


def test_same_seed_same_outputs_and_eval_is_deterministic():
    assert_seeded_and_deterministic(lambda: MoME(WSI_DIM, omic_sizes=SMALL, dim=16), *genomic_inputs(batch=2))


def test_tiny_training_run():
    result, _, held_out = train_briefly(
        lambda: MoME(WSI_DIM, omic_sizes=SMALL, dim=16), planted_cohort(10), 7, test_repeats=1
    )
    for patient in held_out:
        details = result.details[patient.patient_id]
        assert details["attention"].shape == (patient.bag.shape[0],) and details["expert_probabilities"].shape == (4, 4)


def test_admin_residual_and_rms_norm_by_hand():
    # admin_torch.as_module(8): omega = sqrt((8 + 1) / ln(8 + 1) - 1) = sqrt(9 / 2.1972 - 1) = 1.7595
    assert admin_omega(8) == pytest.approx(np.sqrt(9 / np.log(9) - 1), abs=1e-12)
    assert admin_omega(8) == pytest.approx(1.7595, abs=1e-4)
    # With the attention's output projection zeroed and bias b, the layer is omega * x + b.
    layer = AdminTransLayer(16).eval()
    with torch.no_grad():
        layer.attention.to_out[0].weight.zero_()
        layer.attention.to_out[0].bias.copy_(torch.arange(16.0))
        x = torch.randn(1, 5, 16)
        expected = x.numpy() * 1.7595 + np.arange(16.0)
        assert np.abs(layer(x).numpy() - expected).max() < 1e-3
    # RMSNorm of (3, 4): mean square 12.5, so (3, 4) / sqrt(12.5 + 1e-6).
    got = rms_norm(2)(torch.tensor([[3.0, 4.0]])).detach().numpy()
    assert np.allclose(got, np.array([[3.0, 4.0]]) / math.sqrt(12.5 + 1e-6), atol=1e-7)


def test_straight_through_is_one_in_value_and_the_softmax_in_gradient():
    torch.manual_seed(0)
    layer = MoMELayer(16, straight_through=True).eval()
    x, reference = torch.randn(1, 5, 16), torch.randn(1, 3, 16)
    out, probabilities = layer(x, reference)
    k = int(probabilities.argmax())
    plain = layer.experts[k](x, reference)
    assert (out - plain).abs().max().item() < 1e-6
    # d out / d p_k = expert output: the router's gradient is that of p_k times the output's gradient.
    weight = layer.router.scores.weight
    (grad,) = torch.autograd.grad(out.sum(), weight)
    (expected,) = torch.autograd.grad(layer.router(x, reference)[0, k] * plain.sum().detach(), weight)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_reference_switch_leaves_the_router_untrained():
    """Same weights and eval outputs; after one Adam step only the straight-through router has moved."""
    wsi, second = genomic_inputs()
    routers, outputs = {}, {}
    for reference in (True, False):
        torch.manual_seed(0)
        model = MoME(WSI_DIM, omic_sizes=SMALL, dim=16, reference=reference)
        start = [p.detach().clone() for layer in layers_in_order(model) for p in layer.router.parameters()]
        with torch.no_grad():
            outputs[reference] = model.eval()(wsi, second)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
        torch.manual_seed(1)
        model.train()(wsi, second)["risk"].sum().backward()
        optimiser.step()
        after = [p.detach() for layer in layers_in_order(model) for p in layer.router.parameters()]
        routers[reference] = all(torch.equal(a, b) for a, b in zip(start, after, strict=True))
        with torch.no_grad():
            outputs[reference, "trained"] = model.eval()(wsi, second)
    assert (outputs[True]["hazards"] - outputs[False]["hazards"]).abs().max().item() < 1e-6
    assert torch.equal(outputs[True]["expert_probabilities"], outputs[False]["expert_probabilities"])
    assert routers == {True: True, False: False}
    trained = [outputs[reference, "trained"]["expert_probabilities"] for reference in (True, False)]
    assert (trained[0] - trained[1]).abs().max().item() > 1e-4


def test_l1_covers_the_family_snns_only():
    model = MoME(WSI_DIM, omic_sizes=SMALL, dim=16)
    assert isinstance(model.second_encoder, GeneFamilyEncoder)
    assert {id(w) for w in model.genomic_weights()} == {id(w) for w in weight_matrices([model.second_encoder])}
    assert MoME(WSI_DIM, mri_channels=2, dim=16).genomic_weights() == []


def test_needs_exactly_one_second_modality():
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        MoME(WSI_DIM, dim=16)


# The authors' MoMETransformer keys -> ours, applied in order; their Admin omega buffers and the
# bottleneck experts' unused RMSNorm have no counterpart.
KEY_RENAMES = [
    (r"^sig_networks\.", "second_encoder.nets."),
    (r"^wsi_net\.", "wsi_fc."),
    (r"^multi_layer1\.", "fusion_layer."),
    (r"^classifier\.", "head."),
    (r"^MoME_patho(\d)\.", lambda m: f"wsi_layers.{int(m.group(1)) - 1}."),
    (r"^MoME_genom(\d)\.", lambda m: f"second_layers.{int(m.group(1)) - 1}."),
    (r"\.TransFusion\.translayer\.", ".experts.0.layer."),
    (r"\.BottleneckTransFusion\.attn1\.", ".experts.1.fuse."),
    (r"\.BottleneckTransFusion\.attn2\.", ".experts.1.gather."),
    (r"\.AddFusion\.snn1\.", ".experts.2.snn."),
    (r"\.AddFusion\.snn2\.", ".experts.2.reference_snn."),
    (r"\.AddFusion\.norm1\.", ".experts.2.norm."),
    (r"\.AddFusion\.norm2\.", ".experts.2.reference_norm."),
    (r"\.routing_network\.fc1\.", ".router.x_proj."),
    (r"\.routing_network\.fc2\.", ".router.reference_proj."),
    (r"\.routing_network\.clsfer\.", ".router.scores."),
    (r"\.attn\.res_conv\.", ".attention.residual."),
    (r"\.attn\.", ".attention."),
]
NO_COUNTERPART = re.compile(r"\.residual_attn\.omega$|\.BottleneckTransFusion\.norm\.weight$")
THEIR_LAYERS = ("MoME_patho1", "MoME_genom1", "MoME_patho2", "MoME_genom2")  # our order: layers_in_order
THEIR_EXPERTS = ("TransFusion", "BottleneckTransFusion", "AddFusion", "DropX2Fusion")  # EXPERTS order


def our_key(key: str) -> str:
    return renamed(key, KEY_RENAMES)


def their_weights_on_ours(theirs: torch.nn.Module, ours: MoME) -> None:
    state = {our_key(k): v for k, v in theirs.state_dict().items() if not NO_COUNTERPART.search(k)}
    for name, layer in zip(THEIR_LAYERS, layers_in_order(ours), strict=True):
        state[next(k for k, v in ours.named_buffers() if v is layer.experts[1].bottleneck)] = getattr(
            theirs, name
        ).BottleneckTransFusion.bottleneck
    state["cls_token"] = theirs.cls_multimodal.view(1, 1, -1)
    ours.load_state_dict(state, strict=True)


@pytest.mark.authors_code
def test_matches_the_authors_mome(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # their __init__ moves tokens to CUDA
    authors = authors_module("MoME", "models.model_mome", packages=["nystrom_attention", "admin_torch", "einops"])
    torch.manual_seed(0)
    theirs = authors.MoMETransformer(n_bottlenecks=2, omic_sizes=BLCA, n_classes=4).eval()
    ours = MoME(1024, n_bins=4, omic_sizes=BLCA, dim=512).eval()
    their_count = sum(p.numel() for p in theirs.parameters())
    our_count = sum(p.numel() for p in ours.parameters())
    print(f"MoME parameters (BLCA families): authors {their_count}, ours {our_count}")
    assert their_count - our_count == 4 * 512  # the four bottleneck experts' unused RMSNorm weights
    their_weights_on_ours(theirs, ours)

    routed = []
    for name in THEIR_LAYERS:
        getattr(theirs, name).routing_network.register_forward_hook(lambda _, args, out: routed.append(out))
    worst, chosen = 0.0, set()
    for seed, n_patches in ((0, 300), (1, 57), (2, 1000)):
        wsi, families = genomic_inputs(n_patches=n_patches, wsi_dim=1024, sizes=BLCA, seed=seed)
        routed.clear()
        with torch.no_grad():
            their_hazards = theirs(x_path=wsi[0], **{f"x_omic{i + 1}": f[0] for i, f in enumerate(families)})[0]
            out = ours(wsi, families)
        assert torch.allclose(torch.cat(routed), out["expert_probabilities"][0], atol=1e-6)
        chosen |= set(out["expert_probabilities"][0].argmax(-1).tolist())
        worst = max(worst, (their_hazards - out["hazards"]).abs().max().item())
    print(f"MoME max |hazards difference| vs the authors: {worst:.2e} (experts used: {sorted(chosen)})")
    assert worst <= 1e-5

    # Every expert of every layer, whichever the routers happen to pick, both ways round.
    g = torch.Generator().manual_seed(5)
    tokens, reference = torch.randn(1, 300, 512, generator=g), torch.randn(1, 6, 512, generator=g)
    worst_expert = 0.0
    for name, layer in zip(THEIR_LAYERS, layers_in_order(ours), strict=True):
        for their_expert, our_expert in zip(THEIR_EXPERTS, layer.experts, strict=True):
            for x1, x2 in ((tokens, reference), (reference, tokens)):
                with torch.no_grad():
                    expected = getattr(getattr(theirs, name), their_expert)(x1, x2)
                    worst_expert = max(worst_expert, (our_expert(x1, x2) - expected).abs().max().item())
    print(f"MoME max |expert output difference| vs the authors: {worst_expert:.2e}")
    assert worst_expert <= 1e-4
