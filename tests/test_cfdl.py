"""CFDL: outputs, the LinG_GN gate and the disentanglement losses by hand, training, the authors' code."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from model.cfdl import CFDL, DisentangledFusion, DynamicExpertFusion, difference_loss, similarity_loss
from model.survival import nll_survival_loss, risk_score, survival_curve
from model.train import TrainSettings
from tests.authors_code import authors_module, renamed
from tests.tiny_cohort import BLCA, SMALL, WSI_DIM, assert_seeded_and_deterministic, planted_cohort, train_briefly

LABELS = (torch.tensor([1]), torch.tensor([0]))  # bins, censorship: auxiliary_loss does not read them


def inputs(modality: str = "genomics", n: int = 20, batch: int = 1, sizes=SMALL, wsi_dim=WSI_DIM, seed=0, depth=16):
    g = torch.Generator().manual_seed(seed)
    wsi = torch.randn(batch, n, wsi_dim, generator=g)
    if modality == "mri":
        return wsi, [torch.randn(batch, 2, depth, 32, 32, generator=g)]
    return wsi, [torch.randn(batch, d, generator=g) for d in sizes]


def small(modality: str = "genomics", **kwargs) -> CFDL:
    second = {"mri_channels": 2, "mri_depth": 10} if modality == "mri" else {"omic_sizes": SMALL}
    return CFDL(WSI_DIM, dim=16, **second, **kwargs)


@pytest.mark.parametrize("modality", ["genomics", "mri"])
def test_output_shapes_and_attention(modality):
    torch.manual_seed(0)
    model = small(modality).eval()
    with torch.no_grad():
        out = model(*inputs(modality, n=30, batch=2))
    assert set(out) == {"hazards", "survival", "risk", "attention", "shared", "specific", "gates"}
    assert out["hazards"].shape == (2, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    assert out["shared"].shape == out["specific"].shape == (2, 2, 32) and out["gates"].shape == (2, 3)
    assert torch.allclose(out["gates"].sum(-1), torch.ones(2))
    assert out["attention"].shape == (2, 30) and (out["attention"] >= 0).all()
    assert torch.allclose(out["attention"].sum(-1), torch.ones(2))
    assert torch.isfinite(model.auxiliary_loss(out, TrainSettings(), *LABELS))


@pytest.mark.parametrize("kwargs", [{}, {"omic_sizes": SMALL, "mri_channels": 2}], ids=["neither", "both"])
def test_needs_exactly_one_second_modality(kwargs):
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        CFDL(WSI_DIM, **kwargs)


def test_demo_sizes_forward_backward_reach_every_parameter():
    torch.manual_seed(0)
    model = CFDL(1024, omic_sizes=BLCA).train()
    out = model(*inputs(n=50, sizes=BLCA, wsi_dim=1024))
    bins, censorship = torch.tensor([2]), torch.tensor([0])
    loss = nll_survival_loss(out["hazards"], bins, censorship) + model.auxiliary_loss(
        out, TrainSettings(), bins, censorship
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the L1 penalty covers the genomic SNN's two blocks
    assert [tuple(w.shape) for w in model.genomic_weights()] == [(256, sum(BLCA)), (256, 256)]


def test_mri_training_step_reaches_every_parameter():
    """Batch size 1 in training mode, as the loop runs: batch norm needs a volume over 32 deep."""
    torch.manual_seed(0)
    model = small("mri").train()
    out = model(*inputs("mri", depth=33))
    (out["risk"].sum() + model.auxiliary_loss(out, TrainSettings(), *LABELS)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.genomic_weights() == []


def test_same_seed_same_model_and_eval_is_deterministic():
    assert_seeded_and_deterministic(small, *inputs(), ("hazards",))


def test_the_shared_head_is_one_module_for_both_modalities():
    torch.manual_seed(0)
    model = small().eval()
    wsi, second = inputs()
    with torch.no_grad():
        out = model(wsi, second)
        pooled, _ = model.wsi_pool(wsi)
        embedding = model.second_encoder(second)
        heads = model.fusion.disentangle
    assert torch.allclose(out["shared"][:, 0], heads.shared(pooled)) and torch.allclose(
        out["shared"][:, 1], heads.shared(embedding)
    )
    assert torch.allclose(out["specific"][:, 0], heads.specific[0](pooled))
    assert torch.allclose(out["specific"][:, 1], heads.specific[1](embedding))


def test_dynamic_expert_fusion_by_hand():
    """LinG_GN: g = W relu(flattened) + b, weights softmax(x_e · g); the experts' outputs weighted, concatenated."""
    torch.manual_seed(0)
    fusion = DynamicExpertFusion(feature_dim=4, n_features=3)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    params = {k: v.detach().double().numpy() for k, v in fusion.state_dict().items()}
    g = relu(x.reshape(2, 12)) @ params["gate.global_fc.1.weight"].T + params["gate.global_fc.1.bias"]
    logits = np.einsum("bef,bf->be", x, g)
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    experts = [relu(x[:, e]) @ params[f"experts.{e}.1.weight"].T + params[f"experts.{e}.1.bias"] for e in range(3)]
    expected = np.concatenate([weights[:, e : e + 1] * experts[e] for e in range(3)], axis=1)
    fused, got = fusion.double()(torch.tensor(x))
    np.testing.assert_allclose(got.detach().numpy(), weights, rtol=1e-12)
    np.testing.assert_allclose(fused.detach().numpy(), expected, rtol=1e-12)


