"""The features file between extraction and training: its writer, its reader, its names.

One HDF5 per slide: ``features`` (N x D), ``coords`` (N x 2 int64 level-0 top-left corners,
carrying the tiling attributes), ``failed_coords`` (patches that could not be read), and file
attributes naming the slide, the encoder and its weights, and the run. CLAM's
``h5_files/<slide>.h5`` (``features`` and ``coords``, no attributes) reads the same way. Kept
free of torch and timm so that training jobs start fast.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import h5py
import numpy as np

from workflow.io import atomic_path

FEATURES = "features"
COORDS = "coords"
FAILED_COORDS = "failed_coords"
# File attributes read back by the summary, the CLAM import and training.
SLIDE_ID = "slide_id"
STATUS = "status"
REASON = "reason"
ENCODER = "encoder"
WEIGHTS_SOURCE = "weights_source"
WEIGHTS_SHA256 = "weights_sha256"
DEVICE = "device"
N_PATCHES = "n_patches"
N_FAILED = "n_failed"
SECONDS = "seconds"
PATCHES_PER_SECOND = "patches_per_second"
PROVENANCE = "provenance"  # key over the inputs and settings; a finished file with it is reused


class SlideFeatures(NamedTuple):
    """A features file as read: features (N, D), coords (N, 2) and the file attributes."""

    features: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any]


def write_features(
    path: str | os.PathLike[str],
    features: np.ndarray,
    coords: np.ndarray,
    coords_attrs: dict[str, Any],
    attrs: dict[str, Any],
    failed: np.ndarray | None = None,
) -> None:
    """Write ``features`` (N x D) and ``coords`` (N x 2, with the tiling attributes) atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset(FEATURES, data=features)
        dataset = h5.create_dataset(COORDS, data=coords.astype(np.int64).reshape(-1, 2))
        for key, value in coords_attrs.items():
            dataset.attrs[key] = value
        h5.create_dataset(
            FAILED_COORDS, data=(np.empty((0, 2), np.int64) if failed is None else failed.astype(np.int64))
        )
        for key, value in attrs.items():
            h5.attrs[key] = "" if value is None else value


def read_features(path: str | os.PathLike[str]) -> SlideFeatures:
    """Features, coords (int64) and file attributes of this workflow's features file or CLAM's h5_files one."""
    with h5py.File(path, "r") as h5:
        return SlideFeatures(h5[FEATURES][:], h5[COORDS][:].astype(np.int64), dict(h5.attrs))


def read_features_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file attributes alone, without reading the features."""
    with h5py.File(path, "r") as h5:
        return dict(h5.attrs)
