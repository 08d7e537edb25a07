"""DeReF: shapes, the reference's parameter count, each paper-vs-code switch, test-time behaviour, MRI cohorts."""

from __future__ import annotations

import pytest
import torch

from model.deref import DeReF, DeReFOptions, RegionalCrossAttention
from model.encoders import NystromAttention, TransMIL, moore_penrose_pinv
from model.losses import decoupling_loss
from model.train import TrainSettings
from tests.tiny_cohort import BLCA, LABELS, SMALL


def inputs(sizes, n_patches=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, n_patches, 1024, generator=g), [torch.randn(1, d, generator=g) for d in sizes]


def test_reference_parameter_count_matches_the_authors_model():
    # docs/models.md §1.1: 6,954,149 parameters used by the authors' DeReF with the BLCA family sizes.
    assert sum(p.numel() for p in DeReF(BLCA, options=DeReFOptions.reference()).parameters()) == 6_954_149


@pytest.mark.parametrize(
    "options",
    [DeReFOptions(), DeReFOptions.reference(), DeReFOptions(n_experts=6)],
    ids=["paper", "reference", "paper-6-experts"],
)
@pytest.mark.parametrize("n_patches", [1, 37, 300])
def test_output_shapes(options, n_patches):
    torch.manual_seed(0)
    model = DeReF(SMALL, options=options)
    wsi, second = inputs(SMALL, n_patches)
    out = model(wsi, second)
    assert out["hazards"].shape == (1, 4) and out["survival"].shape == (1, 4) and out["risk"].shape == (1,)
    assert ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert out["gate"].shape == (1, options.n_experts) and torch.allclose(out["gate"].sum(), torch.tensor(1.0))
    for key in ("genomic", "pathology", "shared", "explore"):
        assert out[key].shape == (1, 128)
    assert out["attention"].shape == (1, n_patches)
    assert torch.allclose(out["attention"].sum(-1), torch.ones(1)) and (out["attention"] >= 0).all()


def test_mri_cohort_shapes_and_attention():
    torch.manual_seed(0)
    model = DeReF(wsi_dim=32, dim=64, c2=32, mri_channels=5, mri_depth=10).eval()
    wsi, volume = torch.randn(1, 7, 32), torch.randn(1, 5, 16, 16, 16)
    with torch.no_grad():
        out = model(wsi, [volume])
    assert out["hazards"].shape == (1, 4) and out["survival"].shape == (1, 4) and out["risk"].shape == (1,)
    assert out["genomic"].shape == (1, 32) and out["gate"].shape == (1, 4)
    assert out["attention"].shape == (1, 7) and torch.allclose(out["attention"].sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="MRI models take"):
        model(wsi, [torch.randn(1, 7)])


@pytest.mark.parametrize("kwargs", [{}, {"omic_sizes": SMALL, "mri_channels": 5}], ids=["neither", "both"])
def test_exactly_one_second_modality(kwargs):
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        DeReF(**kwargs)


def test_positional_omic_sizes_still_work():
    model = DeReF(SMALL, 32, 4, 64, 32)
    assert model.head.out_features == 4 and model.encoders.wsi_fc[0].in_features == 32


def test_reference_gate_needs_four_experts():
    with pytest.raises(ValueError, match="needs exactly 4 experts"):
        DeReFOptions(gate="reference", n_experts=6)


def test_rca_reference_is_the_authors_formula():
    torch.manual_seed(1)
    rca = RegionalCrossAttention(8, 4, reference=True)
    g, p = torch.randn(1, 8), torch.randn(1, 8)
    a, b = rca.fc_m(g)[0], rca.fc_p(p)[0]
    x1, x2 = torch.cat([a, b]), torch.cat([b, a])
    attention = torch.softmax(torch.outer(x1, x2), dim=-1)
    expected = (x2 @ attention[:, :4] + attention[:4, :] @ x1) / 2
    assert torch.allclose(rca(g, p)[0], expected, atol=1e-6)


def test_rca_paper_is_algorithm_1_as_written():
    torch.manual_seed(1)
    rca = RegionalCrossAttention(8, 4, reference=False)
    g, p = torch.randn(1, 8), torch.randn(1, 8)
    a, b = rca.fc_m(g)[0], rca.fc_p(p)[0]
    x1, x2 = torch.cat([a, b]), torch.cat([b, a])
    m = torch.outer(x1, x2)
    left = torch.cat([m[:4, :4], m[4:, :4]])  # [M_m1m2; M_m2m2]
    top_t = torch.cat([m[:4, :4], m[:4, 4:]], dim=1).T  # [M_m1m2, M_m1m1]ᵀ
    expected = (x1 @ torch.softmax(left, dim=0) + x2 @ torch.softmax(top_t, dim=0)) / 2
    assert torch.allclose(rca(g, p)[0], expected, atol=1e-6)
    reference = RegionalCrossAttention(8, 4, reference=True)
    reference.load_state_dict(rca.state_dict())
    assert not torch.allclose(reference(g, p), rca(g, p), atol=1e-3)  # the switch changes the result