def test_disentanglement_losses_by_hand():
    # one patient, features chosen so every term is a number by hand
    shared = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    specific = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    # MSE: (1 + 1 + 0) / 3; fused shared = (0.5, 0.5, 0): |cos| with (0, 0, 1) is 0, with (1, 0, 0) is 1/√2,
    # and the two specific features are orthogonal
    assert float(similarity_loss(shared)) == pytest.approx(2 / 3, rel=1e-12)
    assert float(difference_loss(shared, specific)) == pytest.approx(2**-0.5, rel=1e-12)
    model = small(similarity_weight=0.5, difference_weight=2.0)
    loss = model.auxiliary_loss({"shared": shared, "specific": specific}, TrainSettings(), *LABELS)
    assert float(loss) == pytest.approx(0.5 * 2 / 3 + 2 * 2**-0.5, rel=1e-12)


def test_disentanglement_losses_by_numpy_over_a_batch_and_three_modalities():
    rng = np.random.default_rng(1)
    shared, specific = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))

    def abs_cos(a, b):
        return np.mean(np.abs(np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))

    pairs = [(0, 1), (0, 2), (1, 2)]
    expected_similarity = sum(np.mean((shared[:, i] - shared[:, j]) ** 2) for i, j in pairs)
    fused = [shared.mean(1), specific[:, 0], specific[:, 1], specific[:, 2]]
    expected_difference = sum(abs_cos(fused[i], fused[j]) for i in range(4) for j in range(i + 1, 4))
    s, p = torch.tensor(shared), torch.tensor(specific)
    assert float(similarity_loss(s)) == pytest.approx(expected_similarity, rel=1e-12)
    assert float(difference_loss(s, p)) == pytest.approx(expected_difference, rel=1e-12)


def test_trains_through_the_real_loop():
    train_briefly(small, planted_cohort(10), 7)  # checks the log and the held-out predictions


# --- the authors' code -------------------------------------------------------------------------------------------
# Their network reads >= 3 MRI volumes through its own 3D ResNets, so the comparison is of what comes after
# the encoders: their disentanglement heads, MoE (DMF with the 'importance' gate, LinG_GN), classifier and
# loss terms, on the same encoder features. Their ResNet-18 backbones are swapped for identities (no
# parameters), so their forward reads (B, M, 512) features directly.

RENAMES = [
    (r"^linear_dis_share\.", "disentangle.shared."),
    (r"^linear_dis_spec\.", "disentangle.specific."),
    (r"^moe_model\.experts\.", "fusion.experts."),
    (r"^moe_model\.gating_fc\.", "fusion.gate.global_fc."),
    (r"^linear_cls\.", "classifier."),
]
THEIR_FEATURES = 512  # their ResNet-18's pooled width (CFDL.py's dim_out for model_depth 18)


def ours_from_theirs(theirs: nn.Module) -> dict[str, torch.Tensor]:
    """Their heads', MoE's and classifier's weights under the names of ``DisentangledFusion``."""
    return {renamed(key, RENAMES): value for key, value in theirs.state_dict().items()}


def their_options(dataset: str) -> SimpleNamespace:
    """The option defaults of their main.py (lines 30-144) that CFDL reads, partial-shared features off."""
    return SimpleNamespace(
        dataset_name=dataset,
        run_type="train",
        feature_dim=32,
        model_depth=18,
        encoder_drop=0.5,
        cls_drop=0.5,
        ifdis_sup=0,  # partial-shared heads: none exist for two modalities; off to compare 3 and 4 without them
        if_allpair=1,
        ifalign_space=0,
        fusion_type="moe",
        moe_fusion_type="concat",
        gating_type="importance",
        gating_concat_mlp_layer="multi",
        ifmoe_aux=0,
        w_moe_aux=0.5,
        if_ccl=0,
        w_ccl=1.0,
        w_main_cls=1.0,
        w_sim=1.0,
        w_diff=1.0,
        sim_loss_type="l2norm",
        diff_loss_type="cosine",
        tau=0.07,
    )


