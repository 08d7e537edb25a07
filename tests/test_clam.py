"""CLAM-SB/MB for survival: the output contract, the instance clustering loss by hand, a training run, the authors' code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.clam import CLAM, instance_clustering_loss, smooth_top1_svm
from model.survival import nll_survival_loss, risk_score, survival_curve
from model.train import TrainSettings
from tests.authors_code import authors_module
from tests.tiny_cohort import SMALL, WSI_DIM, assert_seeded_and_deterministic, planted_cohort, train_briefly

VARIANTS = {"sb": False, "mb": True}


def tiny(multi_branch: bool) -> CLAM:
    return CLAM(WSI_DIM, multi_branch=multi_branch, dim=16, attention_dim=8)


def bag(n_patches: int, batch: int = 1, wsi_dim: int = WSI_DIM, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, n_patches, wsi_dim, generator=torch.Generator().manual_seed(seed))


def second_modality(modality: str, batch: int) -> list[torch.Tensor]:
    if modality == "mri":
        return [torch.randn(batch, 2, 16, 32, 32)]
    return [torch.randn(batch, d) for d in SMALL]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("modality", ["genomics", "mri"])
@pytest.mark.parametrize("n_patches", [1, 3, 50])
def test_output_contract_and_k_clamped_to_the_bag(variant, modality, n_patches):
    torch.manual_seed(0)
    model = tiny(VARIANTS[variant]).eval()
    with torch.no_grad():
        out = model(bag(n_patches, batch=2), second_modality(modality, 2))
    assert set(out) == {"hazards", "survival", "risk", "attention", "instance_logits"}
    assert out["hazards"].shape == (2, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    assert out["attention"].shape == (2, n_patches) and (out["attention"] >= 0).all()
    assert torch.allclose(out["attention"].sum(-1), torch.ones(2))
    k = min(8, n_patches)
    assert out["instance_logits"].shape == (2, 4, 2 * k, 2)
    loss = model.auxiliary_loss(out, TrainSettings(), torch.tensor([0, 3]), torch.tensor([0, 1]))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_training_step_on_demo_sizes_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = CLAM(1024, multi_branch=VARIANTS[variant]).train()
    out = model(bag(50, wsi_dim=1024), [])
    # an event in the last bin: the NLL reads every hazard and every bin's branch has an instance term
    bins, censorship = torch.tensor([3]), torch.tensor([0])
    loss = nll_survival_loss(out["hazards"], bins, censorship) + model.auxiliary_loss(
        out, TrainSettings(), bins, censorship
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_seed_same_outputs_and_eval_is_deterministic(variant):
    assert_seeded_and_deterministic(lambda: tiny(VARIANTS[variant]), bag(20), [])


def test_multi_branch_has_one_attention_head_and_bag_head_per_bin():
    sb, mb = tiny(False), tiny(True)
    assert sb.gate.attention_c.out_features == 1 and mb.gate.attention_c.out_features == 4
    assert sb.bag_head.out_features == 4 and [h.out_features for h in mb.bag_head] == [1, 1, 1, 1]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_tiny_training_run_through_the_real_loop(variant):
    result, _, held_out = train_briefly(lambda: tiny(VARIANTS[variant]), planted_cohort(12, families=[]), 8)
    assert result.details["P8"]["attention"].shape == (len(held_out[0].bag),)


def _ce(logits: np.ndarray, target: int) -> float:
    """Cross-entropy of one instance, by hand."""
    return float(np.log(np.exp(logits).sum()) - logits[target])


# (B=2, n_bins=3, 2k=2, 2): per bin, the top-1 patch's then the bottom-1 patch's two instance logits
LOGITS = np.array(
    [
        [[[0.2, -0.4], [1.0, 0.3]], [[-0.5, 0.9], [0.1, 0.6]], [[0.7, 0.0], [-1.2, 0.4]]],
        [[[0.3, 0.8], [0.0, -0.2]], [[1.5, -0.1], [0.2, 0.2]], [[-0.6, 0.5], [0.9, -0.9]]],
    ]
)


def test_instance_clustering_loss_by_hand():
    logits = torch.tensor(LOGITS)
    bins, censorship = torch.tensor([1, 2]), torch.tensor([0, 1])
    # patient 0, event in bin 1: bin 1 in-class (top positive, bottom negative), bins 0 and 2 top negative
    event = (_ce(LOGITS[0, 1, 0], 1) + _ce(LOGITS[0, 1, 1], 0)) / 2 + _ce(LOGITS[0, 0, 0], 0) + _ce(LOGITS[0, 2, 0], 0)
    # patient 1, censored in bin 2: only the earlier bins 0 and 1 are known wrong
    censored = _ce(LOGITS[1, 0, 0], 0) + _ce(LOGITS[1, 1, 0], 0)
    expected = (event / 3 + censored / 3) / 2
    assert instance_clustering_loss(logits, bins, censorship).item() == pytest.approx(expected, abs=1e-12)
    # without subtyping only the event's own bin counts, undivided
    in_class = (_ce(LOGITS[0, 1, 0], 1) + _ce(LOGITS[0, 1, 1], 0)) / 2
    assert instance_clustering_loss(logits, bins, censorship, subtyping=False).item() == pytest.approx(in_class / 2)
    # censored in the first bin: nothing is known wrong
    assert instance_clustering_loss(logits[:1], torch.tensor([0]), torch.tensor([1])).item() == 0.0


def test_smooth_top1_svm_by_hand():
    scores = torch.tensor([[0.5, -0.3], [0.5, -0.3], [8.0, 0.0], [8.0, 0.0]])
    target = torch.tensor([0, 1, 1, 0])
    expected = [
        np.log(np.exp(0.0) + np.exp(-0.3 + 1 - 0.5)),  # smooth: tau log sum exp(s_j + [j != y] - s_y)
        np.log(np.exp(0.5 + 1 + 0.3) + np.exp(0.0)),
        8.0 + 1.0,  # the lead 8 >= log(1000): the package's hard max
        0.0,
    ]
    assert smooth_top1_svm(scores, target).tolist() == pytest.approx(expected, abs=1e-6)


def test_auxiliary_loss_weighs_the_instance_loss_against_the_nll():
    """The loop adds the NLL with weight 1, so 0.3 / 0.7 of the instance loss gives CLAM's total / 0.7."""
    torch.manual_seed(0)
    model = tiny(False).eval()
    svm = tiny(False).eval()
    svm.load_state_dict(model.state_dict())
    svm.instance_loss = "svm"
    with torch.no_grad():
        out = model(bag(20), [])
    bins, censorship = torch.tensor([1]), torch.tensor([0])
    clustering = instance_clustering_loss(out["instance_logits"], bins, censorship)
    assert model.auxiliary_loss(out, TrainSettings(), bins, censorship).item() == pytest.approx(
        clustering.item() * 0.3 / 0.7
    )
    with_svm = instance_clustering_loss(out["instance_logits"], bins, censorship, kind="svm")
    assert svm.auxiliary_loss(out, TrainSettings(), bins, censorship).item() == pytest.approx(with_svm.item() * 3 / 7)
    assert with_svm.item() != pytest.approx(clustering.item())


