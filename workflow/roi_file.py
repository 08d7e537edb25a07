"""The MRI ROI files between cropping and training: writers, readers and names, side by side.

Kept free of SimpleITK and nibabel, so training jobs read the cohort file without importing them.

- Per patient: datasets ``CHANNELS`` (C, D, H, W) float32 and ``MASK`` (D, H, W) uint8; attributes
  ``PATIENT_ID``, ``SEQUENCES`` and the crop's ``GEOMETRY``. A patient whose MRI could not be
  cropped (``mri_roi: on_error: exclude``) has no datasets, and ``STATUS`` excluded with a ``REASON``.
- Cohort (roi.h5): datasets ``CHANNELS`` (patients, C, D, H, W) and ``MASKS`` (patients, D, H, W),
  one patient per gzip chunk, ``PATIENTS``, and each ``GEOMETRY`` entry stacked per patient;
  ``EXCLUDED`` and ``EXCLUDED_REASONS`` name the patients left out and why; attributes
  ``SEQUENCES`` and the caller's (the cohort name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from workflow.io import atomic_path

CHANNELS = "channels"
MASK = "mask"
MASKS = "masks"
PATIENT_ID = "patient_id"
PATIENTS = "patients"
SEQUENCES = "sequences"
GEOMETRY = ("present", "origin", "spacing", "direction", "box_mm")  # PatientROI fields, by these names
STATUS = "status"
REASON = "reason"
EXCLUDED = "excluded"
EXCLUDED_REASONS = "excluded_reasons"


@dataclass
class PatientROI:
    """Channels (C, D, H, W) float32, the resampled mask (D, H, W) uint8, and where they came from."""

    channels: np.ndarray
    mask: np.ndarray
    present: np.ndarray
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray
    box_mm: np.ndarray  # physical (x, y, z) min and max corners of the crop in the mask's frame


def write_patient_roi(path: str | os.PathLike[str], patient: str, roi: PatientROI, sequences: Sequence[str]) -> None:
    """One patient's ROI as HDF5 (gathered per cohort afterwards)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset(CHANNELS, data=roi.channels, compression="gzip", compression_opts=4)
        h5.create_dataset(MASK, data=roi.mask, compression="gzip", compression_opts=4)
        h5.attrs[PATIENT_ID] = patient
        h5.attrs[SEQUENCES] = list(sequences)
        for key in GEOMETRY:
            h5.attrs[key] = getattr(roi, key)


def write_excluded_roi(path: str | os.PathLike[str], patient: str, reason: str, sequences: Sequence[str]) -> None:
    """A patient whose MRI could not be cropped: no ROI, the reason (gathered as excluded)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update({PATIENT_ID: patient, SEQUENCES: list(sequences), STATUS: EXCLUDED, REASON: reason})


def _stacked(out: h5py.File, name: str, n: int, shape: tuple[int, ...], dtype: type) -> h5py.Dataset:
    """An (n, *shape) dataset stored one patient per gzip chunk."""
    return out.create_dataset(
        name, shape=(n, *shape), dtype=dtype, chunks=(1, *shape), compression="gzip", compression_opts=4
    )


def gather_rois(
    paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str], attrs: Mapping[str, object]
) -> int:
    """Stack per-patient ROIs into one cohort file: patients x channels x D x H x W; excluded ones listed apart.

    Returns the number of patients stacked; raises ValueError when every patient was excluded.
    """
    excluded, kept = {}, []
    for path in paths:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get(STATUS) == EXCLUDED:
                excluded[str(h5.attrs[PATIENT_ID])] = str(h5.attrs[REASON])
            else:
                kept.append(path)
    if not kept:
        raise ValueError(f"every patient's MRI was excluded: {excluded}; fix the files or the masks")
    strings = h5py.string_dtype()
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        for key, value in attrs.items():
            out.attrs[key] = value
        patients = []
        for i, path in enumerate(kept):
            with h5py.File(path, "r") as h5:
                if i == 0:
                    channels = _stacked(out, CHANNELS, len(kept), h5[CHANNELS].shape, np.float32)
                    masks = _stacked(out, MASKS, len(kept), h5[MASK].shape, np.uint8)
                    geometry = {
                        k: out.create_dataset(
                            k, shape=(len(kept), *np.shape(h5.attrs[k])), dtype=np.asarray(h5.attrs[k]).dtype
                        )
                        for k in GEOMETRY
                    }
                    out.attrs[SEQUENCES] = h5.attrs[SEQUENCES]
                channels[i], masks[i] = h5[CHANNELS][:], h5[MASK][:]
                for key, dataset in geometry.items():
                    dataset[i] = h5.attrs[key]
                patients.append(str(h5.attrs[PATIENT_ID]))
        out.create_dataset(PATIENTS, data=np.asarray(patients, dtype=object), dtype=strings)
        out.create_dataset(EXCLUDED, data=np.asarray(list(excluded), dtype=object), dtype=strings)
        out.create_dataset(EXCLUDED_REASONS, data=np.asarray(list(excluded.values()), dtype=object), dtype=strings)
    return len(patients)


def read_rois(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A cohort file's patients, ROI stack (patients, C, D, H, W) and masks (patients, D, H, W), in file order."""
    with h5py.File(path, "r") as h5:
        patients = [p.decode() if isinstance(p, bytes) else str(p) for p in h5[PATIENTS][:]]
        return patients, h5[CHANNELS][:], h5[MASKS][:]


def read_excluded_rois(path: str | os.PathLike[str]) -> dict[str, str]:
    """A cohort file's patients whose MRI was excluded, with the reasons (none in files made before exclusion)."""
    with h5py.File(path, "r") as h5:
        if EXCLUDED not in h5:
            return {}
        names = [p.decode() if isinstance(p, bytes) else str(p) for p in h5[EXCLUDED][:]]
        reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in h5[EXCLUDED_REASONS][:]]
        return dict(zip(names, reasons, strict=True))


def read_sequences(path: str | os.PathLike[str]) -> list[str]:
    """A cohort file's sequence names, in channel order."""
    with h5py.File(path, "r") as h5:
        return [str(name) for name in h5.attrs[SEQUENCES]]
