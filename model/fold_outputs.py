"""The files of one trained fold: their names, the writer and the readers, side by side.

Each is written to a temporary name and renamed:

- ``weights.safetensors``: the selected epoch's weights (safetensors: loading never unpickles);
  an ensemble's members under ``member_<m>.``; coxph's coefficients, scalers and PCA axes;
- ``scaling.safetensors``: the input scaling fit on the fold's training patients (per gene family,
  and the patch features' under ``wsi_standardise``; ``model.data.InputScaling``), which a model
  package applies to new patients;
- ``predictions.tsv``: held-out risk, hazards, survival curve (and gate weights) per patient at the
  selected epoch (the honest protocol);
- ``predictions_train.tsv``: the same for the fold's training patients (for leak-free cut-offs);
- ``predictions_best_epoch.tsv``: the same at the epoch with the best held-out C-index, the
  reference protocol, which is optimistic because it chooses on the reported fold;
- ``predictions_repeats.tsv``: the selected model tested again on the held-out patients, a few
  times per test-time mode (header only for a model that is not a network);
- ``details.h5``: per patient the decoupled features, gate weights, attention over patches and
  each decoupled feature's attribution to the patches and second-modality inputs, with each
  patch's slide and level-0 coordinates for heatmaps (root attribute ``second_names``);
- ``log.tsv``: per epoch the loss, learning rate and training / held-out (/ inner) C-index;
- ``fold.json``: what was run: settings, bins, patients, selected and best epochs, time, memory.

The evaluation reads these without torch (its env has none), so torch and safetensors are
imported where weights are written or loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd

from workflow.io import atomic_path, write_tsv

if TYPE_CHECKING:
    import torch

    from model.data import CohortData
    from model.train import FoldResult

SECOND_NAMES = "second_names"
# details keys of DeReF's decoupled features -> how figures and tables name them
DECOUPLED_LABELS = {
    "genomic": "second-modality specific",
    "pathology": "pathology specific",
    "shared": "shared",
    "explore": "explore",
}
# DeReF's decoupled features that read patches, drawn over the slide (the second modality's specific one reads none)
ON_SLIDE = ("shared", "explore", "pathology")
# details keys with one value per patch (the model's attention, DeReF's attributions) or per second-modality input
PATCH_KEYS = ("attention", "patch_attribution_")
SECOND_KEYS = ("second_attribution_",)
REPEAT_COLUMNS = ("patient_id", "survival_months", "censorship", "risk", "test_rfr", "repeat")

# Output key (the train_fold rule's output names) -> file name in the fold's folder.
FILES = {
    "weights": "weights.safetensors",
    "scaling": "scaling.safetensors",
    "predictions": "predictions.tsv",
    "predictions_train": "predictions_train.tsv",
    "best_epoch": "predictions_best_epoch.tsv",
    "repeats": "predictions_repeats.tsv",
    "details": "details.h5",
    "log": "log.tsv",
    "meta": "fold.json",
}


def save_weights(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write a safetensors file whose bytes depend only on the tensors and metadata.

    safetensors writes its header from a hash map, in an order that changes between runs; the
    header is rewritten with sorted keys (and padded to 8 bytes again), so identical runs give
    identical files.
    """
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    size = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with atomic_path(path) as tmp:
        tmp.write_bytes(len(header).to_bytes(8, "little") + header + blob[8 + size :])


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load a fold's safetensors weights into a freshly built model (strict: every key must match)."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def read_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors file's tensors as numpy arrays and its metadata (never unpickles)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118 - no dict


def write_details(
    path: str | os.PathLike[str], details: Mapping[str, Mapping[str, np.ndarray]], data: CohortData
) -> None:
    """Per-patient outputs (a fold's at its selected epoch, or a package's for new patients); attention
    rows aligned with slide_id, x, y."""
    strings = h5py.string_dtype()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs[SECOND_NAMES] = list(data.second_names)
        for patient, outputs in details.items():
            group = h5.create_group(patient)
            for key, value in outputs.items():
                group.create_dataset(key, data=value)
            if "attention" in outputs:
                patches = data.patches[patient]
                if "patch_rows" in outputs:
                    patches = patches.iloc[outputs["patch_rows"]]
                group.create_dataset("slide_id", data=patches["slide_id"].to_numpy(dtype=object), dtype=strings)
                group.create_dataset("coords", data=patches[["x", "y"]].to_numpy(np.int64))


def read_details(
    path: str | os.PathLike[str], keys: Sequence[str] | None = None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per patient the datasets of a details file (``keys`` only, when given), and the second modality's input names.

    ``slide_id`` comes back as strings; every other dataset as a numpy array.
    """
    details = {}
    with h5py.File(path, "r") as h5:
        names = [str(n) for n in h5.attrs.get(SECOND_NAMES, [])]
        for patient, group in h5.items():
            wanted = group.keys() if keys is None else [k for k in keys if k in group]
            details[patient] = {k: group[k].asstr()[:] if k == "slide_id" else group[k][:] for k in wanted}
    return details, names


def attention_keys(details: Mapping[str, np.ndarray]) -> list[str]:
    """The per-patch score arrays of one patient's details, attention first."""
    keys = [k for k in details if k.startswith(PATCH_KEYS)]
    return sorted(keys, key=lambda k: (k != "attention", k))


def write_fold_outputs(
    paths: Mapping[str, str | os.PathLike[str]], result: FoldResult, meta: Mapping[str, Any], data: CohortData
) -> None:
    """Write every output of a fold; ``paths`` maps each key of FILES to its path."""
    if set(paths) != set(FILES):
        raise ValueError(f"fold outputs {sorted(paths)}; expected {sorted(FILES)}")
    save_weights(
        paths["weights"],
        result.state_dict,
        {"model": meta["model"], "fold": str(meta["fold"]), "epoch": str(meta["selected_epoch"])},
    )
    save_weights(paths["scaling"], result.scaling, {"model": meta["model"], "fold": str(meta["fold"])})
    fold = {"fold": meta["fold"], "model": meta["model"]}
    write_tsv(result.predictions.assign(**fold, epoch=meta["selected_epoch"]), paths["predictions"])
    write_tsv(result.predictions_train.assign(**fold, epoch=meta["selected_epoch"]), paths["predictions_train"])
    write_tsv(result.best_epoch_predictions.assign(**fold, epoch=meta["best_epoch_optimistic"]), paths["best_epoch"])
    repeats = result.repeats
    if repeats.empty:
        repeats = pd.DataFrame(columns=[*REPEAT_COLUMNS])
    write_tsv(repeats.assign(**fold), paths["repeats"])
    write_details(paths["details"], result.details, data)
    write_tsv(result.log, paths["log"])
    with atomic_path(paths["meta"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A predictions table (any of the three), patient IDs kept as strings."""
    return pd.read_csv(path, sep="\t", dtype={"patient_id": str})


def read_bin_edges(path: str | os.PathLike[str]) -> np.ndarray:
    """The time-bin edges the fold trained with, from its fold.json."""
    return np.asarray(json.loads(Path(path).read_text())["bin_edges"], float)


def read_excluded_held_out(path: str | os.PathLike[str]) -> list[str]:
    """The fold's held-out patients the model left out (no usable slide or MRI), from its fold.json."""
    return list(json.loads(Path(path).read_text()).get("excluded_held_out", []))


def read_log(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The per-epoch training log."""
    return pd.read_csv(path, sep="\t")
