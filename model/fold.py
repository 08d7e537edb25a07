"""One (cohort, model, fold) run from the training config: settings, bins and training.

Its outputs are written and read by ``model.fold_outputs``.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

import torch

from model.bins import time_bin_edges
from model.config import TrainingConfig
from model.data import CohortData, DataError, fold_patients
from model.registry import MODELS, Inputs, ModelChoice, build_model
from model.train import FoldResult, TrainSettings, train_network
from model.variants import Variant
from workflow.device import claim_device


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
    training: TrainingConfig, model: str, fold: int, device: str = "cpu", architecture: dict[str, Any] | None = None
) -> tuple[TrainSettings, ModelChoice, str]:
    """Training settings, model choice and bin mode for one fold.

    The reference preset adds what the authors' code does: per-epoch polynomial LR decay, weighted
    sampling over bin x censorship strata, bins from the whole cohort, random test-time
    reorganisation, and DeReF's 30,000-patch cap (``TrainingConfig.resolved``, and here the cap);
    explicit config values win over the preset's.
    """
    training = training.resolved()
    reference = training.preset == "reference"
    seed = training.seed + fold
    max_patches = training.max_patches
    if max_patches is None and reference and model == "deref":
        max_patches = 30000
    settings = TrainSettings(
        epochs=training.epochs,
        lr=training.lr,
        weight_decay=training.weight_decay,
        nll_alpha=training.nll_alpha,
        decoupling_weight=training.decoupling_weight,
        distance=training.decoupling_distance,
        optimiser=training.optimiser,
        scheduler=training.scheduler,
        momentum=training.momentum,
        weighted_sampling=training.weighted_sampling,
        batch_size=training.batch_size,
        l1=training.l1,
        selection=training.selection,
        inner_fraction=training.inner_fraction,
        inner_metric=training.inner_metric,
        patience=training.patience,
        ensemble_size=training.ensemble_size,
        max_patches=max_patches,
        test_repeats=training.test_repeats,
        seed=seed,
        device=device,
    )
    choice = ModelChoice(
        preset=training.preset,
        test_rfr=training.test_rfr,
        mri_depth=training.mri_depth,
        seed=seed,
        architecture=dict(architecture or {}),
    )
    return settings, choice, training.bins


def train_model(
    data: CohortData,
    variant: Variant,
    fold: int,
    train_ids: Sequence[str],
    held_ids: Sequence[str],
    training: TrainingConfig,
    device: str = "cpu",
) -> tuple[FoldResult, dict[str, Any]]:
    """Train one variant (a network, or the Cox baseline) on one fold; return the result and a description of the run.

    ``data`` holds the modalities the model uses (``model.registry.uses``) and nothing else;
    ``training`` is the config's, before the variant's overrides. Patients the data leaves out
    (``data.excluded``: no usable slide or MRI) leave both parts of the fold; the description lists them.
    """
    model_name = variant.model
    training = variant.training_config(training).resolved()
    settings, choice, bin_mode = fold_settings(training, model_name, fold, device, dict(variant.architecture))
    left_out = {p: data.excluded[p] for p in [*train_ids, *held_ids] if p in data.excluded}
    held_left_out = [p for p in held_ids if p in left_out]
    train_ids = [p for p in train_ids if p not in left_out]
    held_ids = [p for p in held_ids if p not in left_out]
    source = data.outcomes if bin_mode == "cohort" else data.outcomes.loc[train_ids]
    try:
        edges = time_bin_edges(source["survival_months"].to_numpy(), source["censorship"].to_numpy(), training.n_bins)
    except ValueError as err:
        without = f" after leaving out {len(left_out)} patient(s) without usable inputs ({', '.join(left_out)})"
        raise DataError(
            f"fold {fold}: {err}{without if left_out else ''}; set training: n_bins: lower or add patients with events"
        ) from None
    inputs = Inputs(data.modalities, data.wsi_dim, data.omic_sizes, data.mri_channels, training.n_bins)
    wsi_standardise = bool(training.wsi_standardise)
    start = time.perf_counter()
    meta: dict[str, Any] = {"model": variant.name, "fold": fold, "preset": choice.preset, "variant": variant.as_dict()}
    if MODELS[model_name].build is None:
        # imported here: scikit-survival's Cox models cost 1-2 s of start-up the networks' jobs skip
        from model.coxph import CoxSettings, fit_coxph

        coxph = CoxSettings(**training.coxph)
        result = fit_coxph(data, train_ids, held_ids, edges, coxph)
        meta |= {
            "selection": "none (one fit)",
            "coxph": asdict(coxph),
        }
    else:
        train, held, scaling = fold_patients(
            data, train_ids, held_ids, inputs.second, training.genomics_clip, wsi_standardise
        )

        def build(offset: int) -> torch.nn.Module:
            return build_model(model_name, inputs, replace(choice, seed=choice.seed + offset))

        result = train_network(build, train, held, edges, settings)
        result.scaling = {k: torch.as_tensor(v) for k, v in scaling.tensors().items()}
        meta |= {
            "test_rfr": choice.rfr(),
            "choice": asdict(choice),
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
        "excluded_patients": left_out,
        "excluded_held_out": held_left_out,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "inputs": asdict(inputs),
        "second_names": list(data.second_names),
        "genomics_clip": training.genomics_clip,
    }
    if settings.device.startswith("cuda"):
        meta["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result, meta
