"""Model names in the config -> classes, with the modalities each needs and its preset handling.

``preset: paper`` builds DeReF as the paper's text describes it; ``preset: reference`` builds it
as the authors coded it (``DeReFOptions.reference()``); for HDMoE, ``reference`` also calls every
routed expert, as the authors' code (``call_every_expert``). The preset's training-side differences
(LR decay, weighted sampling, cohort-wide bins, random test-time reorganisation) live in
``model.config.PRESET_DEFAULTS`` and ``model.fold.fold_settings``. In every TransMIL, ``paper`` gives sequences shorter than the Nyström
landmarks the exact attention that Nyström approximates; ``reference`` pads them with zero tokens
as the authors' code does (docs/models.md §1.2). Model classes are imported when built, so the workflow can read this
registry at parse time without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

PRESETS = ("paper", "reference")


@dataclass(frozen=True)
class Inputs:
    """What a model reads (``uses``: a subset of MODALITIES) and the sizes of those inputs."""

    modalities: tuple[str, ...]
    wsi_dim: int = 1024
    omic_sizes: tuple[int, ...] = ()
    mri_channels: int = 0
    n_bins: int = 4

    @property
    def second(self) -> str | None:
        """The modality besides the WSI: genomics or MRI (a model reads at most one of them)."""
        return next((m for m in ("genomics", "mri") if m in self.modalities), None)


@dataclass(frozen=True)
class ModelChoice:
    """How to build: the preset, test-time reorganisation, MRI encoder depth, init seed, a variant's switches."""

    preset: str = "paper"
    test_rfr: str | None = None  # None: the preset's ("average" for paper, "random" for reference)
    mri_depth: int = 10
    seed: int = 0
    architecture: Mapping[str, Any] = field(default_factory=dict)  # model.variants: e.g. DeReF's ablations

    def rfr(self) -> str:
        return self.test_rfr or ("random" if self.preset == "reference" else "average")


def _second(inputs: Inputs, choice: ModelChoice) -> dict:
    if inputs.second == "genomics":
        return {"omic_sizes": list(inputs.omic_sizes)}
    return {"mri_channels": inputs.mri_channels, "mri_depth": choice.mri_depth}


def _deref(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.deref import DeReF, DeReFOptions

    options = DeReFOptions.reference() if choice.preset == "reference" else DeReFOptions()
    options = replace(options, **choice.architecture, test_rfr=choice.rfr())
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
        call_every_expert=choice.preset == "reference",
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
    """``needs``: "wsi", "genomics", "mri", or "second" for either of the latter; empty = any modality.

    ``build`` is None for models that are not torch networks (coxph, fit by ``model.coxph``).
    """

    needs: frozenset[str]
    build: Callable[[Inputs, ModelChoice], nn.Module] | None
    description: str


MODELS: dict[str, ModelSpec] = {
    "deref": ModelSpec(frozenset({"wsi", "second"}), _deref, "DeReF"),
    "hdmoe": ModelSpec(frozenset({"wsi", "second"}), _hdmoe, "HDMoE"),
    "snn": ModelSpec(frozenset({"genomics"}), _snn, "SNN (genomics only)"),
    "mri_resnet": ModelSpec(frozenset({"mri"}), _mri_resnet, "3D ResNet (MRI only)"),
    "abmil": ModelSpec(frozenset({"wsi"}), _abmil, "ABMIL (WSI only)"),
    "transmil": ModelSpec(frozenset({"wsi"}), _transmil, "TransMIL (WSI only)"),
    "concat_mlp": ModelSpec(frozenset({"wsi", "second"}), _concat_mlp, "Concat + MLP (late fusion)"),
    "coxph": ModelSpec(frozenset(), None, "Cox PH (ridge, PCA per modality)"),
}
MODALITIES = ("wsi", "genomics", "mri")


def applies(name: str, modalities: Iterable[str]) -> bool:
    """Whether a model can be trained on a cohort with these modalities (any one or two of MODALITIES)."""
    modalities = set(modalities)
    needs = MODELS[name].needs
    return all(m in modalities or (m == "second" and modalities - {"wsi"}) for m in needs)


def uses(name: str, modalities: Iterable[str]) -> tuple[str, ...]:
    """The cohort modalities a model reads, in MODALITIES order (its training job's only inputs).

    "second" resolves to the cohort's genomics, else its MRI; a model with no needs (coxph)
    reads every modality of the cohort.
    """
    modalities = set(modalities)
    if not applies(name, modalities):
        raise ValueError(f"model {name!r} needs {sorted(MODELS[name].needs)}; the cohort has {sorted(modalities)}")
    needs = MODELS[name].needs
    if not needs:
        return tuple(m for m in MODALITIES if m in modalities)
    second = "genomics" if "genomics" in modalities else "mri"
    wanted = {second if m == "second" else m for m in needs}
    return tuple(m for m in MODALITIES if m in wanted)


def cohort_models(
    cohort: str, modalities: Iterable[str], own: Sequence[str] | None, default: Sequence[str]
) -> list[str]:
    """The models a cohort trains: its own list, else the global one, kept where its modalities allow.

    A model the cohort lists itself but cannot train is an error; the global list's are skipped.
    """
    modalities = set(modalities)
    wanted = list(own or default)
    unusable = [m for m in wanted if not applies(m, modalities)]
    if own and unusable:
        raise ValueError(
            f"cohort {cohort}: models {unusable} need modalities it lacks ({sorted(modalities)}); "
            f"remove them from cohorts.{cohort}.models"
        )
    return [m for m in wanted if m not in unusable]


def build_model(name: str, inputs: Inputs, choice: ModelChoice) -> nn.Module:
    """The named model for these inputs; the init is seeded by ``choice.seed``."""
    import torch

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    build = MODELS[name].build
    if build is None:
        raise ValueError(f"model {name!r} is not a network; model.fold fits it with its own module")
    if choice.preset not in PRESETS:
        raise ValueError(f"unknown preset {choice.preset!r}; choose from {PRESETS}")
    if not applies(name, inputs.modalities):
        raise ValueError(f"model {name!r} needs {sorted(MODELS[name].needs)}; it is given {list(inputs.modalities)}")
    if choice.architecture and name != "deref":
        raise ValueError(f"model {name!r} takes no architecture options; got {sorted(choice.architecture)}")
    torch.manual_seed(choice.seed)
    return build(inputs, choice)
