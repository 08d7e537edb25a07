"""Reuse existing CLAM features instead of extracting: ``h5_files/<slide>.h5`` or ``pt_files/<slide>.pt``.

CLAM's h5 holds ``features`` and ``coords``; its pt holds features only, so their coordinates are
taken from this workflow's tiling of the same slide, and only when the patch counts agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from workflow.features.extract import FeatureError, read_coords, write_features


def import_clam(
    slide_id: str,
    clam_file: str | os.PathLike[str],
    coords_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    encoder: str,
) -> dict[str, Any]:
    """Convert one slide's CLAM features into this workflow's features file."""
    clam_file = Path(clam_file)
    our_coords, coords_attrs = read_coords(coords_path)
    if clam_file.suffix == ".h5":
        with h5py.File(clam_file, "r") as h5:
            features, coords = h5["features"][:], h5["coords"][:].astype(np.int64)
    elif clam_file.suffix == ".pt":
        features = torch.load(clam_file, map_location="cpu", weights_only=True).numpy()
        if len(features) != len(our_coords):
            raise FeatureError(
                f"slide {slide_id}: {clam_file} has {len(features)} patches but this workflow's tiling has {len(our_coords)}; "
                "a .pt file has no coordinates, so use CLAM's h5_files/ instead, or tile with tiling: clam_compatible: true"
            )
        coords = our_coords
    else:
        raise FeatureError(f"slide {slide_id}: {clam_file} is neither a CLAM .h5 nor a .pt features file")
    if features.ndim != 2 or len(features) != len(coords):
        raise FeatureError(
            f"slide {slide_id}: {clam_file} holds features of shape {features.shape} for {len(coords)} coordinates"
        )
    attrs = {
        "slide_id": slide_id,
        "encoder": encoder,
        "weights_source": f"imported from CLAM: {clam_file.resolve()}",
        "weights_sha256": "",
        "dtype": str(features.dtype),
        "status": "ok",
        "reason": "",
        "n_patches": len(features),
        "n_failed": 0,
    }
    write_features(out_path, features, coords, coords_attrs, attrs)
    return attrs
