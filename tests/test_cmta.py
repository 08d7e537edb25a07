"""CMTA: outputs for genomics and MRI, gradients, seeding, a training run, the alignment loss by hand, the authors' code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.cmta import CMTA, square_padded
from model.survival import risk_score, survival_curve
from model.train import TrainSettings
from tests.authors_code import authors_module, renamed
from tests.tiny_cohort import BLCA, SMALL, WSI_DIM, assert_seeded_and_deterministic, planted_cohort, train_briefly

LABELS = (torch.tensor([1]), torch.tensor([0]))  # bins, censorship: what auxiliary_loss is given
TOKENS = ("wsi_intra", "wsi_cross", "second_intra", "second_cross")


def genomic_inputs(
    sizes: list[int], n_patches: int, wsi_dim: int = WSI_DIM, batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_patches, wsi_dim, generator=g), [torch.randn(batch, d, generator=g) for d in sizes]


def small_model(**kwargs) -> CMTA:
    torch.manual_seed(0)
    return CMTA(WSI_DIM, omic_sizes=SMALL, dim=16, **kwargs)


def check_outputs(out: dict[str, torch.Tensor], batch: int, n_patches: int, dim: int) -> None:
    assert set(out) == {"hazards", "survival", "risk", "attention", *TOKENS}
    assert out["hazards"].shape == (batch, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    assert out["attention"].shape == (batch, n_patches) and (out["attention"] >= 0).all()
    assert torch.allclose(out["attention"].sum(-1), torch.ones(batch))
    assert all(out[key].shape == (batch, dim) for key in TOKENS)


@pytest.mark.parametrize("n_patches", [1, 7, 50])
def test_genomic_outputs_and_attention_sum_to_one(n_patches):
    model = small_model().eval()
    with torch.no_grad():
        out = model(*genomic_inputs(SMALL, n_patches, batch=2))
    check_outputs(out, batch=2, n_patches=n_patches, dim=16)


def test_mri_outputs_with_volume_tokens():
    torch.manual_seed(0)
    model = CMTA(WSI_DIM, mri_channels=2, mri_depth=10, dim=32).eval()
    wsi = torch.randn(1, 7, WSI_DIM)
    with torch.no_grad():
        out = model(wsi, [torch.randn(1, 2, 16, 32, 32)])
        tokens = model.second_tokens([torch.randn(1, 2, 16, 32, 32)])
    check_outputs(out, batch=1, n_patches=7, dim=32)
    assert tokens.shape[0] == 1 and tokens.shape[2] == 32  # (B, T, dim) in place of the six family tokens
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        CMTA(WSI_DIM, omic_sizes=SMALL, mri_channels=2)


def test_square_padding_repeats_the_first_tokens():
    tokens = torch.arange(5.0).view(1, 5, 1)
    assert square_padded(tokens).view(-1).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert square_padded(tokens[:, :4]).shape == (1, 4, 1)


def test_demo_size_step_gives_every_parameter_a_finite_gradient():
    torch.manual_seed(0)
    model = CMTA(1024, omic_sizes=BLCA).train()
    out = model(*genomic_inputs(BLCA, 50, wsi_dim=1024))
    (out["risk"].sum() + model.auxiliary_loss(out, TrainSettings(), *LABELS)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_same_seed_same_outputs_and_eval_is_deterministic():
    assert_seeded_and_deterministic(small_model, *genomic_inputs(SMALL, 20), ("hazards", "attention", *TOKENS))


def test_nystrom_padding_switch_changes_short_sequences():
    inputs = genomic_inputs(SMALL, 7)
    with torch.no_grad():
        padded = small_model().eval()(*inputs)["hazards"]
        exact = small_model(nystrom_padding=False).eval()(*inputs)["hazards"]
    assert (padded - exact).abs().max().item() > 1e-4


def test_alignment_loss_by_hand():
    # alpha = 0.5. WSI: |[1, 2, 3] - [0, 4, 3]| = [1, 2, 0], mean 1.
    # Second, two patients: |[[0, 0, 0], [1, 1, 1]] - [[-3, 0, 1.5], [1, 1, 4]]| = [[3, 0, 1.5], [0, 0, 3]], mean 7.5 / 6 = 1.25.
    # Loss 0.5 * (1 + 1.25) = 1.125. The WSI term for patient 2 repeats patient 1 (mean unchanged).
    wsi_intra = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], requires_grad=True)
    wsi_cross = torch.tensor([[0.0, 4.0, 3.0], [0.0, 4.0, 3.0]], requires_grad=True)
    second_intra = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], requires_grad=True)
    second_cross = torch.tensor([[-3.0, 0.0, 1.5], [1.0, 1.0, 4.0]], requires_grad=True)
    out = {"wsi_intra": wsi_intra, "wsi_cross": wsi_cross, "second_intra": second_intra, "second_cross": second_cross}
    model = small_model(alignment_weight=0.5)
    loss = model.auxiliary_loss(out, TrainSettings(), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(1.125)
    loss.backward()
    # d/d cross = 0.5 * sign(cross - intra) / 6 (sign 0 where equal); the intra-modal tokens are detached targets
    assert wsi_intra.grad is None and second_intra.grad is None
    assert np.allclose(wsi_cross.grad.numpy(), 0.5 / 6 * np.array([[-1, 1, 0], [-1, 1, 0]]))
    assert np.allclose(second_cross.grad.numpy(), 0.5 / 6 * np.array([[-1, 0, 1], [0, 0, 1]]))


def test_tiny_training_run():
    result, _, _ = train_briefly(small_model, planted_cohort(10), 7)
    assert all(set(details) == {"attention"} for details in result.details.values())  # loss-only tokens unsaved


# The authors' names -> ours, applied in order to each state_dict key.
RENAMES = [
    (r"^pathomics_fc\.", "wsi_fc."),
    (r"^genomics_fc\.", "second_tokens.nets."),
    (r"^pathomics_(en|de)coder\.", r"wsi_\1coder."),
    (r"^genomics_(en|de)coder\.", r"second_\1coder."),
    (r"^P_in_G_Att\.", "wsi_from_second."),
    (r"^G_in_P_Att\.", "second_from_wsi."),
    (r"\.attn\.res_conv\.", ".attention.residual."),
    (r"\.attn\.", ".attention."),
    (r"\.pos_layer\.proj\.", ".ppeg.convs.0."),
    (r"\.pos_layer\.proj1\.", ".ppeg.convs.1."),
    (r"\.pos_layer\.proj2\.", ".ppeg.convs.2."),
    (r"^mm\.", "head."),
    (r"^classifier\.", "head.4."),
]


def ours_from_theirs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {renamed(key, RENAMES): value for key, value in state.items()}


@pytest.mark.authors_code
@pytest.mark.parametrize("n_patches", [50, 300])
def test_matches_the_authors_cmta(monkeypatch, n_patches):
    network = authors_module("CMTA", "models.cmta.network", packages=["einops"])
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # their class tokens call .cuda()
    torch.manual_seed(1)
    theirs = network.CMTA(omic_sizes=BLCA, n_classes=4).eval()
    ours = CMTA(1024, 4, omic_sizes=BLCA).eval()
    counts = [sum(p.numel() for p in m.parameters()) for m in (theirs, ours)]
    print(f"CMTA parameters (BLCA families): authors {counts[0]}, ours {counts[1]}")
    assert counts[0] == counts[1]
    ours.load_state_dict(ours_from_theirs(theirs.state_dict()))
    wsi, second = genomic_inputs(BLCA, n_patches, wsi_dim=1024, seed=n_patches)
    omics = {f"x_omic{i + 1}": x[0] for i, x in enumerate(second)}  # their loader gives unbatched (d_i,) vectors
    with torch.no_grad():
        hazards, _, p, p_hat, g, g_hat = theirs(x_path=wsi[0], **omics)
        out = ours(wsi, second)
    difference = (hazards - out["hazards"]).abs().max().item()
    print(f"CMTA max |hazards difference| with {n_patches} patches: {difference:.2e}")
    assert difference <= 1e-5
    for key, theirs_token in zip(TOKENS, (p, p_hat, g, g_hat), strict=True):
        assert (theirs_token - out[key]).abs().max().item() <= 1e-5, key
