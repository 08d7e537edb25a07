"""Aperio-style SVS writer: a tiled JPEG pyramid that OpenSlide opens as vendor ``aperio``.

OpenSlide recognises an Aperio file by the first page's ImageDescription, which starts with
``Aperio Image Library`` and carries ``|``-separated key = value pairs; ``AppMag`` and ``MPP`` become
``openslide.objective-power`` and ``openslide.mpp-x/y``. Every further tiled page is a pyramid level.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import tifffile

from workflow.io import atomic_path

TCGA_DOWNSAMPLES = (1, 4, 16)


def aperio_description(
    width: int,
    height: int,
    tile: int,
    quality: int,
    app_mag: float,
    mpp: float,
    level_size: tuple[int, int] | None = None,
) -> str:
    """ImageDescription of one page; pyramid levels add ``-> w x h`` after the level-0 geometry."""
    head = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
    if level_size is not None:
        head += f" -> {level_size[0]}x{level_size[1]}"
    return f"{head} JPEG/RGB Q={quality}|AppMag = {app_mag:g}|MPP = {mpp:g}"


def write_aperio_svs(
    path: str | os.PathLike[str],
    level0: np.ndarray,
    mpp: float,
    app_mag: float,
    downsamples: tuple[int, ...] = TCGA_DOWNSAMPLES,
    tile: int = 256,
    quality: int = 85,
) -> None:
    """Write ``level0`` (H, W, 3 uint8) and its downsampled levels as an SVS, atomically."""
    if level0.ndim != 3 or level0.shape[2] != 3 or level0.dtype != np.uint8:
        raise ValueError("level0 must be an (H, W, 3) uint8 RGB array")
    if downsamples[0] != 1:
        raise ValueError("the first pyramid level must have downsample 1")
    height, width = level0.shape[:2]
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        for ds in downsamples:
            if ds == 1:
                level, size = level0, None
            else:
                size = (max(1, width // ds), max(1, height // ds))
                level = cv2.resize(level0, size, interpolation=cv2.INTER_AREA)
            tif.write(
                level,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": quality},
                photometric="rgb",
                description=aperio_description(width, height, tile, quality, app_mag, mpp, size),
                metadata=None,
            )
