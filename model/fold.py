"""One (cohort, model, fold) run from the workflow's config: settings, bins, training and outputs.

Outputs of a fold (each written to a temporary name and renamed):

- ``weights.safetensors``: the selected epoch's weights (safetensors: loading never unpickles);
  an ensemble's members under ``member_<m>.``; coxph's coefficients, scalers and PCA axes;
- ``predictions.tsv``: held-out risk, hazards, survival curve (and gate weights) per patient at the
  selected epoch (the honest protocol);
- ``predictions_train.tsv``: the same for the fold's training patients (for leak-free cut-offs);
- ``predictions_best_epoch.tsv``: the same at the epoch with the best held-out C-index, the
  reference protocol, which is optimistic because it chooses on the reported fold;
- ``details.h5``: per patient the decoupled features, gate weights and attention over patches,
  with each patch's slide and level-0 coordinates for heatmaps;
- ``log.tsv``: per epoch the loss, learning rate and training / held-out (/ inner) C-index;
- ``fold.json``: what was run: settings, bins, patients, selected and best epochs, time, memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from model.bins import time_bin_edges
from model.data import CohortData, fold_patients
from model.registry import MODELS, Inputs, ModelChoice, build_model
from model.train import FoldResult, TrainSettings, train_fold
from workflow.features.device import claim_device
from workflow.io import atomic_path, write_tsv

BIN_MODES = ("fold", "cohort")
SCHEMA = Path(__file__).resolve().parent.parent / "config" / "schemas" / "config.schema.yaml"


def training_defaults() -> dict[str, Any]:
    """The ``training:`` block as the config schema fills it in, for runs outside the workflow."""
    properties = yaml.safe_load(SCHEMA.read_text())["properties"]["training"]["properties"]
    return {key: spec.get("default") for key, spec in properties.items()}


@contextlib.contextmanager
def training_device(requested: str) -> Iterator[str]:
    """``auto``: a GPU this job holds exclusively, else the CPU; an explicit device is checked."""
    if requested == "auto":
        with claim_device() as device:
            yield str(device)
        return
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"training.device is {requested!r} but torch sees no GPU; use auto or cpu")
    yield requested


# What a preset chooses for every training key left null in the config. The reference preset is
# the authors' regime exactly; the paper preset's regime was measured under honest selection on
# the real TCGA-BLCA table (bench/training_regimes.py, bench/README.md).
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {
        "bins": "fold",
        "batch_size": 32,
        "l1": 1e-4,
        "selection": "ensemble",
        "wsi_standardise": True,
    },
    "reference": {
        "bins": "cohort",
        "batch_size": 1,
        "l1": 0.0,
        "selection": "last",
        "wsi_standardise": False,
    },
}


def resolved(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``training:`` block with every null key replaced by its preset's choice."""
    defaults = PRESET_DEFAULTS[cfg["preset"]]
    return dict(cfg) | {k: v for k, v in defaults.items() if cfg.get(k) is None}


def fold_settings(
    cfg: Mapping[str, Any], model: str, fold: int, device: str = "cpu"
) -> tuple[TrainSettings, ModelChoice, str]:
    """Training settings, model choice and bin mode for one fold from the ``training:`` config block.

    The reference preset adds what the authors' code does: per-epoch polynomial LR decay, weighted
    sampling over bin x censorship strata, bins from the whole cohort, random test-time
    reorganisation, and DeReF's 30,000-patch cap; explicit config values win over the preset's.
    """
    cfg = resolved(cfg)
    reference = cfg["preset"] == "reference"
    seed = int(cfg["seed"]) + fold
    max_patches = cfg.get("max_patches")
    if max_patches is None and reference and model == "deref":
        max_patches = 30000
    patience = cfg.get("patience")
    settings = TrainSettings(
        epochs=int(cfg["epochs"]),
        lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]),
        nll_alpha=float(cfg["nll_alpha"]),
        decoupling_weight=float(cfg["decoupling_weight"]),
        distance=cfg["decoupling_distance"],
        poly_decay=reference,
        weighted_sampling=reference,
        batch_size=int(cfg["batch_size"]),
        l1=float(cfg["l1"]),
        selection=cfg["selection"],
        inner_fraction=float(cfg["inner_fraction"]),
        inner_metric=cfg["inner_metric"],
        patience=None if patience is None else int(patience),
        ensemble_size=int(cfg["ensemble_size"]),
        max_patches=max_patches,
        seed=seed,
        device=device,
    )
    choice = ModelChoice(preset=cfg["preset"], test_rfr=cfg.get("test_rfr"), mri_depth=int(cfg["mri_depth"]), seed=seed)
    if cfg["bins"] not in BIN_MODES:
        raise ValueError(f"training.bins {cfg['bins']!r}; choose one of {BIN_MODES}")
    return settings, choice, cfg["bins"]


