"""The model package: one folder per (cohort, run) with everything scoring a new patient needs; its writer and reader.

``manifest.json`` holds, as plain JSON: the model and its options (variant, build choice, inputs,
training settings), the members (the K fold models for ``mode: ensemble``, one model trained on
every patient for ``mode: refit``) with each one's time-bin edges and the sha256 of its files, the
package's time grid, the risk-group cut-off (the median package risk of the training patients),
the input names (gene columns per family, MRI sequences), the encoder and the sha256 of the
weights its features came from, the tiling, feature and MRI settings, and the code version.
``member_<k>.weights.safetensors`` and ``member_<k>.scaling.safetensors`` are the fold's weights
and input scaling (``model.fold_outputs``). Loading reads JSON and safetensors only: it never
unpickles, and it refuses a member file whose sha256 differs from the manifest's.

A package's prediction for a patient combines its members' survival curves (``combine_members``):
each member's curve is read on the package's time grid and the curves are averaged (a mixture of
the members); the risk is minus the sum of the averaged curve, as for every network here. One
member's prediction is that member's own, unchanged, so a fold model in a package scores its
held-out patients exactly as the fold did. This module needs no torch: the package is built
from the folds' files, and the cut-off from their saved predictions.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workflow.features.manifest import file_sha256

FORMAT = "survival-model-package/1"
MANIFEST = "manifest.json"
MODES = ("ensemble", "refit")
OUTCOMES = ("survival_months", "censorship")
# fold.json's time and memory of the training run: not part of the model, left out of the
# manifest so that the same training gives the same package bytes (locally or on SLURM)
RUN_STATISTICS = ("seconds", "peak_rss_mb", "peak_gpu_mb")


class PackageError(ValueError):
    """A package folder that is incomplete, altered, or does not fit what it is asked to score."""


@dataclass(frozen=True)
class Member:
    """One network (or Cox model) of a package: its files, the fold it came from, its time-bin edges."""

    name: str
    fold: int | None  # None: refit on every patient
    weights: Path
    scaling: Path
    bin_edges: np.ndarray
    meta: Mapping[str, Any]  # the fold.json of its training run


@dataclass(frozen=True)
class Package:
    """A package as read: its folder, manifest and members."""

    folder: Path
    manifest: Mapping[str, Any]
    members: tuple[Member, ...]

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def grid(self) -> np.ndarray:
        """The package's time-bin edges (months): its survival curves are given at ``grid[1:]``."""
        return np.asarray(self.manifest["time_grid"], float)

    @property
    def cutoff(self) -> float:
        return float(self.manifest["risk_cutoff"]["value"])

    @property
    def genomics_columns(self) -> dict[str, list[str]]:
        """Family -> gene columns, in the model's input order (empty for a package that reads no genomics)."""
        return family_columns(self.manifest)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.manifest["modalities"])

    def describe(self) -> str:
        return f"package {self.folder} ({self.manifest['run']} trained on {self.manifest['cohort']})"


