"""SNN-Trans: outputs, gradients, seeding, a training run, the parameter count by hand, batching."""

from __future__ import annotations

from dataclasses import replace

import torch

from model.snn_trans import SNNTrans
from model.survival import risk_score, survival_curve, weight_matrices
from model.train import TrainSettings, stackable
from tests.tiny_cohort import (
    BLCA,
    LABELS,
    SMALL,
    assert_batched_equals_single_forwards,
    assert_seeded_and_deterministic,
    planted_cohort,
    train_briefly,
)


def families(sizes: list[int], batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d, generator=g) for d in sizes]


def test_output_contract_and_family_attention():
    torch.manual_seed(0)
    model = SNNTrans(SMALL, dim=32).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 0, 0), families(SMALL, batch=2))
    assert set(out) == {"hazards", "survival", "risk", "family_attention"}
    assert out["hazards"].shape == (2, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    attention = out["family_attention"]
    assert attention.shape == (2, 6) and (attention >= 0).all() and torch.allclose(attention.sum(-1), torch.ones(2))
    assert model.auxiliary_loss(out, TrainSettings(), *LABELS).item() == 0.0  # no loss terms besides the NLL


def test_demo_size_step_gives_every_parameter_a_finite_gradient():
    torch.manual_seed(0)
    model = SNNTrans(BLCA).train()
    out = model(torch.randn(1, 50, 1024), families(BLCA))  # the bag is ignored
    out["risk"].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_same_seed_same_outputs_and_eval_is_deterministic():
    assert_seeded_and_deterministic(
        lambda: SNNTrans(SMALL, dim=32), torch.zeros(3, 0, 0), families(SMALL, batch=3), ("hazards",)
    )


def test_pytorch_default_init_with_identical_transformer_layers():
    torch.manual_seed(0)
    model = SNNTrans(BLCA)
    first = model.families.nets[4][0][0]  # the 1496-gene family's first Linear: PyTorch's U(±1/sqrt(fan_in))
    assert first.weight.abs().max().item() <= 1496**-0.5 and first.bias.any()
    one, two = model.transformer.layers
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values(), strict=True))


def test_parameter_count_by_hand_for_blca():
    # Family SNNs, two blocks each, d_i -> 256 -> 256:
    #   sum_i (256 d_i + 256) + 6 (256*256 + 256) = 256 * 3392 + 1536 + 6 * 65792 = 868352 + 1536 + 394752 = 1264640
    # One post-norm encoder layer (d 256, feed-forward 512):
    #   attention in-projection 3*256*256 + 3*256 = 197376, out-projection 256*256 + 256 = 65792,
    #   linear1 256*512 + 512 = 131584, linear2 512*256 + 256 = 131328, two LayerNorms 2 * 2*256 = 1024
    #   = 527104 per layer; two layers 1054208
    # Gated attention: two 256 -> 256 branches 2 * 65792 = 131584, the score 256 + 1 = 257: 131841
    # Head 256*4 + 4 = 1028
    # Total 1264640 + 1054208 + 131841 + 1028 = 2451717
    assert sum(BLCA) == 3392
    expected = (256 * 3392 + 6 * 256 + 6 * (256 * 256 + 256)) + 2 * 527104 + 131841 + 1028
    assert expected == 2_451_717
    model = SNNTrans(BLCA)
    count = sum(p.numel() for p in model.parameters())
    print(f"SNN-Trans parameters (BLCA families): {count}")
    assert count == expected


def test_batched_forward_equals_single_forwards():
    torch.manual_seed(0)
    model = SNNTrans(BLCA).eval()
    second = families(BLCA, batch=3, seed=1)
    assert_batched_equals_single_forwards(model, torch.zeros(3, 0, 0), second, ("hazards", "family_attention"))


def test_l1_covers_every_weight_matrix():
    model = SNNTrans(SMALL, dim=32)
    assert {id(w) for w in model.genomic_weights()} == {id(w) for w in weight_matrices([model])}
    assert any(w is model.transformer.layers[0].self_attn.in_proj_weight for w in model.genomic_weights())


def test_tiny_training_run_stacks_patients():
    patients = [replace(p, bag=torch.zeros(0, 0)) for p in planted_cohort(14)]  # genomics only: no bags

    def build() -> SNNTrans:
        return SNNTrans(SMALL, dim=32)

    assert stackable(build(), patients[:10])
    result, _, _ = train_briefly(build, patients, 10, batch_size=4)
    assert all(details["family_attention"].shape == (6,) for details in result.details.values())
