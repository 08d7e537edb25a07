"""Scoring new patients with a model package: each member rebuilt from the manifest, its weights and scaling loaded.

A member is built by ``model.registry.build_model`` from the manifest's inputs and build choice
(the weights then replace the init), scales the new patients with its own fold's
``InputScaling`` and predicts in eval mode with ``model.train.predict``, the function that wrote
the fold's predictions; a Cox member applies ``model.coxph``'s saved coefficients. The members'
curves are combined by ``model.package.combine_members``. Per patient the details (patch
attention, DeReF's decoupled features' patch attributions) are averaged over the members, for the
heatmaps. Random test-time reorganisation (the reference preset's DeReF) is one draw, seeded
per member, so scoring the same patients twice gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.coxph import design_matrix, linear_predictions, prediction_table
from model.data import CohortData, DataError, InputScaling, scaled_patients
from model.fold_outputs import PATCH_KEYS, SECOND_KEYS, read_tensors
from model.package import OUTCOMES, Member, Package, PackageError, combine_members, risk_groups
from model.registry import Inputs, ModelChoice, build_model
from model.train import MEMBER_SEED_STRIDE, TrainSettings, attribute, average_hazards, predict


@dataclass
class Scores:
    """Per patient the package's prediction (risk, hazards, survival on the grid, gates, risk group) and the details."""

    table: pd.DataFrame
    details: dict[str, dict[str, np.ndarray]]
    members: list[pd.DataFrame]  # each member's own predictions, in package order


def check_inputs(package: Package, data: CohortData) -> None:
    """Refuse data whose inputs differ from what the package was trained on, naming the difference."""
    manifest = package.manifest
    inputs = manifest["inputs"]
    if "genomics" in package.modalities:
        expected = package.genomics_columns
        if list(data.families) != list(expected):
            raise PackageError(
                f"{package.describe()} reads gene families {list(expected)}, the data has {list(data.families)}"
            )
        for name, columns in expected.items():
            if data.families[name].shape[1] != len(columns):
                raise PackageError(
                    f"family {name}: {data.families[name].shape[1]} columns, the package's has {len(columns)}"
                )
    if "mri" in package.modalities and tuple(data.mri_sequences) != tuple(manifest["mri_sequences"]):
        raise PackageError(
            f"{package.describe()} reads MRI sequences {manifest['mri_sequences']} in this order; "
            f"the new patients' ROIs hold {list(data.mri_sequences)}"
        )
    if "wsi" in package.modalities and data.bags and data.wsi_dim != inputs["wsi_dim"]:
        raise PackageError(f"patch features of width {data.wsi_dim}; the package's encoder gives {inputs['wsi_dim']}")


def _network_member(
    package: Package, member: Member, data: CohortData, ids: Sequence[str], device: str
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    meta = member.meta
    inputs = Inputs(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["inputs"].items()})
    choice = ModelChoice(**meta["choice"])
    settings = TrainSettings(**(meta["settings"] | {"device": device}))
    tensors, _ = read_tensors(member.scaling)
    scaling = InputScaling.from_tensors(tensors, list(package.genomics_columns), meta["genomics_clip"])
    patients = scaled_patients(data, ids, scaling, inputs.second)
    weights, _ = read_tensors(member.weights)
    inner = sorted({int(k.split(".", 1)[0][7:]) for k in weights if k.startswith("member_")})
    states = (
        [{k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"member_{m}.")} for m in inner]
        if inner
        else [weights]
    )
    tables, details = [], {}
    for m, state in enumerate(states):
        offset = MEMBER_SEED_STRIDE * m if inner else 0
        network = build_model(package.model, inputs, replace(choice, seed=choice.seed + offset))
        network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
        network.to(torch.device(device))
        network.reseed(settings.seed + offset + 1000)
        member_settings = replace(settings, seed=settings.seed + offset)
        table, found = predict(network, patients, member_settings)
        tables.append(table)
        if m == 0:  # as the fold's details: the first network's (ensemble members' latent spaces differ)
            details = found
            for patient, scores in attribute(network, patients, settings).items():
                details[patient] |= scores
    return (tables[0] if len(tables) == 1 else average_hazards(tables)), details


