"""Synthetic H&E-like tissue: known geometry in microns, rendered at any scan resolution.

The layout (tissue blobs, holes, debris, a pen stroke) lives in physical units so that the 20x and
40x scans of one layout cover the same tissue. The WSI view of the latent risk changes the
appearance measurably: nuclear density, nuclear size and hematoxylin darkness all rise with it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from workflow.demo import svs

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


def random_layout(rng: np.random.Generator, scale: float = 1.0) -> TissueLayout:
    """A main tissue piece with one or two holes, sometimes a small fragment, debris and a pen stroke.

    The demo canvas is 1.5 x 1.3 mm; ``scale`` enlarges every length (tissue, holes, canvas) alike.
    """
    layout = _unit_layout(rng)
    return TissueLayout(
        layout.width_um * scale,
        layout.height_um * scale,
        [b * scale for b in layout.blobs],
        [h * scale for h in layout.holes],
        [(x * scale, y * scale, r) for x, y, r in layout.debris],
        None if layout.pen is None else layout.pen * scale,
    )


def _unit_layout(rng: np.random.Generator, width_um: float = 1500.0, height_um: float = 1300.0) -> TissueLayout:
    rx, ry = rng.uniform(400, 470), rng.uniform(350, 410)
    cx = rng.uniform(0.42, 0.5) * width_um
    cy = rng.uniform(0.45, 0.55) * height_um
    blobs = [_wobbly_ellipse(rng, cx, cy, rx, ry)]
    holes = [
        _wobbly_ellipse(
            rng, cx + rng.uniform(-50, 50), cy + rng.uniform(-50, 50), rng.uniform(200, 240), rng.uniform(170, 200)
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


def tissue_mask(layout: TissueLayout, mpp: float, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Boolean truth mask (tissue minus holes) at ``mpp``, whole or for a window (x0, y0, w, h) in pixels."""
    x0, y0, w, h = window or (0, 0, round(layout.width_um / mpp), round(layout.height_um / mpp))
    mask = np.zeros((h, w), np.uint8)
    shift = np.array([x0, y0])
    cv2.fillPoly(mask, [_to_px(b, mpp) - shift for b in layout.blobs], 1)
    cv2.fillPoly(mask, [_to_px(hole, mpp) - shift for hole in layout.holes], 0)
    return mask.astype(bool)


def nuclear_density_per_mm2(view: float) -> float:
    """Nuclei per mm² of tissue for a given WSI view of the latent risk."""
    return 2500.0 * math.exp(0.45 * view)


@dataclass(frozen=True)
class Appearance:
    """Everything random about how a layout looks, fixed once so any window renders consistently."""

    nuclei_xy: np.ndarray  # (N, 2) µm, sorted by y (renderers work in horizontal strips)
    nuclei_radius: np.ndarray  # (N,) µm
    nuclei_rgb: np.ndarray  # (N, 3)
    texture: np.ndarray  # stroma texture lattice in [-1, 1], one value per TEXTURE_UM square
    seed: int
    coverage: float  # fraction of tissue area covered by nuclei
    mean_rgb: np.ndarray  # mean nuclear colour


TEXTURE_UM = 40.0
# Coarser than this (µm/px), nuclei are not drawn but mixed into the tissue colour by their coverage,
# as a scanner's downsampled levels show them.
DRAW_NUCLEI_MAX_MPP = 1.0
_REMAP_MAX = 16384


def appearance(layout: TissueLayout, view: float, rng: np.random.Generator) -> Appearance:
    """Draw nuclei (density, size and darkness rise with ``view``) and the stroma texture."""
    darkness = 1.0 / (1.0 + math.exp(-1.2 * view))
    colour = (1 - darkness) * _NUCLEUS_LOW_RISK + darkness * _NUCLEUS_HIGH_RISK
    n = rng.poisson(nuclear_density_per_mm2(view) * layout.width_um * layout.height_um / 1e6)
    xy = rng.uniform([0, 0], [layout.width_um, layout.height_um], size=(n, 2))
    radius = np.clip(rng.normal(3.0 + 0.5 * view, 0.5, size=n), 1.5, 6.0)
    rgb = np.clip(colour + rng.normal(0.0, 8.0, size=(n, 3)), 0, 255)
    order = np.argsort(xy[:, 1])
    lattice = rng.uniform(-1, 1, size=(int(layout.height_um / TEXTURE_UM) + 3, int(layout.width_um / TEXTURE_UM) + 3))
    coverage = min(1.0, nuclear_density_per_mm2(view) * math.pi * float(np.mean(radius**2)) / 1e6) if n else 0.0
    mean_rgb = rgb.mean(axis=0) if n else colour
    return Appearance(
        xy[order], radius[order], rgb[order], lattice.astype(np.float32), int(rng.integers(2**31)), coverage, mean_rgb
    )


