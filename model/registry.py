"""Model names in the config -> classes, with the modalities each needs and its preset handling.

``preset: paper`` builds DeReF as the paper's text describes it; ``preset: reference`` builds it
as the authors coded it (``DeReFOptions.reference()``); for HDMoE, ``reference`` also calls every
routed expert, as the authors' code (``call_every_expert``). The preset's training-side differences
(LR decay, weighted sampling, cohort-wide bins, random test-time reorganisation) live in
``model.config.PRESET_DEFAULTS`` and ``model.fold.fold_settings``. In every TransMIL, ``paper`` gives sequences shorter than the Nyström
landmarks the exact attention that Nyström approximates; ``reference`` pads them with zero tokens
as the authors' code does (docs/models.md §1.2). The paper's comparison methods (docs/models.md §5) take
their paper-vs-code switches from the preset too (``preset_switches``) and their own settings from
experiment variants (``ModelSpec.options``). Model classes are imported when built, so the workflow
can read this registry at parse time without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import import_module
from inspect import signature
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


def _snn_trans(inputs: Inputs, choice: ModelChoice) -> nn.Module:
    from model.snn_trans import SNNTrans

    return SNNTrans(list(inputs.omic_sizes), n_bins=inputs.n_bins)


def _clam(multi_branch: bool) -> Callable[[Inputs, ModelChoice], nn.Module]:
    def build(inputs: Inputs, choice: ModelChoice) -> nn.Module:
        from model.clam import CLAM

        return CLAM(inputs.wsi_dim, n_bins=inputs.n_bins, multi_branch=multi_branch, **choice.architecture)

    return build


def preset_switches(network: Callable[..., nn.Module], preset: str) -> dict[str, bool]:
    """A comparison method's paper-vs-code switches, set by the preset: True = its authors' code.

    ``reference`` (CCL's token order, MoME's untrained router) and ``nystrom_padding`` (zero
    tokens before short sequences, as every TransMIL here), for the constructors that take them.
    """
    accepted = signature(network).parameters
    return {k: preset == "reference" for k in ("reference", "nystrom_padding") if k in accepted}


def _fusion(module: str, name: str) -> Callable[[Inputs, ModelChoice], nn.Module]:
    """The builder of a WSI + second-modality comparison method, imported when built."""

    def build(inputs: Inputs, choice: ModelChoice) -> nn.Module:
        network = getattr(import_module(module), name)
        switches = preset_switches(network, choice.preset)
        return network(
            inputs.wsi_dim, n_bins=inputs.n_bins, **_second(inputs, choice), **switches, **choice.architecture
        )

    return build


@dataclass(frozen=True)
class ModelSpec:
    """``needs``: "wsi", "genomics", "mri", or "second" for either of the latter; empty = any modality.

    ``build`` is None for models that are not torch networks (coxph, fit by ``model.coxph``).
    ``options`` are the constructor arguments an experiment variant may set, with their defaults
    (DeReF's are ``model.deref_options``, whose defaults depend on the preset).
    """

    needs: frozenset[str]
    build: Callable[[Inputs, ModelChoice], nn.Module] | None
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)


CLAM_OPTIONS = {"k_sample": 8, "bag_weight": 0.7, "subtyping": True, "instance_loss": "ce"}
# In the order of the DeReF paper's Tables II and III (the main table's rows), then ours.
MODELS: dict[str, ModelSpec] = {
    "snn": ModelSpec(frozenset({"genomics"}), _snn, "SNN (genomics only)"),
    "snn_trans": ModelSpec(frozenset({"genomics"}), _snn_trans, "SNN-Trans (genomics only)"),
    "mri_resnet": ModelSpec(frozenset({"mri"}), _mri_resnet, "3D ResNet (MRI only)"),
    "abmil": ModelSpec(frozenset({"wsi"}), _abmil, "ABMIL (WSI only)"),
    "clam_mb": ModelSpec(frozenset({"wsi"}), _clam(multi_branch=True), "CLAM-MB (WSI only)", CLAM_OPTIONS),
    "clam_sb": ModelSpec(frozenset({"wsi"}), _clam(multi_branch=False), "CLAM-SB (WSI only)", CLAM_OPTIONS),
    "transmil": ModelSpec(frozenset({"wsi"}), _transmil, "TransMIL (WSI only)"),
    "mcat": ModelSpec(frozenset({"wsi", "second"}), _fusion("model.mcat", "MCAT"), "MCAT"),
    "cmta": ModelSpec(frozenset({"wsi", "second"}), _fusion("model.cmta", "CMTA"), "CMTA", {"alignment_weight": 1.0}),
    "motcat": ModelSpec(
        frozenset({"wsi", "second"}),
        _fusion("model.motcat", "MOTCat"),
        "MOTCat",
        {"ot_reg": 0.1, "ot_tau": 0.5, "micro_batch": None},
    ),
    "cfdl": ModelSpec(
        frozenset({"wsi", "second"}),
        _fusion("model.cfdl", "CFDL"),
        "CFDL",
        {"feature_dim": 32, "similarity_weight": 1.0, "difference_weight": 1.0},
    ),
    "pibd": ModelSpec(
        frozenset({"wsi", "second"}),
        _fusion("model.pibd", "PIBD"),
        "PIBD",
        {
            "bag_size": 512,
            "n_subsets": 8,
            "wsi_ratio": 0.5,
            "second_ratio": 0.8,
            "prototype_samples": 50,
            "eval_seed": 1,
            "ib_weight": 0.1,
            "kl_weight": 0.01,
            "contrast_weight": 1.0,
            "mi_weight": 0.1,
        },
    ),
    "ccl": ModelSpec(
        frozenset({"wsi", "second"}),
        _fusion("model.ccl", "CCL"),
        "CCL",
        {"n_clusters": 6, "update_ratio": 0.1, "bank_length": 10, "temperature": 2.0, "cohort_weight": 1.0},
    ),
    "mome": ModelSpec(
        frozenset({"wsi", "second"}), _fusion("model.mome", "MoME"), "MoME", {"n_bottlenecks": 2, "dim": 512}
    ),
    "concat_mlp": ModelSpec(frozenset({"wsi", "second"}), _concat_mlp, "Concat + MLP (late fusion)"),
    "hdmoe": ModelSpec(frozenset({"wsi", "second"}), _hdmoe, "HDMoE"),
    "deref": ModelSpec(frozenset({"wsi", "second"}), _deref, "DeReF"),
    "coxph": ModelSpec(frozenset(), None, "Cox PH (ridge, PCA per modality)"),
}
MODALITIES = ("wsi", "genomics", "mri")
# Models whose fold details hold decoupled features and MoE gate weights, the paper's Figs. 4, 5
# and 8 (``figures.model`` names a run of one of them).
FIGURE_MODELS = ("deref",)


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
    unknown = sorted(set(choice.architecture) - set(MODELS[name].options)) if name != "deref" else []
    if unknown:
        raise ValueError(f"model {name!r} takes no options {unknown}; it takes {sorted(MODELS[name].options)}")
    torch.manual_seed(choice.seed)
    return build(inputs, choice)