def test_final_relu_switch():
    torch.manual_seed(0)
    wsi, second = inputs(SMALL)
    with_relu = DeReF(SMALL, options=DeReFOptions(final_relu=True)).eval()
    assert (with_relu(wsi, second)["genomic"] >= 0).all() and (with_relu(wsi, second)["pathology"] >= 0).all()
    without = DeReF(SMALL, options=DeReFOptions()).eval()
    assert (without(wsi, second)["genomic"] < 0).any()


def test_nystrom_padding_switch_changes_the_attention():
    torch.manual_seed(0)
    padded = TransMIL(64, ppeg=False, pad_to_landmarks=True)
    exact = TransMIL(64, ppeg=False, pad_to_landmarks=False)
    exact.load_state_dict(padded.state_dict())
    tokens = torch.randn(1, 6, 64)
    assert not torch.allclose(padded.eval()(tokens)[0], exact.eval()(tokens)[0], atol=1e-4)


def test_nystrom_equals_exact_attention_when_every_token_is_a_landmark():
    torch.manual_seed(0)
    nystrom = NystromAttention(dim=32, heads=4, dim_head=8, landmarks=16, pinv_iterations=20).eval()
    x = torch.randn(1, 16, 32)
    nystrom.pad_to_landmarks = True
    approx = nystrom(x)
    nystrom.pad_to_landmarks = False
    assert torch.allclose(approx, nystrom(x), atol=1e-4)


def test_moore_penrose_iterations_converge_to_the_inverse():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(8, 8), dim=-1) + torch.eye(8)
    assert torch.allclose(moore_penrose_pinv(a, 20) @ a, torch.eye(8), atol=1e-4)


def test_segment_choices_follow_the_preset():
    assert DeReF(SMALL).segment_choices == (64, 16, 8, 4, 2)
    assert DeReF(SMALL, options=DeReFOptions.reference()).segment_choices == (2, 4, 8, 16, 32, 64)