def render_window(layout: TissueLayout, look: Appearance, mpp: float, window: tuple[int, int, int, int]) -> np.ndarray:
    """RGB uint8 pixels of the window (x0, y0, w, h), in pixels at ``mpp``; windows tile seamlessly."""
    x0, y0, w, h = window
    mask = tissue_mask(layout, mpp, window)
    img = np.full((h, w, 3), BACKGROUND, np.float32)
    if mask.any():
        # Bilinear lookup of the texture lattice at each pixel's physical position.
        gx = ((x0 + np.arange(w)) * mpp / TEXTURE_UM).astype(np.float32)
        gy = ((y0 + np.arange(h)) * mpp / TEXTURE_UM).astype(np.float32)
        texture = np.empty((h, w, 1), np.float32)
        for c in range(0, w, _REMAP_MAX):  # cv2.remap takes at most 32767 columns
            map_x, map_y = np.meshgrid(gx[c : c + _REMAP_MAX], gy)
            texture[:, c : c + _REMAP_MAX, 0] = cv2.remap(look.texture, map_x, map_y, cv2.INTER_LINEAR)
        stroma = _STROMA_RGB + 14.0 * texture
        if mpp > DRAW_NUCLEI_MAX_MPP:
            stroma = (1 - look.coverage) * stroma + look.coverage * look.mean_rgb
        img[mask] = stroma[mask]
    noise = np.random.default_rng([look.seed, x0, y0, round(mpp * 1e4)])
    img += noise.normal(0.0, 3.0, size=(h, w, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)

    margin = 8.0  # µm: nuclei just outside the window still paint its edge
    lo, hi = np.searchsorted(look.nuclei_xy[:, 1], [y0 * mpp - margin, (y0 + h) * mpp + margin])
    if mpp > DRAW_NUCLEI_MAX_MPP:
        hi = lo
    for (x, y), r, rgb in zip(look.nuclei_xy[lo:hi], look.nuclei_radius[lo:hi], look.nuclei_rgb[lo:hi], strict=True):
        px, py = round(x / mpp) - x0, round(y / mpp) - y0
        if -margin / mpp <= px < w + margin / mpp and _in_tissue(layout, x, y):
            cv2.circle(img, (px, py), max(1, round(r / mpp)), tuple(float(c) for c in rgb), -1, cv2.LINE_AA)

    for x, y, r in layout.debris:
        cv2.circle(
            img, (round(x / mpp) - x0, round(y / mpp) - y0), max(1, round(r / mpp)), (70, 55, 60), -1, cv2.LINE_AA
        )
    if layout.pen is not None:
        cv2.polylines(
            img, [_to_px(layout.pen, mpp) - np.array([x0, y0])], False, _PEN_RGB, max(1, round(25 / mpp)), cv2.LINE_AA
        )
    return img


def _in_tissue(layout: TissueLayout, x: float, y: float) -> bool:
    """Whether a point (µm) lies in a tissue blob and outside every hole."""
    point = (float(x), float(y))
    in_blob = any(cv2.pointPolygonTest(b.astype(np.float32), point, False) >= 0 for b in layout.blobs)
    return in_blob and not any(cv2.pointPolygonTest(hole.astype(np.float32), point, False) > 0 for hole in layout.holes)


def render(layout: TissueLayout, mpp: float, view: float, rng: np.random.Generator) -> np.ndarray:
    """The whole layout at ``mpp`` microns per pixel (RGB uint8)."""
    size = (0, 0, round(layout.width_um / mpp), round(layout.height_um / mpp))
    return render_window(layout, appearance(layout, view, rng), mpp, size)


def write_slide(
    path: str | os.PathLike[str],
    layout: TissueLayout,
    look: Appearance,
    mpp: float,
    app_mag: float,
    downsamples: tuple[int, ...] = svs.TCGA_DOWNSAMPLES,
) -> None:
    """Write the layout as an Aperio SVS, each pyramid level rendered at its own resolution, band by band."""
    size = (round(layout.width_um / mpp), round(layout.height_um / mpp))

    def render(ds: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return render_window(layout, look, mpp * ds, (x, y, w, h))

    svs.write_aperio_svs_tiles(path, size, render, mpp, app_mag, downsamples)