@pytest.fixture
def authors(monkeypatch):
    """Their CFDL module with identity backbones; ``.cuda()`` (their zero loss terms) is a no-op on the CPU."""
    module = authors_module("CFDL", "models.CFDL")
    # their ResNet-18, of which they keep the first ten children: here ten identities
    monkeypatch.setattr(module, "resnet18", lambda modal_num: nn.Sequential(*(nn.Identity() for _ in range(10))))
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    return module


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.authors_code
def test_matches_the_authors_modules_for_two_modalities(authors):
    """Our whole CFDL (WSI + BLCA genomics) against their modules built for two modalities.

    Their constructor sets the modality count only for its datasets (3 or 4), so a subclass gives it 2
    (with ``ifdis_sup`` off: two modalities have no partial subsets); their forward has no two-modality
    branch, so their modules are called here in the order of its three-modality branch (CFDL.py 524-550,
    805-883). Our encoders' outputs feed both.
    """

    class TwoModalities(authors.CFDL):
        modal_num = 2

    torch.manual_seed(0)
    theirs = TwoModalities(args=their_options("tcga_blca"), criterion=nn.CrossEntropyLoss(), num_classes=4).eval()
    ours = CFDL(1024, omic_sizes=BLCA, dim=THEIR_FEATURES).eval()
    ours.fusion.load_state_dict(ours_from_theirs(theirs))
    theirs_count, ours_count = parameter_count(theirs), parameter_count(ours.fusion)
    print(f"CFDL compared parameters (heads, DMF, classifier): authors {theirs_count:,}, ours {ours_count:,}")
    assert ours_count == theirs_count == 59_812
    seen = {}
    ours.fusion.register_forward_pre_hook(lambda _, args: seen.update(features=torch.stack(args[0], dim=1)))
    worst = {"hazards": 0.0, "gates": 0.0, "loss": 0.0}
    for seed, (batch, n) in enumerate([(1, 60), (3, 200), (2, 7)]):
        with torch.no_grad():
            out = ours(*inputs(n=n, batch=batch, sizes=BLCA, wsi_dim=1024, seed=seed))
            x = [theirs.backbone_encoder[i](seen["features"][:, i]) for i in range(2)]
            shared = [theirs.linear_dis_share(v) for v in x]
            share = (shared[0] + shared[1]) / theirs.modal_num
            specific = [theirs.linear_dis_spec[i](v) for i, v in enumerate(x)]
            moe = theirs.moe_model([share, *specific])
            hazards = torch.sigmoid(theirs.linear_cls(moe["moe_output"]))
            loss = theirs.calc_sim(shared[0], shared[1]) * theirs.args.w_sim + (
                theirs.calc_diff_loss([share, *specific]) * theirs.args.w_diff
            )
            mine = ours.auxiliary_loss(out, TrainSettings(), *LABELS)
        worst["hazards"] = max(worst["hazards"], (hazards - out["hazards"]).abs().max().item())
        worst["gates"] = max(worst["gates"], (moe["gating_weights"] - out["gates"]).abs().max().item())
        worst["loss"] = max(worst["loss"], abs(float(loss) - float(mine)))
    print(f"CFDL max differences (two modalities, eval): {worst}")
    assert all(v <= 1e-5 for v in worst.values())


@pytest.mark.authors_code
@pytest.mark.parametrize(("dataset", "modalities", "classes"), [("men", 3, 3), ("brats", 4, 2)])
def test_disentangled_fusion_matches_the_authors_forward(authors, dataset, modalities, classes):
    """Their unmodified forward (identity backbones, partial-shared off) against ``DisentangledFusion``
    for three and four modalities: logits, features, gate weights and the two loss terms."""
    torch.manual_seed(0)
    theirs = authors.CFDL(args=their_options(dataset), criterion=nn.CrossEntropyLoss(), num_classes=classes).eval()
    ours = DisentangledFusion(THEIR_FEATURES, 32, modalities, classes).eval()
    ours.load_state_dict(ours_from_theirs(theirs))
    assert parameter_count(ours) == parameter_count(theirs)
    worst = 0.0
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(4, modalities, THEIR_FEATURES, generator=g)
        label = torch.randint(classes, (4,), generator=g)
        with torch.no_grad():
            tested = theirs(x, run_type="test")
            trained = theirs(x, label)
            out = ours(list(x.unbind(1)))
        expected = {
            "logits": tested["out_prediction"],
            "gates": tested["gating_weights"],
            "shared": torch.stack([tested[f"x_{m}_share"] for m in range(modalities)], 1),
            "specific": torch.stack([tested[f"x_{m}_spec"] for m in range(modalities)], 1),
        }
        for key, value in expected.items():
            worst = max(worst, (value - out[key]).abs().max().item())
        worst = max(worst, abs(float(trained["share_sim_loss"]) - float(similarity_loss(out["shared"]))))
        worst = max(worst, abs(float(trained["diff_loss"]) - float(difference_loss(out["shared"], out["specific"]))))
    print(f"CFDL max difference ({modalities} modalities, their forward): {worst:.2e}")
    assert worst <= 1e-5