def family_columns(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """A manifest's gene families and their columns, in the model's input order."""
    return {entry["family"]: list(entry["columns"]) for entry in manifest.get("genomics_families", [])}


def member_files(k: int) -> tuple[str, str]:
    """File names of member ``k``'s weights and input scaling inside a package."""
    return f"member_{k}.weights.safetensors", f"member_{k}.scaling.safetensors"


def survival_on_grid(table: pd.DataFrame, edges: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(patients, len(grid) - 1) survival at the grid's bin ends from a member's ``survival_k`` at its own bin ends.

    A member's curve is a step function: S(t) is its survival at the last of its bin ends not after
    t (1 before the first). On the member's own edges this returns its columns unchanged.
    """
    columns = sorted(
        (c for c in table.columns if c.startswith("survival_") and c[9:].isdigit()), key=lambda c: int(c[9:])
    )
    survival = table[columns].to_numpy(float)
    ends, wanted = np.asarray(edges, float)[1:], np.asarray(grid, float)[1:]
    if len(ends) == len(wanted) and np.array_equal(ends, wanted):
        return survival
    steps = np.searchsorted(ends, wanted, side="right")  # member ends <= t
    padded = np.concatenate([np.ones((len(survival), 1)), survival], axis=1)
    return padded[:, steps]


def combine_members(tables: Sequence[pd.DataFrame], edges: Sequence[np.ndarray], grid: np.ndarray) -> pd.DataFrame:
    """One prediction per patient from the members' tables: the mean survival curve on the grid, its
    hazards and risk (-sum S), and the mean gate weights; a single member's table is returned as is.

    Only patients every member scored are kept (a member leaves out a patient it cannot read).
    """
    if len(tables) == 1:
        return tables[0].reset_index(drop=True)
    ids = [p for p in tables[0]["patient_id"] if all(p in set(t["patient_id"]) for t in tables[1:])]
    indexed = [t.set_index("patient_id").loc[ids] for t in tables]
    first = indexed[0]
    out = pd.DataFrame({"patient_id": ids})
    for column in OUTCOMES:
        if column in first:
            out[column] = first[column].to_numpy()
    survival = np.mean([survival_on_grid(t, e, grid) for t, e in zip(indexed, edges, strict=True)], axis=0)
    before = np.concatenate([np.ones((len(ids), 1)), survival[:, :-1]], axis=1)
    hazards = np.clip(np.where(before > 0, 1 - survival / np.where(before > 0, before, 1), 1.0), 0.0, 1.0)
    out["risk"] = -survival.sum(axis=1)
    for k in range(survival.shape[1]):
        out[f"hazard_{k}"] = hazards[:, k]
    for k in range(survival.shape[1]):
        out[f"survival_{k}"] = survival[:, k]
    gates = [c for c in first.columns if c.startswith("gate_")]
    for column in gates:
        out[column] = np.mean([t[column].to_numpy(float) for t in indexed], axis=0)
    return out


def package_grid(member_edges: Sequence[np.ndarray], cohort_edges: np.ndarray) -> np.ndarray:
    """The members' common edges (one model, or cohort-wide bins), else the edges of the whole training cohort."""
    first = np.asarray(member_edges[0], float)
    if all(np.array_equal(first, np.asarray(e, float)) for e in member_edges[1:]):
        return first
    return np.asarray(cohort_edges, float)


def risk_groups(risk: np.ndarray, cutoff: float) -> np.ndarray:
    """'high risk' above the package's training cut-off, else 'low risk' (the evaluation's convention)."""
    return np.where(np.asarray(risk, float) > cutoff, "high risk", "low risk")


def write_package(
    folder: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    member_sources: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
) -> None:
    """Copy the members' weights and scaling files into ``folder`` and write the manifest, atomically.

    ``manifest['members']`` describes the members in ``member_sources`` order; each gets its files'
    names and sha256 here. The folder is assembled under a temporary name and renamed.
    """
    final = Path(folder)
    tmp = final.with_name(f".tmp{os.getpid()}.{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        members = []
        for k, ((weights, scaling), member) in enumerate(zip(member_sources, manifest["members"], strict=True)):
            names = member_files(k)
            for source, name in zip((weights, scaling), names, strict=True):
                shutil.copyfile(source, tmp / name)
            members.append(
                dict(member)
                | {
                    "weights": names[0],
                    "scaling": names[1],
                    "sha256": {name: file_sha256(tmp / name) for name in names},
                }
            )
        text = json.dumps(dict(manifest) | {"format": FORMAT, "members": members}, indent=2, sort_keys=True)
        (tmp / MANIFEST).write_text(text + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A package's manifest, checked to be one (no member file is read)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise PackageError(
            f"{folder} is not a model package: it has no {MANIFEST}; point predict: package: at a folder "
            "that the package_model rule wrote (results/<cohort>/package/<run>)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PackageError(f"{path} is not valid JSON ({err}); copy the package folder again") from None
    if manifest.get("format") != FORMAT:
        raise PackageError(f"{path}: format {manifest.get('format')!r}, this workflow reads {FORMAT!r}")
    return manifest


def read_package(folder: str | os.PathLike[str]) -> Package:
    """A package's manifest and members, every member file checked against its recorded sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    members = []
    for entry in manifest["members"]:
        for name, expected in entry["sha256"].items():
            path = folder / name
            if not path.is_file():
                raise PackageError(f"{folder}: member file {name} is missing; copy the whole package folder")
            actual = file_sha256(path)
            if actual != expected:
                raise PackageError(
                    f"{path}: sha256 {actual} differs from the manifest's {expected}: the file was altered or "
                    "damaged; copy the package folder again"
                )
        members.append(
            Member(
                name=entry["name"],
                fold=entry["fold"],
                weights=folder / entry["weights"],
                scaling=folder / entry["scaling"],
                bin_edges=np.asarray(entry["bin_edges"], float),
                meta=entry["meta"],
            )
        )
    return Package(folder, manifest, tuple(members))


def cohort_predictions(train: str | os.PathLike[str], held: str | os.PathLike[str]) -> pd.DataFrame:
    """A member's predictions of every training-cohort patient: its fold's training and held-out tables together."""
    from model.fold_outputs import read_predictions

    tables = [read_predictions(path) for path in (train, held)]
    return pd.concat([t for t in tables if len(t)], ignore_index=True)


def training_cutoff(
    member_tables: Sequence[pd.DataFrame], member_edges: Sequence[np.ndarray], grid: np.ndarray
) -> dict[str, Any]:
    """The risk-group cut-off: the median package risk of the training patients.

    ``member_tables[k]`` is member k's prediction of every patient of the training cohort (for a
    fold model, its training and held-out patients together), so the cut-off is the median of what
    the package itself says of the cohort it was trained on; no new patient takes part.
    """
    combined = combine_members(member_tables, member_edges, grid)
    return {
        "value": float(np.median(combined["risk"])),
        "rule": "median package risk of the training cohort's patients",
        "n_patients": len(combined),
    }


def assemble_manifest(
    cohort: str,
    run: str,
    mode: str,
    metas: Sequence[Mapping[str, Any]],
    member_tables: Sequence[pd.DataFrame],
    cohort_edges: np.ndarray,
    network: bool,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest of a package whose members trained as ``metas`` (their fold.json) describe.

    ``member_tables``: each member's predictions of the training cohort's patients (for the cut-off);
    ``cohort_edges``: time bins of the whole training cohort (the grid when members' bins differ);
    ``provenance``: modalities, inputs' names (genomics_columns: family -> columns in the model's
    input order; mri_sequences), encoder, tiling,
    features and MRI settings, and the code version, written as given.
    """
    if mode not in MODES:
        raise PackageError(f"package mode {mode!r}; choose one of {MODES}")
    edges = [np.asarray(m["bin_edges"], float) for m in metas]
    grid = package_grid(edges, cohort_edges)
    first = metas[0]
    provenance = dict(provenance)
    # a list, not a mapping: the manifest's keys are sorted, the families' order is the model's input order
    families = provenance.pop("genomics_columns", None) or {}
    provenance["genomics_families"] = [{"family": name, "columns": list(cols)} for name, cols in families.items()]
    return provenance | {
        "cohort": cohort,
        "run": run,
        "model": first["variant"]["model"],
        "variant": first["variant"],
        "preset": first["preset"],
        "mode": mode,
        "network": network,
        "inputs": first.get("inputs"),
        "time_grid": [float(e) for e in grid],
        "risk_cutoff": training_cutoff(member_tables, edges, grid),
        "members": [
            {
                "name": "refit" if mode == "refit" else f"fold_{m['fold']}",
                "fold": None if mode == "refit" else int(m["fold"]),
                "bin_edges": [float(e) for e in m["bin_edges"]],
                "meta": {k: v for k, v in m.items() if k not in RUN_STATISTICS},
            }
            for m in metas
        ],
    }


def check_features(manifest: Mapping[str, Any], path: str | os.PathLike[str], attrs: Mapping[str, Any]) -> None:
    """Refuse a features file made with another encoder or other weights than the package's, naming both.

    ``attrs`` are the file's attributes (``workflow.features.features_file``); an excluded slide
    (no features) passes, it is left out later with its reason.
    """
    encoder = manifest.get("encoder") or {}
    if not encoder or attrs.get("status") == "excluded":
        return
    found = {"encoder": str(attrs.get("encoder", "")), "weights_sha256": str(attrs.get("weights_sha256", ""))}
    for key, label in (("encoder", "encoder"), ("weights_sha256", "encoder weights (sha256)")):
        if found[key] != str(encoder.get(key, "")):
            raise PackageError(
                f"features file {path} was made with {label} {found[key] or 'unknown'}, but the package "
                f"{manifest['run']} ({manifest['cohort']}) was trained on features of {label} {encoder.get(key)}; "
                f"extract the new slides' features with features: encoder: {encoder.get('encoder')} and the weights "
                f"file of sha256 {encoder.get('weights_sha256')}, else the model scores features it never saw"
            )
