"""The model registry: every comparison method builds, its variant options are its constructor's, presets set its switches."""

from __future__ import annotations

from importlib import import_module
from inspect import signature

import pytest
import torch

from model.registry import MODELS, Inputs, ModelChoice, build_model, preset_switches

GENOMICS = Inputs(("wsi", "genomics"), wsi_dim=32, omic_sizes=(7, 11, 5, 13, 17, 9))
MRI = Inputs(("wsi", "mri"), wsi_dim=32, mri_channels=2)
NETWORKS = {
    "mcat": "MCAT",
    "motcat": "MOTCat",
    "cmta": "CMTA",
    "cfdl": "CFDL",
    "pibd": "PIBD",
    "ccl": "CCL",
    "mome": "MoME",
}


@pytest.mark.parametrize("name", [m for m in MODELS if MODELS[m].options])
def test_variant_options_are_constructor_arguments_with_the_same_defaults(name):
    network = getattr(import_module(f"model.{name.split('_')[0]}"), NETWORKS.get(name, "CLAM"))
    defaults = {k: p.default for k, p in signature(network).parameters.items()}
    assert {k: defaults[k] for k in MODELS[name].options} == dict(MODELS[name].options)


@pytest.mark.parametrize("name", ["mcat", "motcat", "cmta", "cfdl", "pibd", "ccl", "mome"])
@pytest.mark.parametrize("inputs", [GENOMICS, MRI], ids=["genomics", "mri"])
def test_every_fusion_method_builds_for_both_second_modalities(name, inputs):
    model = build_model(name, inputs, ModelChoice()).eval()
    second = [torch.randn(1, 2, 16, 32, 32)] if inputs is MRI else [torch.randn(1, d) for d in inputs.omic_sizes]
    with torch.no_grad():
        out = model(torch.randn(1, 9, 32), second)
    assert out["hazards"].shape == (1, 4) and torch.allclose(out["attention"].sum(-1), torch.ones(1))


def test_the_preset_sets_each_methods_paper_versus_code_switches():
    from model.ccl import CCL
    from model.cmta import CMTA
    from model.mcat import MCAT
    from model.mome import MoME

    assert preset_switches(CCL, "reference") == {"reference": True, "nystrom_padding": True}
    assert preset_switches(CCL, "paper") == {"reference": False, "nystrom_padding": False}
    assert preset_switches(MoME, "paper") == {"reference": False}
    assert preset_switches(CMTA, "paper") == {"nystrom_padding": False}
    assert preset_switches(MCAT, "paper") == {}
    for preset, expected in (("reference", True), ("paper", False)):
        model = build_model("ccl", GENOMICS, ModelChoice(preset=preset))
        assert {m.reference for m in model.modules() if isinstance(getattr(m, "reference", None), bool)} == {expected}


def test_a_variants_options_reach_the_constructor_and_unknown_ones_are_refused():
    model = build_model("motcat", GENOMICS, ModelChoice(architecture={"ot_reg": 0.05}))
    assert model.co_attention.reg == 0.05
    with pytest.raises(ValueError, match=r"takes no options \['ot_reg'\]"):
        build_model("mcat", GENOMICS, ModelChoice(architecture={"ot_reg": 0.05}))
