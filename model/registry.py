"""Model names in the config -> classes, with the modalities each needs and its preset handling.

``preset: paper`` builds DeReF as the paper's text describes it; ``preset: reference`` builds it
as the authors coded it (``DeReFOptions.reference()``). The preset's training-side differences
(LR decay, weighted sampling, cohort-wide bins, random test-time reorganisation) live in
``model.fold.fold_settings``. In every TransMIL, ``paper`` gives sequences shorter than the Nyström
landmarks the exact attention that Nyström approximates; ``reference`` pads them with zero tokens
as the authors' code does (models.md §1.2). Model classes are imported when built, so the workflow can read this
registry at parse time without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

PRESETS = ("paper", "reference")


@dataclass(frozen=True)
class Inputs:
    """What the cohort offers a model: the second modality and its sizes."""

    second: str  # "genomics" or "mri"
    wsi_dim: int = 1024
    omic_sizes: tuple[int, ...] = ()
    mri_channels: int = 0
    n_bins: int = 4


@dataclass(frozen=True)
class ModelChoice:
    """How to build: the preset, test-time reorganisation, MRI encoder depth and the init seed."""

    preset: str = "paper"
    test_rfr: str | None = None  # None: the preset's ("average" for paper, "random" for reference)
    mri_depth: int = 10
    seed: int = 0

    def rfr(self) -> str:
        return self.test_rfr or ("random" if self.preset == "reference" else "average")


def _second(inputs: Inputs, choice: ModelChoice) -> dict:
    if inputs.second == "genomics":
        return {"omic_sizes": list(inputs.omic_sizes)}
    return {"mri_channels": inputs.mri_channels, "mri_depth": choice.mri_depth}


def _deref(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.deref import DeReF, DeReFOptions

    options = DeReFOptions.reference() if choice.preset == "reference" else DeReFOptions()
    options = replace(options, test_rfr=choice.rfr())
    return DeReF(
        wsi_dim=inputs.wsi_dim, n_bins=inputs.n_bins, options=options, seed=choice.seed, **_second(inputs, choice)
    )


def _hdmoe(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.hdmoe import HDMoE

    return HDMoE(
        wsi_dim=inputs.wsi_dim,
        n_bins=inputs.n_bins,
        test_rfr=choice.rfr(),
        seed=choice.seed,
        nystrom_padding=choice.preset == "reference",
        **_second(inputs, choice),
    )


def _snn(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.baselines import SNN

    return SNN(list(inputs.omic_sizes), n_bins=inputs.n_bins)


def _mri_resnet(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.baselines import MRIResNet

    return MRIResNet(inputs.mri_channels, n_bins=inputs.n_bins, mri_depth=choice.mri_depth)


def _abmil(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.baselines import ABMIL

    return ABMIL(inputs.wsi_dim, n_bins=inputs.n_bins)


def _transmil(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.baselines import TransMILSurvival

    return TransMILSurvival(inputs.wsi_dim, n_bins=inputs.n_bins, nystrom_padding=choice.preset == "reference")


def _concat_mlp(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.baselines import ConcatMLP

    return ConcatMLP(inputs.wsi_dim, n_bins=inputs.n_bins, **_second(inputs, choice))


@dataclass(frozen=True)
class ModelSpec:
    needs: frozenset[str]  # "wsi", "genomics", "mri", or "second" for either of the latter
    build: Callable[[Inputs, ModelChoice], nn.Module]
    description: str


MODELS: dict[str, ModelSpec] = {
    "deref": ModelSpec(frozenset({"wsi", "second"}), _deref, "DeReF"),
    "hdmoe": ModelSpec(frozenset({"wsi", "second"}), _hdmoe, "HDMoE"),
    "snn": ModelSpec(frozenset({"genomics"}), _snn, "SNN (genomics only)"),
    "mri_resnet": ModelSpec(frozenset({"mri"}), _mri_resnet, "3D ResNet (MRI only)"),
    "abmil": ModelSpec(frozenset({"wsi"}), _abmil, "ABMIL (WSI only)"),
    "transmil": ModelSpec(frozenset({"wsi"}), _transmil, "TransMIL (WSI only)"),
    "concat_mlp": ModelSpec(frozenset({"wsi", "second"}), _concat_mlp, "Concat + MLP (late fusion)"),
}


def applies(name: str, modalities: set[str] | frozenset[str]) -> bool:
    """Whether a model can be trained on a cohort with these modalities (wsi + genomics or wsi + mri)."""
    needs = MODELS[name].needs
    return all(m in modalities or (m == "second" and modalities - {"wsi"}) for m in needs)


def build_model(name: str, inputs: Inputs, choice: ModelChoice) -> nn.Module:
    """The named model for these inputs; the init is seeded by ``choice.seed``."""
    import torch

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    if choice.preset not in PRESETS:
        raise ValueError(f"unknown preset {choice.preset!r}; choose from {PRESETS}")
    modalities = {"wsi", inputs.second}
    if not applies(name, modalities):
        raise ValueError(f"model {name!r} needs {sorted(MODELS[name].needs)}; this cohort has {sorted(modalities)}")
    torch.manual_seed(choice.seed)
    return MODELS[name].build(inputs, choice)
