"""Tissue segmentation as CLAM does it, on a low-resolution image read within a pixel budget.

Steps (CLAM's): HSV saturation, median blur, fixed or Otsu threshold, square morphological close,
contours with holes (two-level hierarchy), area filters on tissue and holes, at most
``max_n_holes`` holes per piece, contours scaled to level-0 pixels by truncation.

Memory is bounded by ``max_seg_pixels`` whatever the slide size: the level nearest a 64x
downsample is used if it fits, else a coarser level that fits, else the coarsest level is read in
chunks and shrunk as it is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import openslide

from workflow.tiling.params import CLAM_REF_PATCH_PX, SegParams

_CHUNK = 2048


@dataclass
class SegImage:
    """An RGB image of the whole slide and its per-axis downsample relative to level 0."""

    rgb: np.ndarray
    level: int
    downsample: tuple[float, float]


@dataclass
class Tissue:
    """Tissue contours and, per contour, its holes; (K, 1, 2) int32 arrays in level-0 pixels."""

    contours: list[np.ndarray] = field(default_factory=list)
    holes: list[list[np.ndarray]] = field(default_factory=list)

    def area_px0(self) -> float:
        """Tissue area in level-0 pixels (contours minus their holes)."""
        total = sum(cv2.contourArea(c) for c in self.contours)
        return total - sum(cv2.contourArea(h) for hs in self.holes for h in hs)


def estimated_downsample(slide: openslide.OpenSlide, level: int) -> tuple[float, float]:
    """Per-axis downsample from the level dimensions (what CLAM uses; the reported one can be rounded)."""
    (w0, h0), (w, h) = slide.level_dimensions[0], slide.level_dimensions[level]
    return w0 / w, h0 / h


def choose_seg_level(slide: openslide.OpenSlide, target_downsample: float, max_pixels: int) -> tuple[int, int]:
    """(level, shrink factor): CLAM's best level for the target if it fits, else a coarser one, else chunked shrinking."""
    best = 0 if slide.level_count == 1 else slide.get_best_level_for_downsample(target_downsample)
    for level in range(best, slide.level_count):
        w, h = slide.level_dimensions[level]
        if w * h <= max_pixels:
            return level, 1
    level = slide.level_count - 1
    w, h = slide.level_dimensions[level]
    return level, math.ceil(math.sqrt(w * h / max_pixels))


def read_seg_image(
    slide: openslide.OpenSlide, target_downsample: float = 64.0, max_pixels: int = 40_000_000
) -> SegImage:
    """Read the whole slide at about ``target_downsample`` with at most ``max_pixels`` pixels in memory."""
    level, shrink = choose_seg_level(slide, target_downsample, max_pixels)
    w, h = slide.level_dimensions[level]
    if shrink == 1:
        # One read from the origin, as CLAM does: identical pixels, so identical contours.
        rgb = np.asarray(slide.read_region((0, 0), level, (w, h)))[..., :3]
        return SegImage(np.ascontiguousarray(rgb), level, estimated_downsample(slide, level))
    ds = slide.level_downsamples[level]
    chunk = _CHUNK // shrink * shrink
    out = np.empty((math.ceil(h / shrink), math.ceil(w / shrink), 3), np.uint8)
    for y in range(0, h, chunk):
        for x in range(0, w, chunk):
            cw, ch = min(chunk, w - x), min(chunk, h - y)
            part = np.asarray(slide.read_region((round(x * ds), round(y * ds)), level, (cw, ch)))[..., :3]
            small = cv2.resize(part, (math.ceil(cw / shrink), math.ceil(ch / shrink)), interpolation=cv2.INTER_AREA)
            out[y // shrink : y // shrink + small.shape[0], x // shrink : x // shrink + small.shape[1]] = small
    w0, h0 = slide.dimensions
    return SegImage(out, level, (w0 / out.shape[1], h0 / out.shape[0]))


def area_thresholds(
    seg: SegParams, area_unit: str, downsample: tuple[float, float], slide_mpp: float
) -> tuple[float, float]:
    """a_t and a_h in pixels of the segmentation image."""
    if area_unit == "clam":
        # CLAM: reference patches of 512² level-0 pixels, scaled with integer truncation.
        ref = int(CLAM_REF_PATCH_PX**2 / (downsample[0] * downsample[1]))
        return seg.a_t * ref, seg.a_h * ref
    px_mm2 = (slide_mpp * downsample[0]) * (slide_mpp * downsample[1]) / 1e6
    return seg.a_t / px_mm2, seg.a_h / px_mm2


def tissue_binary(rgb: np.ndarray, seg: SegParams) -> np.ndarray:
    """0/255 tissue mask from the saturation channel."""
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    blurred = cv2.medianBlur(saturation, seg.mthresh)
    if seg.use_otsu:
        _, binary = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        _, binary = cv2.threshold(blurred, seg.sthresh, 255, cv2.THRESH_BINARY)
    if seg.close > 0:
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((seg.close, seg.close), np.uint8))
    return binary


def segment(image: SegImage, seg: SegParams, area_unit: str, slide_mpp: float) -> Tissue:
    """Contours and holes in level-0 pixels, filtered by area as CLAM's _filter_contours does."""
    binary = tissue_binary(image.rgb, seg)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return Tissue()
    parent = hierarchy[0][:, 3]
    a_t, a_h = area_thresholds(seg, area_unit, image.downsample, slide_mpp)
    scale = np.asarray(image.downsample)
    tissue = Tissue()
    for index in np.flatnonzero(parent == -1):
        hole_ids = np.flatnonzero(parent == index)
        net = cv2.contourArea(contours[index]) - sum(cv2.contourArea(contours[i]) for i in hole_ids)
        if net == 0 or not net > a_t:
            continue
        holes = sorted((contours[i] for i in hole_ids), key=cv2.contourArea, reverse=True)[: seg.max_n_holes]
        kept = [h for h in holes if cv2.contourArea(h) > a_h]
        tissue.contours.append((contours[index] * scale).astype(np.int32))
        tissue.holes.append([(h * scale).astype(np.int32) for h in kept])
    return tissue
