"""A cohort's training inputs, read once per job: patch bags, gene families, MRI ROIs and outcomes.

A job reads only the modalities its model uses (``model.registry.uses``). Bags are concatenated
over a patient's slides (as MCAT, DeReF and HDMoE do) and cached in memory, so no step reads the
disk (the reference reloads every bag at every step). Per fold, fit on that fold's training
patients only (``fold_patients``): genomic families are standardised per column, and with
``wsi_standardise`` patch features per dimension over every training patch (``Standardizer``).
Each file is read through its format's owner: ``workflow.genomics`` (pathways.h5) and
``workflow.roi_file`` (roi.h5). A model leaves out a patient whose every slide was excluded
(``tiling: on_error: exclude``, at tiling or at feature extraction) if it reads slides, or whose
MRI was excluded (``mri_roi: on_error: exclude``) if it reads MRI, and records why
(``CohortData.excluded``); models that do not read that modality keep the patient.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from workflow.features import features_file as ff
from workflow.genomics import read_pathways
from workflow.roi_file import read_excluded_rois, read_rois, read_sequences
from workflow.tiling.coords import EXCLUDED


class DataError(ValueError):
    """Training inputs that do not fit together (missing patients, empty bags, mixed encoders)."""


@dataclass
class Patient:
    """One patient's inputs and outcome: WSI bag (N, D), second-modality tensors, time, censorship.

    ``second`` holds the six genomic family vectors (d_i,), or one MRI volume (C, D, H, W), or
    nothing; a model that reads no WSI gets an empty (0, 0) bag.
    """

    patient_id: str
    bag: torch.Tensor
    second: list[torch.Tensor]
    time: float
    censorship: int


class Standardizer:
    """Per-column z-scores fit on training patients only, applied to any patients of the fold.

    Constant columns get unit scale. ``clip`` bounds extreme z-scores (TCGA RNA-seq has outliers
    in the thousands); off by default, as in MCAT, DeReF and HDMoE.
    """

    def __init__(self, clip: float | None = None) -> None:
        self.clip = clip
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, train: np.ndarray) -> Standardizer:
        return self.fit_parts([train])

    def fit_parts(self, parts: Iterable[np.ndarray]) -> Standardizer:
        """Fit on the rows of several matrices as if stacked (patch bags), in float64 without stacking."""
        count, total, squares = 0, 0.0, 0.0
        for part in parts:
            part = np.asarray(part, np.float64)
            count, total = count + len(part), total + part.sum(axis=0)
            squares = squares + np.square(part).sum(axis=0)
        if count == 0:
            raise ValueError("Standardizer.fit on no rows")
        self.mean_ = total / count
        scale = np.sqrt(np.maximum(squares / count - np.square(self.mean_), 0.0))
        self.scale_ = np.where(scale > 1e-12 * np.maximum(np.abs(self.mean_), 1.0), scale, 1.0)
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("Standardizer.transform before fit")
        z = (values - self.mean_) / self.scale_
        if self.clip is not None:
            z = np.clip(z, -self.clip, self.clip)
        return z.astype(np.float32)


@dataclass
class CohortData:
    """Outcomes (indexed by patient_id) and whichever modalities were read; absent ones are empty."""

    outcomes: pd.DataFrame  # survival_months, censorship
    bags: dict[str, torch.Tensor] = field(default_factory=dict)  # patient -> (N, D) float32
    patches: dict[str, pd.DataFrame] = field(default_factory=dict)  # patient -> slide_id, x, y per bag row
    families: dict[str, np.ndarray] = field(default_factory=dict)  # family -> (patients, d_i), outcomes order
    mri: np.ndarray | None = None  # (patients, C, D, H, W)
    mri_mask: np.ndarray | None = None  # (patients, D, H, W) tumour masks
    mri_sequences: tuple[str, ...] = ()  # the MRI channels' sequence names
    excluded: dict[str, str] = field(default_factory=dict)  # patient -> why the model leaves them out

    @property
    def second_names(self) -> tuple[str, ...]:
        """Names of the second modality's inputs: the gene families, else the MRI sequences."""
        return tuple(self.families) or self.mri_sequences

    @property
    def modalities(self) -> tuple[str, ...]:
        present = {"wsi": bool(self.bags), "genomics": bool(self.families), "mri": self.mri is not None}
        return tuple(m for m, here in present.items() if here)

    @property
    def wsi_dim(self) -> int:
        return next(iter(self.bags.values())).shape[1] if self.bags else 0

    @property
    def omic_sizes(self) -> tuple[int, ...]:
        return tuple(m.shape[1] for m in self.families.values())

    @property
    def mri_channels(self) -> int:
        return 0 if self.mri is None else self.mri.shape[1]


