"""Baselines and the MRI 3D ResNet: the output contract, attention over odd bags, seeding, lazy torchvision."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

from model.baselines import ABMIL, SNN, ConcatMLP, MRIResNet, TransMILSurvival
from model.survival import risk_score, survival_curve
from model.train import TrainSettings
from tests.conftest import ROOT
from tests.tiny_cohort import LABELS, SMALL, WSI_DIM

MODELS: dict[str, tuple[Callable[[], nn.Module], str, bool]] = {
    # name: (builder, second modality, returns attention)
    "snn": (lambda: SNN(SMALL, hidden=32), "genomics", False),
    "abmil": (lambda: ABMIL(WSI_DIM, dim=32), "genomics", True),
    "transmil": (lambda: TransMILSurvival(WSI_DIM, dim=64), "genomics", True),
    "concat-genomics": (lambda: ConcatMLP(WSI_DIM, omic_sizes=SMALL, dim=32), "genomics", True),
    "concat-mri": (lambda: ConcatMLP(WSI_DIM, mri_channels=5, dim=32), "mri", True),
    "mri-resnet": (lambda: MRIResNet(5, dim=32), "mri", False),
}


def inputs(
    modality: str, n_patches: int = 7, batch: int = 1, depth: int = 16
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    wsi = torch.randn(batch, n_patches, WSI_DIM, generator=g)
    if modality == "mri":
        return wsi, [torch.randn(batch, 5, depth, 16, 16, generator=g)]
    return wsi, [torch.randn(batch, d, generator=g) for d in SMALL]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_contract(name):
    build, modality, has_attention = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        out = model(*inputs(modality, batch=2))
    assert out["hazards"].shape == (2, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    assert ("attention" in out) == has_attention
    assert model.auxiliary_loss(out, TrainSettings(), *LABELS).item() == 0.0  # no loss terms besides the NLL


@pytest.mark.parametrize("name", ["abmil", "transmil", "concat-genomics", "concat-mri"])
@pytest.mark.parametrize("n_patches", [1, 7, 50])
def test_attention_covers_the_bag_and_sums_to_one(name, n_patches):
    build, modality, _ = MODELS[name]
    torch.manual_seed(0)
    with torch.no_grad():
        attention = build().eval()(*inputs(modality, n_patches, batch=2))["attention"]
    assert attention.shape == (2, n_patches) and (attention >= 0).all()
    assert torch.allclose(attention.sum(-1), torch.ones(2))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_outputs_and_training_step(name):
    build, modality, _ = MODELS[name]
    wsi, second = inputs(modality)
    hazards = []
    for _ in range(2):
        torch.manual_seed(3)
        with torch.no_grad():
            hazards.append(build().eval()(wsi, second)["hazards"])
    assert torch.equal(*hazards)
    # Batch size 1 in training mode, as the training loop runs; batch norm needs a volume over 32 deep.
    model = build().train()
    wsi, second = inputs(modality, depth=33)
    model(wsi, second)["risk"].sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unused_modality_is_ignored():
    torch.manual_seed(0)
    wsi, second = inputs("genomics")
    snn, abmil = SNN(SMALL, hidden=32).eval(), ABMIL(WSI_DIM, dim=32).eval()
    with torch.no_grad():
        assert torch.equal(snn(wsi, second)["hazards"], snn(torch.zeros(1, 3, WSI_DIM), second)["hazards"])
        assert torch.equal(abmil(wsi, second)["hazards"], abmil(wsi, [])["hazards"])


def test_snn_uses_mcat_lecun_init():
    torch.manual_seed(0)
    first = SNN([4000], hidden=256).encoder[0][0]
    assert first.weight.std().item() == pytest.approx(4000**-0.5, rel=0.02) and not first.bias.any()


@pytest.mark.parametrize("kwargs", [{}, {"omic_sizes": SMALL, "mri_channels": 5}], ids=["neither", "both"])
def test_concat_needs_exactly_one_second_modality(kwargs):
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        ConcatMLP(WSI_DIM, **kwargs)


def test_mri_models_reject_genomic_inputs():
    with pytest.raises(ValueError, match=r"MRI models take \[volume of shape \(B, C, D, H, W\)\]"):
        MRIResNet(5, dim=32)(*inputs("genomics"))


def test_resnet3d_depth_50_is_bottleneck_and_others_basic():
    from torchvision.models.video.resnet import BasicBlock, Bottleneck

    from model.mri_encoder import DEPTHS, ResNet3D

    assert DEPTHS[18] == (BasicBlock, [2, 2, 2, 2]) and DEPTHS[34] == (BasicBlock, [3, 4, 6, 3])
    small = ResNet3D(5, depth=10, out_dim=8)
    assert isinstance(small.layer4[0], BasicBlock) and small.fc.in_features == 512
    torch.manual_seed(0)
    deep = ResNet3D(5, depth=50, out_dim=8).eval()
    assert isinstance(deep.layer4[-1], Bottleneck) and [len(deep.layer1), len(deep.layer3)] == [3, 6]
    assert deep.stem[0].in_channels == 5
    seen = {}
    deep.fc.register_forward_hook(lambda _, args, out: seen.update(features=args[0].shape, out=out.shape))
    with torch.no_grad():
        deep(torch.randn(1, 5, 16, 16, 16))
    assert seen == {"features": (1, 2048), "out": (1, 8)}


def test_resnet3d_rejects_an_unknown_depth():
    from model.mri_encoder import ResNet3D

    with pytest.raises(ValueError, match=r"ResNet3D depth 101 is not available; choose one of \[10, 18, 34, 50\]"):
        ResNet3D(5, depth=101)


def test_model_modules_do_not_import_torchvision():
    """torchvision costs seconds to import; only building an MRI model may pay for it."""
    code = (
        "import sys\n"
        "import model.baselines, model.deref, model.encoders, model.hdmoe\n"
        "model.deref.DeReF([3, 4]); model.baselines.ConcatMLP(8, omic_sizes=[3, 4])\n"
        "assert 'torchvision' not in sys.modules and 'model.mri_encoder' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
