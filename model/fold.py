"""One (cohort, model, fold) run from the workflow's config: settings, bins, training and outputs.

Outputs of a fold (each written to a temporary name and renamed):

- ``weights.safetensors``: the selected epoch's weights (safetensors: loading never unpickles);
- ``predictions.tsv``: held-out risk, hazards, survival curve (and gate weights) per patient at the
  selected epoch (the honest protocol);
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from model.bins import time_bin_edges
from model.data import CohortData, fold_patients
from model.registry import Inputs, ModelChoice, build_model
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


def fold_settings(
    cfg: Mapping[str, Any], model: str, fold: int, device: str = "cpu"
) -> tuple[TrainSettings, ModelChoice, str]:
    """Training settings, model choice and bin mode for one fold from the ``training:`` config block.

    The reference preset adds what the authors' code does: per-epoch polynomial LR decay, weighted
    sampling over bin x censorship strata, bins from the whole cohort, random test-time
    reorganisation, and DeReF's 30,000-patch cap. Explicit ``bins``/``test_rfr``/``max_patches`` win.
    """
    reference = cfg["preset"] == "reference"
    seed = int(cfg["seed"]) + fold
    max_patches = cfg.get("max_patches")
    if max_patches is None and reference and model == "deref":
        max_patches = 30000
    settings = TrainSettings(
        epochs=int(cfg["epochs"]),
        lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]),
        nll_alpha=float(cfg["nll_alpha"]),
        decoupling_weight=float(cfg["decoupling_weight"]),
        distance=cfg["decoupling_distance"],
        poly_decay=reference,
        weighted_sampling=reference,
        selection=cfg["selection"],
        inner_fraction=float(cfg["inner_fraction"]),
        max_patches=max_patches,
        seed=seed,
        device=device,
    )
    choice = ModelChoice(preset=cfg["preset"], test_rfr=cfg.get("test_rfr"), mri_depth=int(cfg["mri_depth"]), seed=seed)
    bins = cfg.get("bins") or ("cohort" if reference else "fold")
    if bins not in BIN_MODES:
        raise ValueError(f"training.bins {bins!r}; choose one of {BIN_MODES}")
    return settings, choice, bins


def run_fold(
    data: CohortData,
    model_name: str,
    fold: int,
    train_ids: Sequence[str],
    held_ids: Sequence[str],
    cfg: Mapping[str, Any],
    device: str = "cpu",
) -> tuple[FoldResult, dict[str, Any]]:
    """Train one model on one fold; return the result and a description of the run."""
    settings, choice, bin_mode = fold_settings(cfg, model_name, fold, device)
    train, held = fold_patients(data, train_ids, held_ids, cfg.get("genomics_clip"))
    source = data.outcomes if bin_mode == "cohort" else data.outcomes.loc[list(train_ids)]
    edges = time_bin_edges(source["survival_months"].to_numpy(), source["censorship"].to_numpy(), int(cfg["n_bins"]))
    inputs = Inputs(data.second, data.wsi_dim, data.omic_sizes, data.mri_channels, int(cfg["n_bins"]))
    model = build_model(model_name, inputs, choice)
    start = time.perf_counter()
    result = train_fold(model, train, held, edges, settings)
    meta = {
        "model": model_name,
        "fold": fold,
        "preset": choice.preset,
        "test_rfr": choice.rfr(),
        "selection": settings.selection,
        "selected_epoch": result.selected_epoch,
        "best_epoch_optimistic": result.best_epoch,
        "bins": bin_mode,
        "bin_edges": [float(e) for e in edges],
        "n_train": len(train) - len(result.inner_ids),
        "n_inner": len(result.inner_ids),
        "n_held_out": len(held),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "settings": asdict(settings),
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
    """Write every output of a fold (keys: weights, predictions, best_epoch, details, log, meta)."""
    with atomic_path(outputs["weights"]) as tmp:
        save_file(
            {k: v.contiguous() for k, v in result.state_dict.items()},
            str(tmp),
            metadata={"model": meta["model"], "fold": str(meta["fold"]), "epoch": str(meta["selected_epoch"])},
        )
    fold = {"fold": meta["fold"], "model": meta["model"]}
    write_tsv(result.predictions.assign(**fold, epoch=meta["selected_epoch"]), outputs["predictions"])
    write_tsv(result.best_epoch_predictions.assign(**fold, epoch=meta["best_epoch_optimistic"]), outputs["best_epoch"])
    write_details(outputs["details"], result, data)
    write_tsv(result.log, outputs["log"])
    with atomic_path(outputs["meta"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load a fold's safetensors weights into a freshly built model (strict: every key must match)."""
    model.load_state_dict(load_file(str(path)), strict=True)
    return model