def read_bags(
    slides: Mapping[str, Sequence[tuple[str, str | os.PathLike[str]]]],
) -> tuple[dict[str, torch.Tensor], dict[str, pd.DataFrame], dict[str, str]]:
    """patient -> [(slide_id, features file)] to per-patient bags (float32), patch tables, and the
    patients whose every slide was excluded, with the reasons."""
    bags, patches, excluded, encoders = {}, {}, {}, set()
    for patient, files in slides.items():
        parts, where, reasons = [], [], []
        for slide, path in files:
            features, coords, attrs = ff.read_features(path)
            if attrs.get(ff.STATUS) == EXCLUDED:
                reasons.append(f"slide {slide} excluded: {attrs.get(ff.REASON, '')}")
                continue
            encoders.add(str(attrs.get(ff.ENCODER, "")))
            parts.append(features.astype(np.float32, copy=False))
            where.append(pd.DataFrame({"slide_id": slide, "x": coords[:, 0], "y": coords[:, 1]}))
        if files and len(reasons) == len(files):
            excluded[patient] = "; ".join(reasons)
            continue
        if not parts or sum(len(p) for p in parts) == 0:
            raise DataError(
                f"patient {patient}: no patch features in slide(s) {[s for s, _ in files]}; "
                "check the tiling summary (no tissue found?) or drop the patient from patients.tsv"
            )
        bags[patient] = torch.from_numpy(np.concatenate(parts))
        patches[patient] = pd.concat(where, ignore_index=True)
    if len(encoders) > 1:
        raise DataError(f"features come from different encoders {sorted(encoders)}; re-extract them with one")
    return bags, patches, excluded


def read_families(path: str | os.PathLike[str], patients: Sequence[str]) -> dict[str, np.ndarray]:
    """The six family matrices of pathways.h5, rows in ``patients`` order."""
    ids, matrices, _ = read_pathways(path)
    row = {p: i for i, p in enumerate(ids)}
    missing = [p for p in patients if p not in row]
    if missing:
        raise DataError(f"{path}: no genomics for patient(s) {missing[:5]}; rebuild the pathway tensors")
    order = [row[p] for p in patients]
    return {name: m[order] for name, m in matrices.items()}


