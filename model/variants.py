"""Experiment variants: a named run of a registry model with option overrides (the paper's ablations).

A plain model is the variant of itself with no overrides; every trained run, its folder under
``models/`` and its rows in every table are keyed by the variant's name. A variant's options are
of three kinds, told apart by name:

- architecture switches of its model (``model.deref_options.ARCHITECTURE_OPTIONS`` for DeReF,
  ``ModelSpec.options`` for the comparison methods, e.g. MOTCat's ``ot_reg``);
- ``training:`` settings (``model.config.TrainingConfig`` fields, e.g. ``decoupling_distance``);
- ``split_seed``: stratified folds drawn with this seed instead of the cohort's splits (the
  repeated cross-validation rounds of the paper's Table IX).

An option that is unknown for the model is an error when the config is read, and so is a variant
whose every option sets the value the run would have anyway: a typo must not silently train the
full model again. (Some options may coincide with the config: an authors' training regime, e.g.
``mcat_authors``, keeps its weight decay whatever the config says.)
Catalogues (``config/variants.yaml``) also say which paper table a variant belongs to and its row
label there. Torch-free: the workflow reads this at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from model.config import TrainingConfig
from model.deref_options import ARCHITECTURE_OPTIONS, DeReFOptions
from model.registry import MODELS

# What the training side never takes from a variant: what is trained, how many folds, where.
FIXED_TRAINING = ("models", "folds", "device", "threads", "preset")
TRAINING_OPTIONS = tuple(f.name for f in fields(TrainingConfig) if f.name not in FIXED_TRAINING)
PAPER_TABLES = ("IV", "V", "VI", "VII", "VIII", "IX")


@dataclass(frozen=True)
class Variant:
    """A named run: a registry model, its architecture overrides, training overrides and split seed."""

    name: str
    model: str
    architecture: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    split_seed: int | None = None
    tables: tuple[str, ...] = ()
    label: str = ""

    def training_config(self, base: TrainingConfig) -> TrainingConfig:
        """The base training settings with this variant's overrides."""
        return replace(base, **self.training)

    def as_dict(self) -> dict[str, Any]:
        """What fold.json records of the run."""
        return {
            "name": self.name,
            "model": self.model,
            "architecture": dict(self.architecture),
            "training": dict(self.training),
            "split_seed": self.split_seed,
        }


def plain(model: str) -> Variant:
    """A registry model as the variant of itself."""
    return Variant(name=model, model=model, label=MODELS[model].description)


def deref_base(preset: str) -> DeReFOptions:
    """DeReF's architecture under a preset, before any variant's overrides."""
    return DeReFOptions.reference() if preset == "reference" else DeReFOptions()


def architecture_options(model: str) -> tuple[str, ...]:
    """The architecture options a variant of this model may set."""
    return ARCHITECTURE_OPTIONS if model == "deref" else tuple(MODELS[model].options)


def parse_variant(name: str, spec: Mapping[str, Any], training: TrainingConfig) -> Variant:
    """A catalogue entry (``model``, ``options``, optional ``tables`` and ``label``), checked against the config.

    Raises ValueError naming the variant for an unknown model, an unknown option or one that changes nothing.
    """
    model = spec.get("model")
    if model not in MODELS:
        raise ValueError(f"variant {name}: model {model!r} is not a registry model; choose from {sorted(MODELS)}")
    if name in MODELS:
        raise ValueError(f"variant {name}: the name is a registry model's; give the variant its own name")
    options = dict(spec.get("options") or {})
    if not options:
        raise ValueError(f"variant {name}: no options, so it would train {model} again; give it options or remove it")
    architecture_keys = architecture_options(model)
    architecture = {k: v for k, v in options.items() if k in architecture_keys}
    overrides = {k: v for k, v in options.items() if k in TRAINING_OPTIONS}
    split_seed = options.get("split_seed")
    unknown = sorted(set(options) - set(architecture) - set(overrides) - {"split_seed"})
    if unknown:
        allowed = sorted({*architecture_keys, *TRAINING_OPTIONS, "split_seed"})
        raise ValueError(f"variant {name}: unknown option(s) {unknown} for model {model}; choose from {allowed}")
    unchanged = [k for k, v in overrides.items() if getattr(training, k) == v]
    if model == "deref":
        base = deref_base(training.preset)
        unchanged += [k for k, v in architecture.items() if getattr(base, k) == v]
        try:
            replace(base, **architecture)
        except (TypeError, ValueError) as error:
            raise ValueError(f"variant {name}: {error}") from error
    else:
        unchanged += [k for k, v in architecture.items() if MODELS[model].options[k] == v]
    if split_seed is not None and split_seed == training.seed:
        unchanged.append("split_seed")
    if len(unchanged) == len(options):
        raise ValueError(
            f"variant {name}: option(s) {sorted(unchanged)} set the value {model} has anyway under "
            f"preset {training.preset}, so the variant changes nothing; fix or remove them"
        )
    try:
        replace(training, **overrides)
    except (TypeError, ValueError) as error:
        raise ValueError(f"variant {name}: {error}") from error
    tables = tuple(str(t) for t in spec.get("tables") or ())
    bad = sorted(set(tables) - set(PAPER_TABLES))
    if bad:
        raise ValueError(f"variant {name}: tables {bad}; the ablation tables are {PAPER_TABLES}")
    return Variant(name, model, architecture, overrides, split_seed, tables, str(spec.get("label", name)))


def select_variants(
    catalogue: Mapping[str, Mapping[str, Any]], run: str | Sequence[str], training: TrainingConfig
) -> dict[str, Variant]:
    """The catalogue's variants named by ``run`` (``all``: every one), parsed and checked, in catalogue order."""
    names = list(catalogue) if run == "all" else list(run)
    missing = [n for n in names if n not in catalogue]
    if missing:
        raise ValueError(f"experiments.run names {missing}, which the catalogue lacks; it has {list(catalogue)}")
    return {n: parse_variant(n, catalogue[n], training) for n in catalogue if n in names}
