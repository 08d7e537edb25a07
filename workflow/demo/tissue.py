"""Synthetic H&E-like tissue: known geometry in microns, rendered at any scan resolution.

The layout (tissue blobs, holes, debris, a pen stroke) lives in physical units so that the 20x and
40x scans of one layout cover the same tissue. The WSI view of the latent risk changes the
appearance measurably: nuclear density, nuclear size and hematoxylin darkness all rise with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

BACKGROUND = 242
_STROMA_RGB = np.array([232.0, 160.0, 196.0])
_NUCLEUS_LOW_RISK = np.array([135.0, 85.0, 170.0])
_NUCLEUS_HIGH_RISK = np.array([60.0, 30.0, 115.0])
_PEN_RGB = (40, 140, 90)


@dataclass(frozen=True)
class TissueLayout:
    """Geometry of one synthetic section; polygons are (K, 2) arrays of (x, y) in microns."""

    width_um: float
    height_um: float
    blobs: list[np.ndarray]
    holes: list[np.ndarray]
    debris: list[tuple[float, float, float]] = field(default_factory=list)  # x, y, radius
    pen: np.ndarray | None = None  # polyline

    def tissue_area_mm2(self) -> float:
        """Area of tissue minus holes (holes lie inside blobs by construction)."""
        area = sum(_polygon_area(b) for b in self.blobs) - sum(_polygon_area(h) for h in self.holes)
        return area / 1e6


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _wobbly_ellipse(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    theta = np.linspace(0.0, 2 * math.pi, 120, endpoint=False)
    radius = np.ones_like(theta)
    for k in (2, 3, 5):
        radius += rng.uniform(0.0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    angle = rng.uniform(0, math.pi)
    x, y = rx * radius * np.cos(theta), ry * radius * np.sin(theta)
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def random_layout(rng: np.random.Generator, width_um: float = 1500.0, height_um: float = 1200.0) -> TissueLayout:
    """A main tissue piece with one or two holes, sometimes a small fragment, debris and a pen stroke."""
    rx, ry = rng.uniform(360, 430), rng.uniform(320, 380)
    cx = rng.uniform(0.42, 0.5) * width_um
    cy = rng.uniform(0.45, 0.55) * height_um
    blobs = [_wobbly_ellipse(rng, cx, cy, rx, ry)]
    holes = [
        _wobbly_ellipse(
            rng, cx + rng.uniform(-60, 60), cy + rng.uniform(-60, 60), rng.uniform(150, 190), rng.uniform(120, 160)
        )
    ]
    if rng.uniform() < 0.5:
        holes.append(_wobbly_ellipse(rng, cx - 0.55 * rx, cy + 0.45 * ry, 60, 45))
    if rng.uniform() < 0.5:
        blobs.append(_wobbly_ellipse(rng, 0.86 * width_um, rng.uniform(0.2, 0.4) * height_um, 130, 100))
    debris = [
        (rng.uniform(0.05, 0.95) * width_um, rng.uniform(0.88, 0.97) * height_um, rng.uniform(4, 12))
        for _ in range(int(rng.integers(3, 7)))
    ]
    x0 = rng.uniform(0.1, 0.3) * width_um
    pen = np.array(
        [[x0, 0.04 * height_um], [x0 + 0.25 * width_um, 0.07 * height_um], [x0 + 0.45 * width_um, 0.05 * height_um]]
    )
    return TissueLayout(width_um, height_um, blobs, holes, debris, pen)


def _to_px(poly: np.ndarray, mpp: float) -> np.ndarray:
    return np.round(poly / mpp).astype(np.int32)


def tissue_mask(layout: TissueLayout, mpp: float) -> np.ndarray:
    """Boolean truth mask (tissue minus holes) at the given resolution."""
    h, w = round(layout.height_um / mpp), round(layout.width_um / mpp)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [_to_px(b, mpp) for b in layout.blobs], 1)
    cv2.fillPoly(mask, [_to_px(hole, mpp) for hole in layout.holes], 0)
    return mask.astype(bool)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: int) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: coarse noise upsampled bilinearly."""
    coarse = rng.uniform(-1, 1, size=(max(2, shape[0] // cell_px + 2), max(2, shape[1] // cell_px + 2))).astype(
        np.float32
    )
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def nuclear_density_per_mm2(view: float) -> float:
    """Nuclei per mm² of tissue for a given WSI view of the latent risk."""
    return 2500.0 * math.exp(0.45 * view)


def render(layout: TissueLayout, mpp: float, view: float, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 image of the layout at ``mpp`` microns per pixel."""
    mask = tissue_mask(layout, mpp)
    h, w = mask.shape
    img = np.full((h, w, 3), BACKGROUND, np.float32)
    texture = _smooth_noise(rng, (h, w), max(4, round(40 / mpp)))[..., None]
    stroma = _STROMA_RGB + 14.0 * texture
    img[mask] = stroma[mask]
    img += rng.normal(0.0, 3.0, size=(h, w, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)

    darkness = 1.0 / (1.0 + math.exp(-1.2 * view))
    colour = (1 - darkness) * _NUCLEUS_LOW_RISK + darkness * _NUCLEUS_HIGH_RISK
    n_candidates = int(nuclear_density_per_mm2(view) * layout.width_um * layout.height_um / 1e6)
    xy = rng.uniform([0, 0], [layout.width_um, layout.height_um], size=(n_candidates, 2))
    radius_um = np.clip(rng.normal(3.0 + 0.5 * view, 0.5, size=n_candidates), 1.5, 6.0)
    for (x, y), r in zip(xy, radius_um, strict=True):
        px, py = int(x / mpp), int(y / mpp)
        if mask[min(py, h - 1), min(px, w - 1)]:
            jitter = rng.normal(0.0, 8.0, size=3)
            rgb = tuple(float(c) for c in np.clip(colour + jitter, 0, 255))
            cv2.circle(img, (px, py), max(1, round(r / mpp)), rgb, -1, cv2.LINE_AA)

    for x, y, r in layout.debris:
        cv2.circle(img, (int(x / mpp), int(y / mpp)), max(1, round(r / mpp)), (70, 55, 60), -1, cv2.LINE_AA)
    if layout.pen is not None:
        cv2.polylines(img, [_to_px(layout.pen, mpp)], False, _PEN_RGB, max(1, round(25 / mpp)), cv2.LINE_AA)
    return img
