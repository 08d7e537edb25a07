"""Slide pixels for figures: a whole-slide thumbnail with an exact level-0 scale, and patches as the encoder saw them.

Figures place patch scores on the thumbnail by level-0 coordinates, so the thumbnail's scale must
be exact, not the approximate one of ``OpenSlide.get_thumbnail``. Memory stays bounded whatever the
slide size: the pyramid level just finer than the thumbnail is read in chunks, each shrunk as it is read.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import openslide

from workflow.slides import SlideError, open_slide
from workflow.tiling.coords import PatchGeometry

_CHUNK = 4096


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking (no aliasing), cubic when enlarging."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    shrinking = size[0] < rgb.shape[1] or size[1] < rgb.shape[0]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _read_level(slide: openslide.OpenSlide, level: int, shrink: int) -> np.ndarray:
    """The whole level as RGB, shrunk by an integer factor chunk by chunk."""
    w, h = slide.level_dimensions[level]
    ds = slide.level_downsamples[level]
    chunk = max(shrink, _CHUNK // shrink * shrink)
    out = np.empty((math.ceil(h / shrink), math.ceil(w / shrink), 3), np.uint8)
    for y in range(0, h, chunk):
        for x in range(0, w, chunk):
            cw, ch = min(chunk, w - x), min(chunk, h - y)
            part = np.asarray(slide.read_region((round(x * ds), round(y * ds)), level, (cw, ch)))[..., :3]
            part = _resize(part, (math.ceil(cw / shrink), math.ceil(ch / shrink)))
            out[y // shrink : y // shrink + part.shape[0], x // shrink : x // shrink + part.shape[1]] = part
    return out


def read_thumbnail(path: str | os.PathLike[str], slide_id: str, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """The whole slide as an RGB array with its longer side at most ``max_side``, and its scale.

    ``scale`` is thumbnail pixels per level-0 pixel. It is exact along the slide's longer side; the
    shorter side is rounded to whole pixels, so there a level-0 position maps to within half a
    thumbnail pixel of ``position * scale``.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, not {max_side}")
    with open_slide(path, slide_id) as slide:
        w0, h0 = slide.dimensions
        scale = min(1.0, max_side / max(w0, h0))
        size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
        level = slide.get_best_level_for_downsample(1 / scale)
        shrink = max(1, math.floor(1 / (scale * slide.level_downsamples[level])))
        try:
            rgb = _read_level(slide, level, shrink)
        except openslide.OpenSlideError as exc:
            raise SlideError(f"slide {slide_id} ({path}): level {level} cannot be read ({exc}); re-export it") from None
    return np.ascontiguousarray(_resize(rgb, size)), scale


def read_patch_images(
    path: str | os.PathLike[str], slide_id: str, xy: np.ndarray, geometry: PatchGeometry, out_size: int = 224
) -> list[np.ndarray]:
    """The patches at level-0 top-left ``xy`` as RGB, read as feature extraction reads them, ``out_size`` a side."""
    side = geometry.read_size
    images = []
    with open_slide(path, slide_id) as slide:
        for x, y in np.asarray(xy, np.int64).reshape(-1, 2):
            try:
                region = slide.read_region((int(x), int(y)), geometry.read_level, (side, side))
            except openslide.OpenSlideError as exc:
                raise SlideError(
                    f"slide {slide_id} ({path}): patch at level-0 ({x}, {y}) cannot be read ({exc}); re-export it"
                ) from None
            images.append(np.ascontiguousarray(_resize(np.asarray(region)[..., :3], (out_size, out_size))))
    return images
