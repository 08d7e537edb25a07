"""The coordinates file between tiling and feature extraction: its writer, its reader, its names.

One HDF5 per slide with dataset ``coords`` (N x 2 int64, level-0 top-left x, y). Its attributes
say how every patch is read: CLAM's (``patch_level``, ``patch_size`` at that level,
``downsample``, ...) so that CLAM's feature extraction reads our files, and explicit ones
(``read_level``, ``read_size``, ``patch_size_level0``) so that nothing downstream derives them.
CLAM's own create_patches_fp files (``patches/<slide>.h5``) carry only CLAM's attributes and are
read the way CLAM reads them. An excluded slide has no patches and says why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from workflow.io import atomic_path

DATASET = "coords"
# CLAM's attributes on 'coords' (wsi_core/WholeSlideImage.py, process_contour).
PATCH_SIZE = "patch_size"
PATCH_LEVEL = "patch_level"
DOWNSAMPLE = "downsample"
DOWNSAMPLED_LEVEL_DIM = "downsampled_level_dim"
LEVEL_DIM = "level_dim"
NAME = "name"
# Ours.
READ_LEVEL = "read_level"
READ_SIZE = "read_size"
PATCH_SIZE_LEVEL0 = "patch_size_level0"
CLAM_COMPATIBLE = "clam_compatible"
STATUS = "status"
REASON = "reason"
OK = "ok"
EXCLUDED = "excluded"


class CoordsError(ValueError):
    """A file that is neither this workflow's nor CLAM's coordinates file."""


@dataclass(frozen=True)
class PatchGeometry:
    """How every patch of a slide is read: level, side at that level, level-0 footprint, level downsample (x, y)."""

    read_level: int
    read_size: int
    size_level0: int
    downsample: tuple[float, float]

    @property
    def integer_downsample(self) -> bool:
        """True when level pixels start on whole level-0 pixels.

        OpenSlide interpolates a read that starts at a fractional level position, so only then
        does one region read cut into patches give the pixels of per-patch reads.
        """
        return all(float(d).is_integer() for d in self.downsample)


@dataclass(frozen=True)
class Coords:
    """A coordinates file as read: patches, status, and how to read them (None when excluded)."""

    xy: np.ndarray
    name: str
    status: str
    reason: str
    geometry: PatchGeometry | None
    clam_compatible: bool
    attrs: dict[str, Any]


def geometry_attrs(
    geometry: PatchGeometry, level_dim: Sequence[int], name: str, clam_compatible: bool
) -> dict[str, Any]:
    """CLAM's attributes and ours for patches read with ``geometry``, of a slide tiled successfully."""
    return {
        PATCH_SIZE: geometry.read_size,
        PATCH_LEVEL: geometry.read_level,
        DOWNSAMPLE: np.asarray(geometry.downsample),
        DOWNSAMPLED_LEVEL_DIM: np.asarray(level_dim, np.int64),
        LEVEL_DIM: np.asarray(level_dim, np.int64),
        NAME: name,
        STATUS: OK,
        REASON: "",
        PATCH_SIZE_LEVEL0: geometry.size_level0,
        READ_LEVEL: geometry.read_level,
        READ_SIZE: geometry.read_size,
        CLAM_COMPATIBLE: clam_compatible,
    }


def excluded_attrs(name: str, reason: str) -> dict[str, Any]:
    """Attributes of a slide that could not be tiled."""
    return {NAME: name, STATUS: EXCLUDED, REASON: reason}


def write_coords(path: str | os.PathLike[str], xy: np.ndarray, attrs: dict[str, Any]) -> None:
    """Write the coordinates and their attributes atomically; HDF5 holds no None, so it becomes ""."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        dataset = h5.create_dataset(
            DATASET,
            data=np.asarray(xy).astype(np.int64).reshape(-1, 2),
            maxshape=(None, 2),
            chunks=True if len(xy) else None,
        )
        for key, value in attrs.items():
            dataset.attrs[key] = "" if value is None else value


def _downsample(value: Any) -> tuple[float, float]:
    ds = np.asarray(value, float).ravel()
    return float(ds[0]), float(ds[-1])


def read_coords(path: str | os.PathLike[str]) -> Coords:
    """Read this workflow's coordinates file, or CLAM's (its patch_level and patch_size are then what is read)."""
    with h5py.File(path, "r") as h5:
        dataset = h5[DATASET]
        xy = dataset[:].astype(np.int64).reshape(-1, 2)
        attrs = dict(dataset.attrs)
    status = str(attrs.get(STATUS, OK))
    geometry = None
    if status == EXCLUDED:
        clam_compatible = False
    elif READ_LEVEL in attrs:
        geometry = PatchGeometry(
            int(attrs[READ_LEVEL]), int(attrs[READ_SIZE]), int(attrs[PATCH_SIZE_LEVEL0]), _downsample(attrs[DOWNSAMPLE])
        )
        clam_compatible = bool(attrs.get(CLAM_COMPATIBLE, False))
    elif PATCH_LEVEL in attrs:
        # CLAM's create_patches_fp: patch_size is the side at patch_level; the level-0 footprint is not stored.
        downsample = _downsample(attrs[DOWNSAMPLE])
        size = int(attrs[PATCH_SIZE])
        geometry = PatchGeometry(int(attrs[PATCH_LEVEL]), size, round(size * downsample[0]), downsample)
        clam_compatible = True
    else:
        raise CoordsError(
            f"{path}: dataset '{DATASET}' has neither '{READ_LEVEL}' (this workflow's tiling) nor '{PATCH_LEVEL}' "
            "(CLAM's create_patches_fp); tile the slide again"
        )
    return Coords(xy, str(attrs.get(NAME, "")), status, str(attrs.get(REASON, "")), geometry, clam_compatible, attrs)