def read_mri(path: str | os.PathLike[str], patients: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (patients, C, D, H, W) ROI stack of roi.h5 and its (patients, D, H, W) masks, in ``patients`` order."""
    ids, channels, masks = read_rois(path)
    row = {p: i for i, p in enumerate(ids)}
    missing = [p for p in patients if p not in row]
    if missing:
        raise DataError(f"{path}: no MRI ROI for patient(s) {missing[:5]}; rerun the MRI stage")
    order = [row[p] for p in patients]
    return channels[order].astype(np.float32, copy=False), masks[order].astype(bool, copy=False)


def load_cohort_data(
    outcomes: pd.DataFrame,
    slides: Mapping[str, Sequence[tuple[str, str | os.PathLike[str]]]] | None = None,
    genomics: str | os.PathLike[str] | None = None,
    mri: str | os.PathLike[str] | None = None,
) -> CohortData:
    """Everything a fold needs from the modalities given. ``outcomes`` is indexed by patient_id.

    Patients without usable inputs (every slide, or the MRI, excluded) leave ``outcomes`` for ``excluded``.
    """
    patients = list(outcomes.index)
    if not (slides or genomics or mri):
        raise DataError("no modality given: a model reads at least one of the WSI features, genomics or MRI")
    data = CohortData(outcomes)
    if slides:
        no_slides = [p for p in patients if not slides.get(p)]
        if no_slides:
            raise DataError(f"patient(s) {no_slides[:5]} have no slide features; add their slides to slides.tsv")
        data.bags, data.patches, data.excluded = read_bags({p: slides[p] for p in patients})
    if mri:
        for patient, reason in read_excluded_rois(mri).items():
            data.excluded[patient] = "; ".join(filter(None, [data.excluded.get(patient), f"MRI excluded: {reason}"]))
    patients = [p for p in patients if p not in data.excluded]
    data.outcomes = outcomes.loc[patients]
    for patient in data.excluded:
        data.bags.pop(patient, None)
        data.patches.pop(patient, None)
    if genomics:
        data.families = read_families(genomics, patients)
    if mri:
        data.mri, data.mri_mask = read_mri(mri, patients)
        data.mri_sequences = tuple(read_sequences(mri))
    return data


@dataclass
class InputScaling:
    """What a fold fit on its training patients to scale inputs: per gene family and for the patch features.

    Saved with the fold (``model.fold_outputs``, ``scaling.safetensors``) so that a model package
    scales a new patient exactly as the fold scaled its held-out patients.
    """

    families: dict[str, Standardizer] = field(default_factory=dict)
    wsi: Standardizer | None = None

    def tensors(self) -> dict[str, np.ndarray]:
        """``genomics.<family>.mean`` / ``.scale`` and ``wsi.mean`` / ``.scale`` (float64)."""
        named = {f"genomics.{name}": s for name, s in self.families.items()}
        if self.wsi is not None:
            named["wsi"] = self.wsi
        return {f"{key}.{part}": getattr(s, f"{part}_") for key, s in named.items() for part in ("mean", "scale")}

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, np.ndarray], families: Sequence[str], clip: float | None
    ) -> InputScaling:
        """The scaling saved by ``tensors``; ``families`` in the model's input order."""

        def standardizer(key: str, clip: float | None) -> Standardizer:
            fitted = Standardizer(clip)
            fitted.mean_, fitted.scale_ = np.asarray(tensors[f"{key}.mean"]), np.asarray(tensors[f"{key}.scale"])
            return fitted

        scaling = cls(
            {name: standardizer(f"genomics.{name}", clip) for name in families if f"genomics.{name}.mean" in tensors}
        )
        if "wsi.mean" in tensors:
            scaling.wsi = standardizer("wsi", None)
        return scaling


def fit_scaling(
    data: CohortData,
    train_ids: Sequence[str],
    second: str | None = None,
    genomics_clip: float | None = None,
    wsi_standardise: bool = False,
) -> InputScaling:
    """Fit the fold's input scaling on its training patients only."""
    scaling = InputScaling()
    if second == "genomics":
        row = {p: i for i, p in enumerate(data.outcomes.index)}
        rows = [row[p] for p in train_ids]
        scaling.families = {name: Standardizer(genomics_clip).fit(m[rows]) for name, m in data.families.items()}
    if wsi_standardise and data.bags:
        scaling.wsi = Standardizer().fit_parts(data.bags[p].numpy() for p in train_ids)
    return scaling


def scaled_patients(data: CohortData, ids: Sequence[str], scaling: InputScaling, second: str | None) -> list[Patient]:
    """Patients ``ids`` of ``data`` as a model reads them, scaled by ``scaling``.

    ``second`` is the modality a model pairs with the WSI (genomics, mri or None); a cohort
    without WSI gives every patient an empty bag. A genomics value that is missing (NaN, allowed
    only by ``predict: impute: training_mean``) becomes 0 after scaling: the training mean.
    """
    row = {p: i for i, p in enumerate(data.outcomes.index)}
    empty = torch.zeros(0, 0)

    def second_of(p: str) -> list[torch.Tensor]:
        if second == "genomics":
            return [
                torch.from_numpy(np.nan_to_num(scaling.families[name].transform(m[row[p] : row[p] + 1])[0], nan=0.0))
                for name, m in data.families.items()
            ]
        if second == "mri":
            return [torch.from_numpy(data.mri[row[p]])]
        return []

    def bag_of(p: str) -> torch.Tensor:
        bag = data.bags.get(p, empty)
        if scaling.wsi is not None and bag.numel():
            return torch.from_numpy(scaling.wsi.transform(bag.numpy()))
        return bag

    def patient(p: str) -> Patient:
        outcome = data.outcomes.loc[p]
        time, censorship = float(outcome["survival_months"]), int(outcome["censorship"])
        return Patient(p, bag_of(p), second_of(p), time, censorship)

    return [patient(p) for p in ids]


def fold_patients(
    data: CohortData,
    train_ids: Sequence[str],
    held_ids: Sequence[str],
    second: str | None = None,
    genomics_clip: float | None = None,
    wsi_standardise: bool = False,
) -> tuple[list[Patient], list[Patient], InputScaling]:
    """Training and held-out patients of one fold, and the scaling fit on the training patients only."""
    unknown = sorted(set(train_ids) - set(data.outcomes.index)) + sorted(set(held_ids) - set(data.outcomes.index))
    if unknown:
        raise DataError(f"split names patient(s) {unknown[:5]} that are not in the cohort's patients.tsv")
    scaling = fit_scaling(data, train_ids, second, genomics_clip, wsi_standardise)
    return (
        scaled_patients(data, train_ids, scaling, second),
        scaled_patients(data, held_ids, scaling, second),
        scaling,
    )