def _cox_member(member: Member, data: CohortData, ids: Sequence[str]) -> pd.DataFrame:
    state = {k: torch.from_numpy(np.array(v)) for k, v in read_tensors(member.weights)[0].items()}
    return prediction_table(ids, data.outcomes, *linear_predictions(state, design_matrix(state, data, ids)))


def _full_length(values: np.ndarray, rows: np.ndarray | None, n: int) -> np.ndarray:
    """Per-patch values on every row of the bag (rows a patch cap left out get 0)."""
    if rows is None:
        return values
    full = np.zeros(n, values.dtype)
    full[rows] = values
    return full


def _mean_details(
    per_member: Sequence[Mapping[str, Mapping[str, np.ndarray]]], data: CohortData
) -> dict[str, dict[str, np.ndarray]]:
    """Per patient the members' patch and second-modality scores, averaged (patch rows restored under a cap)."""
    out = {}
    for patient in per_member[0]:
        n = len(data.patches[patient]) if patient in data.patches else 0
        merged: dict[str, list[np.ndarray]] = {}
        for details in per_member:
            found = details.get(patient, {})
            rows = found.get("patch_rows")
            for key, value in found.items():
                if key.startswith(PATCH_KEYS) and value.ndim == 1 and n:
                    merged.setdefault(key, []).append(_full_length(value, rows, n))
                elif key.startswith(SECOND_KEYS):
                    merged.setdefault(key, []).append(value)
        out[patient] = {
            key: np.mean(values, axis=0) for key, values in merged.items() if len(values) == len(per_member)
        }
    return out


def score(package: Package, data: CohortData, device: str = "cpu") -> Scores:
    """The package's prediction for every patient of ``data`` (outcomes may be NaN: they are not used)."""
    check_inputs(package, data)
    ids = list(data.outcomes.index)
    if not ids:
        raise DataError("no patient to score: every new patient was left out (see the log for why)")
    tables, member_details = [], []
    for member in package.members:
        if package.manifest["network"]:
            table, details = _network_member(package, member, data, ids, device)
        else:
            table, details = _cox_member(member, data, ids), {}
        tables.append(table)
        member_details.append(details)
    combined = combine_members(tables, [m.bin_edges for m in package.members], package.grid)
    combined["risk_group"] = risk_groups(combined["risk"], package.cutoff)
    details = _mean_details(member_details, data) if member_details[0] else {}
    return Scores(combined, details, tables)


def patients_table(scores: Scores, data: CohortData, outcomes: pd.DataFrame | None) -> pd.DataFrame:
    """The new patients' predictions.tsv: patient_id, [outcomes,] risk, risk_group, curves, gates, reason.

    ``outcomes`` (indexed by patient_id) when the sheet gives them, else None. A patient the model
    left out (every slide or the MRI excluded) is a row with an empty risk and the reason.
    """
    table = scores.table.drop(columns=[c for c in OUTCOMES if c in scores.table.columns])
    if outcomes is not None:
        table = table.join(outcomes[list(OUTCOMES)], on="patient_id")
    first = ["patient_id", *(OUTCOMES if outcomes is not None else ()), "risk", "risk_group"]
    table = table[first + [c for c in table.columns if c not in first]].assign(reason="")
    if not data.excluded:
        return table
    left_out = pd.DataFrame(
        {"patient_id": list(data.excluded), "risk": np.nan, "risk_group": "", "reason": list(data.excluded.values())}
    )
    if outcomes is not None:
        left_out = left_out.join(outcomes[list(OUTCOMES)], on="patient_id")
    return pd.concat([table, left_out], ignore_index=True)


def describe_members(package: Package) -> list[dict[str, Any]]:
    """One line per member for the log: name, fold, selected epochs, bin edges."""
    return [
        {
            "member": m.name,
            "fold": m.fold,
            "selected_epochs": m.meta.get("selected_epochs"),
            "bin_edges": m.bin_edges.round(2).tolist(),
        }
        for m in package.members
    ]
