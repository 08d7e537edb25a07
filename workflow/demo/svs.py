"""Aperio-style SVS writer: a tiled JPEG pyramid that OpenSlide opens as vendor ``aperio``.

OpenSlide recognises an Aperio file by the first page's ImageDescription, which starts with
``Aperio Image Library`` and carries ``|``-separated key = value pairs; ``AppMag`` and ``MPP`` become
``openslide.objective-power`` and ``openslide.mpp-x/y``. Every further tiled page is a pyramid level.

Pixels come from a strip renderer, one band of tile rows at a time, so a slide of any size is
written with memory for one band only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import tifffile

from workflow.io import atomic_path

TCGA_DOWNSAMPLES = (1, 4, 16)
# (downsample, x, y, width, height) in pixels of that level -> (height, width, 3) uint8 RGB
StripRenderer = Callable[[int, int, int, int, int], np.ndarray]


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


def _tiles(render: StripRenderer, downsample: int, width: int, height: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles of one level in row-major order, edge tiles padded to full size."""
    for y in range(0, height, tile):
        rows = min(tile, height - y)
        strip = np.full((tile, -(-width // tile) * tile, 3), 255, np.uint8)
        strip[:rows, :width] = render(downsample, 0, y, width, rows)
        for x in range(0, width, tile):
            yield strip[:, x : x + tile]


def write_aperio_svs_tiles(
    path: str | os.PathLike[str],
    size: tuple[int, int],
    render: StripRenderer,
    mpp: float,
    app_mag: float,
    downsamples: tuple[int, ...] = TCGA_DOWNSAMPLES,
    tile: int = 256,
    quality: int = 85,
) -> None:
    """Write a (width, height) level-0 slide and its downsampled levels from ``render``, atomically."""
    if downsamples[0] != 1:
        raise ValueError("the first pyramid level must have downsample 1")
    width, height = size
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=width * height * 3 > 2**31) as tif:
        for ds in downsamples:
            w, h = max(1, width // ds), max(1, height // ds)
            tif.write(
                _tiles(render, ds, w, h, tile),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": quality},
                photometric="rgb",
                description=aperio_description(width, height, tile, quality, app_mag, mpp, None if ds == 1 else (w, h)),
                metadata=None,
            )


def write_aperio_svs(
    path: str | os.PathLike[str],
    level0: np.ndarray,
    mpp: float,
    app_mag: float,
    downsamples: tuple[int, ...] = TCGA_DOWNSAMPLES,
) -> None:
    """Write an in-memory (H, W, 3) uint8 image as an SVS; lower levels by area averaging."""
    if level0.ndim != 3 or level0.shape[2] != 3 or level0.dtype != np.uint8:
        raise ValueError("level0 must be an (H, W, 3) uint8 RGB array")
    height, width = level0.shape[:2]
    levels: dict[int, np.ndarray] = {1: level0}

    def render(ds: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if ds not in levels:
            levels[ds] = cv2.resize(level0, (max(1, width // ds), max(1, height // ds)), interpolation=cv2.INTER_AREA)
        return levels[ds][y : y + h, x : x + w]

    write_aperio_svs_tiles(path, (width, height), render, mpp, app_mag, downsamples)
