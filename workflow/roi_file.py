"""The MRI ROI files between cropping and training: writers, readers and names, side by side.

Kept free of SimpleITK and nibabel, so training jobs read the cohort file without importing them.

- Per patient: datasets ``CHANNELS`` (C, D, H, W) float32 and ``MASK`` (D, H, W) uint8; attributes
  ``PATIENT_ID``, ``SEQUENCES`` and the crop's ``GEOMETRY``.
- Cohort (roi.h5): datasets ``CHANNELS`` (patients, C, D, H, W) and ``MASKS`` (patients, D, H, W),
  one patient per gzip chunk, ``PATIENTS``, and each ``GEOMETRY`` entry stacked per patient;
  attributes ``SEQUENCES`` and the caller's (the cohort name).
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


def _stacked(out: h5py.File, name: str, n: int, shape: tuple[int, ...], dtype: type) -> h5py.Dataset:
    """An (n, *shape) dataset stored one patient per gzip chunk."""
    return out.create_dataset(
        name, shape=(n, *shape), dtype=dtype, chunks=(1, *shape), compression="gzip", compression_opts=4
    )


def gather_rois(
    paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str], attrs: Mapping[str, object]
) -> int:
    """Stack per-patient ROIs into one cohort file: patients x channels x D x H x W."""
    strings = h5py.string_dtype()
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        for key, value in attrs.items():
            out.attrs[key] = value
        patients = []
        for i, path in enumerate(paths):
            with h5py.File(path, "r") as h5:
                if i == 0:
                    channels = _stacked(out, CHANNELS, len(paths), h5[CHANNELS].shape, np.float32)
                    masks = _stacked(out, MASKS, len(paths), h5[MASK].shape, np.uint8)
                    geometry = {
                        k: out.create_dataset(
                            k, shape=(len(paths), *np.shape(h5.attrs[k])), dtype=np.asarray(h5.attrs[k]).dtype
                        )
                        for k in GEOMETRY
                    }
                    out.attrs[SEQUENCES] = h5.attrs[SEQUENCES]
                channels[i], masks[i] = h5[CHANNELS][:], h5[MASK][:]
                for key, dataset in geometry.items():
                    dataset[i] = h5.attrs[key]
                patients.append(str(h5.attrs[PATIENT_ID]))
        out.create_dataset(PATIENTS, data=np.asarray(patients, dtype=object), dtype=strings)
    return len(patients)


def read_rois(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A cohort file's patients, ROI stack (patients, C, D, H, W) and masks (patients, D, H, W), in file order."""
    with h5py.File(path, "r") as h5:
        patients = [p.decode() if isinstance(p, bytes) else str(p) for p in h5[PATIENTS][:]]
        return patients, h5[CHANNELS][:], h5[MASKS][:]


def read_sequences(path: str | os.PathLike[str]) -> list[str]:
    """A cohort file's sequence names, in channel order."""
    with h5py.File(path, "r") as h5:
        return [str(name) for name in h5.attrs[SEQUENCES]]