def test_rejects_unknown_instance_loss_and_bad_weights():
    with pytest.raises(ValueError, match="instance_loss 'hinge'"):
        CLAM(WSI_DIM, instance_loss="hinge")
    with pytest.raises(ValueError, match="bag_weight must be in"):
        CLAM(WSI_DIM, bag_weight=0.0)


def authors_keys(key: str) -> str:
    """Our parameter name -> the authors' (CLAM ``attention_net`` = fc + ``Attn_Net_Gated`` at index 3)."""
    for ours, theirs in (
        ("fc.", "attention_net."),
        ("gate.", "attention_net.3."),
        ("bag_head", "classifiers"),
        ("instance_heads", "instance_classifiers"),
    ):
        if key.startswith(ours):
            return theirs + key.removeprefix(ours)
    raise KeyError(key)


@pytest.mark.authors_code
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_the_authors_clam(variant):
    clam = authors_module("CLAM", "models.model_clam")
    network = clam.CLAM_MB if VARIANTS[variant] else clam.CLAM_SB
    options = {"size_arg": "small", "dropout": 0.25, "k_sample": 8, "n_classes": 4, "subtyping": True}
    torch.manual_seed(0)
    theirs = network(**options).eval()
    torch.manual_seed(0)
    ours = CLAM(1024, multi_branch=VARIANTS[variant]).eval()
    counts = [sum(p.numel() for p in m.parameters()) for m in (ours, theirs)]
    print(f"CLAM-{variant.upper()} parameters: ours {counts[0]:,}, authors' {counts[1]:,}")
    assert counts[0] == counts[1]
    mapped = {authors_keys(k): v for k, v in ours.state_dict().items()}
    assert mapped.keys() == theirs.state_dict().keys()
    # built in the authors' order, one seed gives their weights
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in mapped.items())
    torch.manual_seed(1)
    theirs.load_state_dict({authors_keys(k): torch.randn_like(v) * 0.1 for k, v in ours.state_dict().items()})
    ours.load_state_dict({k: theirs.state_dict()[authors_keys(k)] for k in ours.state_dict()})
    worst_hazards, worst_instance = 0.0, 0.0
    for seed, label in zip(range(4), range(4), strict=True):
        wsi = bag(300, wsi_dim=1024, seed=seed)
        with torch.no_grad():
            logits, *_, extra = theirs(wsi[0], label=torch.tensor([label]), instance_eval=True)
            out = ours(wsi, [])
        clustering = instance_clustering_loss(out["instance_logits"], torch.tensor([label]), torch.tensor([0]))
        worst_hazards = max(worst_hazards, (torch.sigmoid(logits) - out["hazards"]).abs().max().item())
        worst_instance = max(worst_instance, abs(float(extra["instance_loss"]) - clustering.item()))
    print(f"CLAM-{variant.upper()} max |hazards difference| {worst_hazards:.2e}, instance loss {worst_instance:.2e}")
    assert worst_hazards <= 1e-5 and worst_instance <= 1e-5
