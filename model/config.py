"""The ``training:`` config block as one typed object, with its defaults (the schema only validates).

Built once from the config (``training_config``) and handed to every place that trains: the
workflow at parse time (which models and folds), the splits, and each fold's job. Imports no
torch, so the workflow can build it at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from model.registry import MODELS, PRESETS

BIN_MODES = ("fold", "cohort")

# What a preset chooses for every regime key left null. The reference preset is the authors'
# regime exactly; the paper preset's regime was measured under honest selection on the real
# TCGA-BLCA table (bench/training_regimes.py, bench/README.md).
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {
        "bins": "fold",
        "batch_size": 32,
        "l1": 1e-4,
        "selection": "ensemble",
        "wsi_standardise": True,
        "scheduler": "none",
        "weighted_sampling": False,
    },
    "reference": {
        "bins": "cohort",
        "batch_size": 1,
        "l1": 0.0,
        "selection": "last",
        "wsi_standardise": False,
        "scheduler": "poly",
        "weighted_sampling": True,
    },
}


@dataclass(frozen=True)
class TrainingConfig:
    """Every ``training:`` key (config/schemas/config.schema.yaml describes each); None = the preset's."""

    models: tuple[str, ...] = tuple(MODELS)
    preset: str = "paper"
    folds: int = 5
    seed: int = 1
    epochs: int = 30
    lr: float = 5e-4
    weight_decay: float = 1e-5
    optimiser: str = "adam"
    scheduler: str | None = None
    momentum: float = 0.0
    weighted_sampling: bool | None = None
    n_bins: int = 4
    bins: str | None = None
    selection: str | None = None
    inner_fraction: float = 0.2
    inner_metric: str = "loss"
    patience: int | None = None
    ensemble_size: int = 5
    batch_size: int | None = None
    l1: float | None = None
    wsi_standardise: bool | None = None
    coxph: Mapping[str, Any] = field(default_factory=dict)  # model.coxph.CoxSettings keys and defaults
    test_rfr: str | None = None
    nll_alpha: float = 0.0
    decoupling_distance: str = "mse"
    decoupling_weight: float = 1.0
    genomics_clip: float | None = None
    mri_depth: int = 10
    max_patches: int | None = None
    test_repeats: int = 3
    device: str = "auto"
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise ValueError(f"training.models: unknown model(s) {unknown}; choose from {sorted(MODELS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"training.preset {self.preset!r}; choose one of {PRESETS}")
        if self.bins is not None and self.bins not in BIN_MODES:
            raise ValueError(f"training.bins {self.bins!r}; choose one of {BIN_MODES}")

    def resolved(self) -> TrainingConfig:
        """The same settings with every null regime key replaced by its preset's choice."""
        chosen = PRESET_DEFAULTS[self.preset]
        return replace(self, **{k: v for k, v in chosen.items() if getattr(self, k) is None})


_FLOATS = {f.name for f in fields(TrainingConfig) if str(f.type).startswith("float")}


def training_config(cfg: Mapping[str, Any]) -> TrainingConfig:
    """TrainingConfig from a (schema-validated) ``training:`` block; absent keys take the defaults."""
    unknown = sorted(set(cfg) - {f.name for f in fields(TrainingConfig)})
    if unknown:
        raise ValueError(f"unknown training settings: {unknown}")
    values = dict(cfg)
    # YAML reads 0 as an int: floats stay floats, as the run's fold.json records them
    values |= {k: float(v) for k, v in values.items() if k in _FLOATS and v is not None}
    if "models" in values:
        values["models"] = tuple(values["models"])
    values["coxph"] = dict(values.get("coxph") or {})
    return TrainingConfig(**values)