def test_test_time_reorganisation_average_is_deterministic_and_random_is_seeded():
    torch.manual_seed(0)
    wsi, second = inputs(SMALL)
    model = DeReF(SMALL).eval()
    with torch.no_grad():
        assert torch.equal(model(wsi, second)["hazards"], model(wsi, second)["hazards"])
    reference = DeReF(SMALL, options=DeReFOptions.reference(), seed=3).eval()
    with torch.no_grad():
        draws = [reference(wsi, second)["hazards"] for _ in range(6)]
        reference.reseed(3)
        again = [reference(wsi, second)["hazards"] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # random at test time, as the authors' code
    assert all(torch.equal(a, b) for a, b in zip(draws, again, strict=True))  # but reproducible from its seed


def test_same_seed_same_model_and_predictions():
    wsi, second = inputs(SMALL)
    outputs = []
    for _ in range(2):
        torch.manual_seed(42)
        model = DeReF(SMALL).eval()
        with torch.no_grad():
            outputs.append(model(wsi, second)["hazards"])
    assert torch.equal(*outputs)


def test_auxiliary_loss_is_the_weighted_decoupling_loss():
    torch.manual_seed(0)
    model = DeReF(SMALL).train()
    out = model(*inputs(SMALL))
    features = (out["genomic"], out["pathology"], out["shared"], out["explore"])
    expected = 0.5 * decoupling_loss(*features, "l1")
    assert torch.equal(
        model.auxiliary_loss(out, TrainSettings(decoupling_weight=0.5, distance="l1"), *LABELS), expected
    )


# The paper's ablations (Tables IV, VI, VII): each is a switch of DeReFOptions.


@pytest.mark.parametrize(
    ("options", "features", "gate"),
    [
        (DeReFOptions(explore=False), ("genomic", "pathology", "shared"), 4),
        (DeReFOptions(decouple=False), (), 4),
        (DeReFOptions(decoupler="concat_mlp"), ("genomic", "pathology", "shared", "explore"), 4),
        (DeReFOptions(decoupler="cross_attention"), ("genomic", "pathology", "shared", "explore"), 4),
        (DeReFOptions(rfr=False), ("genomic", "pathology", "shared", "explore"), 4),
        (DeReFOptions(moe=False), ("genomic", "pathology", "shared", "explore"), None),
        (DeReFOptions(segment_length=16), ("genomic", "pathology", "shared", "explore"), 4),
        (DeReFOptions(n_experts=2), ("genomic", "pathology", "shared", "explore"), 2),
    ],
    ids=["wo-explore", "wo-decoupling", "concat-mlp", "cross-attention", "wo-rfr", "wo-moe", "segment-16", "2-experts"],
)
def test_each_ablation_trains_and_outputs_what_it_keeps(options, features, gate):
    torch.manual_seed(0)
    model = DeReF(SMALL, options=options)
    wsi, second = inputs(SMALL, 20)
    out = model(wsi, second)
    assert model.decoupled_features() == features
    assert all(out[f].shape == (1, 128) for f in features)
    assert ("explore" in out) == ("explore" in features)
    assert ("gate" in out) == (gate is not None) and (gate is None or out["gate"].shape == (1, gate))
    loss = out["hazards"].sum() + model.auxiliary_loss(out, TrainSettings(), *LABELS)
    loss.backward()  # every kept parameter is reachable
    unused = [n for n, p in model.named_parameters() if p.grad is None and not n.startswith("encoders")]
    assert not unused


def test_ablations_remove_their_parameters():
    full = {n for n, _ in DeReF(SMALL).named_parameters()}
    assert not any(
        n.startswith("explore.") for n, _ in DeReF(SMALL, options=DeReFOptions(explore=False)).named_parameters()
    )
    without = {n for n, _ in DeReF(SMALL, options=DeReFOptions(decouple=False)).named_parameters()}
    assert not any(n.startswith(("shared.", "explore.", "genomic_specific.", "wsi_specific.")) for n in without)
    assert {n for n in full if n.startswith("gate.")} and not any(
        n.startswith("gate.") for n, _ in DeReF(SMALL, options=DeReFOptions(moe=False)).named_parameters()
    )


def test_without_rfr_the_features_are_concatenated_in_order_and_nothing_is_random():
    model = DeReF(SMALL, options=DeReFOptions(rfr=False), seed=1)
    assert model.segment_choices == (1,) and model.test_modes() == ("average",)
    stacked = torch.arange(8.0).view(1, 4, 2)
    from model.reorganise import reorganise

    assert torch.equal(reorganise(stacked, 1), stacked.flatten(1))


def test_fixed_segment_length_gives_one_choice():
    assert DeReF(SMALL, options=DeReFOptions(segment_length=2)).segment_choices == (64,)
    assert DeReF(SMALL, options=DeReFOptions(segment_length=64)).segment_choices == (2,)
    with pytest.raises(ValueError, match="does not divide"):
        DeReF(SMALL, options=DeReFOptions(segment_length=3))


def test_cross_attention_ablation_uses_the_inter_modality_block_only():
    torch.manual_seed(0)
    ca = RegionalCrossAttention(6, 3, regions="inter")
    second, pathology = torch.randn(2, 6), torch.randn(2, 6)
    a, b = ca.fc_m(second), ca.fc_p(pathology)
    m = a.unsqueeze(-1) * b.unsqueeze(-2)  # M_ij = a_i b_j
    out1 = torch.einsum("bi,bij->bj", a, torch.softmax(m, dim=1))
    out2 = torch.einsum("bj,bji->bi", b, torch.softmax(m.transpose(1, 2), dim=1))
    assert torch.allclose(ca(second, pathology), (out1 + out2) / 2, atol=1e-6)


def test_decoupling_loss_without_explore_drops_its_terms():
    g, p, sh = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    mse = torch.nn.functional.mse_loss
    assert torch.allclose(decoupling_loss(g, p, sh, None), mse(g, sh) + mse(p, sh) - mse(g, p))


def test_ablation_combinations_that_mean_nothing_are_errors():
    with pytest.raises(ValueError, match="no effect without the reorganisation"):
        DeReFOptions(rfr=False, segment_length=8)
    with pytest.raises(ValueError, match="no effect without the MoE"):
        DeReFOptions(moe=False, n_experts=6)
    with pytest.raises(ValueError, match="without the decoupling module"):
        DeReFOptions(decouple=False, explore=False)
    with pytest.raises(ValueError, match="reference gate"):
        DeReFOptions(gate="reference", explore=False)
