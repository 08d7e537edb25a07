"""A cohort's training inputs, read once per job: patch bags, the second modality and outcomes.

Bags are concatenated over a patient's slides (as MCAT, DeReF and HDMoE do) and cached in memory,
so no step reads the disk (the reference reloads every bag at every step). Genomic families are
standardised per fold, fit on that fold's training patients only (``fold_patients``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
import torch

from model.train import Patient
from workflow.features.store import read_features
from workflow.genomics import Standardizer, read_pathways


class DataError(ValueError):
    """Training inputs that do not fit together (missing patients, empty bags, mixed encoders)."""


@dataclass
class CohortData:
    """Outcomes (indexed by patient_id), bags and their patch positions, and the second modality."""

    outcomes: pd.DataFrame  # survival_months, censorship
    bags: dict[str, torch.Tensor]  # patient -> (N, D) float32
    patches: dict[str, pd.DataFrame]  # patient -> slide_id, x, y of each bag row
    second: str  # "genomics" or "mri"
    families: dict[str, np.ndarray]  # family -> (patients, d_i), rows in outcomes order (genomics)
    mri: np.ndarray | None  # (patients, C, D, H, W) (mri)

    @property
    def wsi_dim(self) -> int:
        return next(iter(self.bags.values())).shape[1]

    @property
    def omic_sizes(self) -> tuple[int, ...]:
        return tuple(m.shape[1] for m in self.families.values())

    @property
    def mri_channels(self) -> int:
        return 0 if self.mri is None else self.mri.shape[1]


def read_bags(
    slides: Mapping[str, Sequence[tuple[str, str | os.PathLike[str]]]],
) -> tuple[dict[str, torch.Tensor], dict[str, pd.DataFrame]]:
    """patient -> [(slide_id, features file)] to per-patient bags (float32) and patch tables."""
    bags, patches, encoders = {}, {}, set()
    for patient, files in slides.items():
        parts, where = [], []
        for slide, path in files:
            features, coords, attrs = read_features(path)
            encoders.add(str(attrs.get("encoder", "")))
            parts.append(features.astype(np.float32, copy=False))
            where.append(pd.DataFrame({"slide_id": slide, "x": coords[:, 0], "y": coords[:, 1]}))
        if not parts or sum(len(p) for p in parts) == 0:
            raise DataError(
                f"patient {patient}: no patch features in slide(s) {[s for s, _ in files]}; "
                "check the tiling summary (no tissue found?) or drop the patient from patients.tsv"
            )
        bags[patient] = torch.from_numpy(np.concatenate(parts))
        patches[patient] = pd.concat(where, ignore_index=True)
    if len(encoders) > 1:
        raise DataError(f"features come from different encoders {sorted(encoders)}; re-extract them with one")
    return bags, patches


def read_families(path: str | os.PathLike[str], patients: Sequence[str]) -> dict[str, np.ndarray]:
    """The six family matrices of pathways.h5, rows in ``patients`` order."""
    ids, matrices, _ = read_pathways(path)
    row = {p: i for i, p in enumerate(ids)}
    missing = [p for p in patients if p not in row]
    if missing:
        raise DataError(f"{path}: no genomics for patient(s) {missing[:5]}; rebuild the pathway tensors")
    order = [row[p] for p in patients]
    return {name: m[order] for name, m in matrices.items()}


def read_mri(path: str | os.PathLike[str], patients: Sequence[str]) -> np.ndarray:
    """The (patients, C, D, H, W) ROI stack of roi.h5, rows in ``patients`` order."""
    with h5py.File(path, "r") as h5:
        ids = [p.decode() if isinstance(p, bytes) else str(p) for p in h5["patients"][:]]
        row = {p: i for i, p in enumerate(ids)}
        missing = [p for p in patients if p not in row]
        if missing:
            raise DataError(f"{path}: no MRI ROI for patient(s) {missing[:5]}; rerun the MRI stage")
        channels = h5["channels"][:]
    return channels[[row[p] for p in patients]].astype(np.float32, copy=False)


def load_cohort_data(
    outcomes: pd.DataFrame,
    slides: Mapping[str, Sequence[tuple[str, str | os.PathLike[str]]]],
    second: str,
    second_path: str | os.PathLike[str],
) -> CohortData:
    """Everything a fold needs. ``outcomes`` is indexed by patient_id (survival_months, censorship)."""
    patients = list(outcomes.index)
    no_slides = [p for p in patients if not slides.get(p)]
    if no_slides:
        raise DataError(f"patient(s) {no_slides[:5]} have no slide features; add their slides to slides.tsv")
    bags, patches = read_bags({p: slides[p] for p in patients})
    if second == "genomics":
        return CohortData(outcomes, bags, patches, second, read_families(second_path, patients), None)
    if second == "mri":
        return CohortData(outcomes, bags, patches, second, {}, read_mri(second_path, patients))
    raise DataError(f"unknown second modality {second!r}; expected genomics or mri")


def fold_patients(
    data: CohortData, train_ids: Sequence[str], held_ids: Sequence[str], genomics_clip: float | None = None
) -> tuple[list[Patient], list[Patient]]:
    """Training and held-out patients of one fold; genomics standardised on the training patients."""
    unknown = sorted(set(train_ids) - set(data.outcomes.index)) + sorted(set(held_ids) - set(data.outcomes.index))
    if unknown:
        raise DataError(f"split names patient(s) {unknown[:5]} that are not in the cohort's patients.tsv")
    row = {p: i for i, p in enumerate(data.outcomes.index)}
    if data.second == "genomics":
        train_rows = [row[p] for p in train_ids]
        scaled = [
            torch.from_numpy(Standardizer(genomics_clip).fit(m[train_rows]).transform(m))
            for m in data.families.values()
        ]

        def other(p: str) -> list[torch.Tensor]:
            return [family[row[p]] for family in scaled]
    else:

        def other(p: str) -> list[torch.Tensor]:
            return [torch.from_numpy(data.mri[row[p]])]

    def patient(p: str) -> Patient:
        outcome = data.outcomes.loc[p]
        return Patient(p, data.bags[p], other(p), float(outcome["survival_months"]), int(outcome["censorship"]))

    return [patient(p) for p in train_ids], [patient(p) for p in held_ids]


def genomics_only_data(table_path: str | os.PathLike[str], signatures_path: str | os.PathLike[str]) -> CohortData:
    """An MCAT CSV as a cohort for genomics-only models (no slides: each bag is one zero patch).

    Outcomes come from the table's first row per ``case_id``; families as ``build_pathways``
    (rnaseq + cnv, MCAT's order). This is the real-data check of the SNN path.
    """
    from workflow.genomics import build_pathways

    table = pd.read_csv(table_path, usecols=["case_id", "survival_months", "censorship"], dtype={"case_id": str})
    outcomes = table.drop_duplicates("case_id").set_index("case_id").rename_axis("patient_id")
    patients = list(outcomes.index)
    families, _ = build_pathways(table_path, signatures_path, patients)
    bags = {p: torch.zeros(1, 1) for p in patients}
    return CohortData(outcomes, bags, {}, "genomics", families, None)