def run_fold(
    data: CohortData,
    model_name: str,
    fold: int,
    train_ids: Sequence[str],
    held_ids: Sequence[str],
    cfg: Mapping[str, Any],
    device: str = "cpu",
) -> tuple[FoldResult, dict[str, Any]]:
    """Train one model on one fold; return the result and a description of the run.

    ``data`` holds the modalities the model uses (``model.registry.uses``) and nothing else.
    """
    settings, choice, bin_mode = fold_settings(cfg, model_name, fold, device)
    source = data.outcomes if bin_mode == "cohort" else data.outcomes.loc[list(train_ids)]
    edges = time_bin_edges(source["survival_months"].to_numpy(), source["censorship"].to_numpy(), int(cfg["n_bins"]))
    inputs = Inputs(data.modalities, data.wsi_dim, data.omic_sizes, data.mri_channels, int(cfg["n_bins"]))
    wsi_standardise = bool(resolved(cfg)["wsi_standardise"])
    start = time.perf_counter()
    meta: dict[str, Any] = {"model": model_name, "fold": fold, "preset": choice.preset}
    if MODELS[model_name].build is None:
        # imported here: scikit-survival's Cox models cost 1-2 s of start-up the networks' jobs skip
        from model.coxph import CoxSettings, fit_coxph

        coxph = CoxSettings(**cfg.get("coxph", {}))
        result = fit_coxph(data, train_ids, held_ids, edges, coxph)
        meta |= {
            "selection": "none (one fit)",
            "coxph": asdict(coxph),
        }
    else:
        train, held = fold_patients(data, train_ids, held_ids, inputs.second, cfg.get("genomics_clip"), wsi_standardise)

        def build(offset: int) -> torch.nn.Module:
            return build_model(model_name, inputs, replace(choice, seed=choice.seed + offset))

        result = train_fold(build, train, held, edges, settings)
        meta |= {
            "test_rfr": choice.rfr(),
            "selection": settings.selection,
            "wsi_standardise": wsi_standardise and "wsi" in data.modalities,
            "settings": asdict(settings),
        }
    meta |= {
        "parameters": result.parameters,
        "selected_epoch": result.selected_epoch,
        "selected_epochs": result.selected_epochs,
        "best_epoch_optimistic": result.best_epoch,
        "bins": bin_mode,
        "bin_edges": [float(e) for e in edges],
        "n_train": len(train_ids) - len(result.inner_ids),
        "n_inner": len(result.inner_ids),
        "n_held_out": len(held_ids),
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "inputs": asdict(inputs),
    }
    if settings.device.startswith("cuda"):
        meta["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result, meta


def write_details(path: str | os.PathLike[str], result: FoldResult, data: CohortData) -> None:
    """Per-patient outputs of the selected epoch; attention rows aligned with slide_id, x, y."""
    strings = h5py.string_dtype()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for patient, outputs in result.details.items():
            group = h5.create_group(patient)
            for key, value in outputs.items():
                group.create_dataset(key, data=value)
            if "attention" in outputs:
                patches = data.patches[patient]
                if "patch_rows" in outputs:
                    patches = patches.iloc[outputs["patch_rows"]]
                group.create_dataset("slide_id", data=patches["slide_id"].to_numpy(dtype=object), dtype=strings)
                group.create_dataset("coords", data=patches[["x", "y"]].to_numpy(np.int64))


def write_fold_outputs(
    outputs: Mapping[str, str], result: FoldResult, meta: Mapping[str, Any], data: CohortData
) -> None:
    """Write every output of a fold (keys: weights, predictions, predictions_train, best_epoch, details, log, meta)."""
    with atomic_path(outputs["weights"]) as tmp:
        save_file(
            {k: v.contiguous() for k, v in result.state_dict.items()},
            str(tmp),
            metadata={"model": meta["model"], "fold": str(meta["fold"]), "epoch": str(meta["selected_epoch"])},
        )
    fold = {"fold": meta["fold"], "model": meta["model"]}
    write_tsv(result.predictions.assign(**fold, epoch=meta["selected_epoch"]), outputs["predictions"])
    write_tsv(result.predictions_train.assign(**fold, epoch=meta["selected_epoch"]), outputs["predictions_train"])
    write_tsv(result.best_epoch_predictions.assign(**fold, epoch=meta["best_epoch_optimistic"]), outputs["best_epoch"])
    write_details(outputs["details"], result, data)
    write_tsv(result.log, outputs["log"])
    with atomic_path(outputs["meta"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load a fold's safetensors weights into a freshly built model (strict: every key must match)."""
    model.load_state_dict(load_file(str(path)), strict=True)
    return model
