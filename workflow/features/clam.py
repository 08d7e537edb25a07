"""CLAM's feature files, both ways: import ``h5_files/<slide>.h5`` or ``pt_files/<slide>.pt``, export ``.pt``.

CLAM's h5 holds ``features`` and ``coords``; its pt holds features only, so their coordinates are
taken from this workflow's tiling of the same slide, and only when the patch counts agree. The
exported pt is what MCAT, CMTA and DeReF-style loaders read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workflow.features import features_file as ff
from workflow.features.extract import FeatureError
from workflow.io import atomic_path
from workflow.tiling.coords import read_coords


def import_clam(
    slide_id: str,
    clam_file: str | os.PathLike[str],
    coords_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    encoder: str,
) -> dict[str, Any]:
    """Convert one slide's CLAM features into this workflow's features file."""
    clam_file = Path(clam_file)
    tiles = read_coords(coords_path)
    if clam_file.suffix == ".h5":
        features, coords, _ = ff.read_features(clam_file)
    elif clam_file.suffix == ".pt":
        features = torch.load(clam_file, map_location="cpu", weights_only=True).numpy()
        if len(features) != len(tiles.xy):
            raise FeatureError(
                f"slide {slide_id}: {clam_file} has {len(features)} patches but this workflow's tiling has {len(tiles.xy)}; "
                "a .pt file has no coordinates, so use CLAM's h5_files/ instead, or tile with tiling: clam_compatible: true"
            )
        coords = tiles.xy
    else:
        raise FeatureError(f"slide {slide_id}: {clam_file} is neither a CLAM .h5 nor a .pt features file")
    if features.ndim != 2 or len(features) != len(coords):
        raise FeatureError(
            f"slide {slide_id}: {clam_file} holds features of shape {features.shape} for {len(coords)} coordinates"
        )
    attrs = {
        ff.SLIDE_ID: slide_id,
        ff.ENCODER: encoder,
        ff.WEIGHTS_SOURCE: f"imported from CLAM: {clam_file.resolve()}",
        ff.WEIGHTS_SHA256: "",
        "dtype": str(features.dtype),
        ff.STATUS: "ok",
        ff.REASON: "",
        ff.N_PATCHES: len(features),
        ff.N_FAILED: 0,
    }
    ff.write_features(out_path, features, coords, tiles.attrs, attrs)
    return attrs


def write_clam_pt(features_path: str | os.PathLike[str], pt_path: str | os.PathLike[str]) -> None:
    """CLAM's ``pt_files/<slide>.pt``: the features alone, as a float32 N x D tensor."""
    features = ff.read_features(features_path).features
    # Written through a handle: torch.save names the archive inside after a path it is given,
    # and the temporary path holds the process ID, so the same features gave different bytes.
    with atomic_path(pt_path) as tmp, open(tmp, "wb") as handle:
        torch.save(torch.from_numpy(features.astype(np.float32)), handle)
