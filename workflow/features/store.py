"""Reading a slide's features file, kept free of torch and timm so training jobs start fast."""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np


def read_features(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features (N, D), coords (N, 2) and file attributes of a features file."""
    with h5py.File(path, "r") as h5:
        return h5["features"][:], h5["coords"][:], dict(h5.attrs)
