"""What a user looks at before extracting features: mask and grid pictures, QuPath contours."""

from __future__ import annotations

import json
import os
import textwrap

import cv2
import numpy as np
import openslide

from workflow.io import atomic_path
from workflow.tiling.segment import SegImage, Tissue, read_seg_image

TISSUE_RGB = (0, 255, 0)
HOLE_RGB = (0, 0, 255)
PATCH_RGB = (20, 20, 20)
MAX_SIDE = 2000


def read_picture_image(slide: openslide.OpenSlide) -> SegImage:
    """The whole slide at the finest resolution that keeps the picture within MAX_SIDE pixels a side."""
    return read_seg_image(slide, max(slide.dimensions) / MAX_SIDE, MAX_SIDE * MAX_SIDE)


def _thumbnail(image: SegImage) -> tuple[np.ndarray, float]:
    """A copy of the image shrunk to at most MAX_SIDE pixels, and its scale from level 0."""
    rgb = image.rgb
    shrink = max(1.0, max(rgb.shape[:2]) / MAX_SIDE)
    if shrink > 1:
        rgb = cv2.resize(
            rgb, (round(rgb.shape[1] / shrink), round(rgb.shape[0] / shrink)), interpolation=cv2.INTER_AREA
        )
    return np.array(rgb), 1.0 / (image.downsample[0] * shrink)


def _scaled(contours: list[np.ndarray], scale: float) -> list[np.ndarray]:
    return [np.round(c * scale).astype(np.int32) for c in contours]


def _write_jpeg(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"could not write {path}")


def mask_picture(image: SegImage, tissue: Tissue, path: str | os.PathLike[str]) -> None:
    """Thumbnail with tissue contours in green and holes in blue (CLAM's colours)."""
    rgb, scale = _thumbnail(image)
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    cv2.drawContours(rgb, _scaled(tissue.contours, scale), -1, TISSUE_RGB, thickness)
    cv2.drawContours(rgb, _scaled([h for hs in tissue.holes for h in hs], scale), -1, HOLE_RGB, thickness)
    _write_jpeg(path, rgb)


def grid_picture(image: SegImage, coords: np.ndarray, size0: int, path: str | os.PathLike[str]) -> None:
    """Thumbnail with every kept patch outlined."""
    rgb, scale = _thumbnail(image)
    for x, y in coords:
        top_left = (round(x * scale), round(y * scale))
        bottom_right = (round((x + size0) * scale) - 1, round((y + size0) * scale) - 1)
        cv2.rectangle(rgb, top_left, bottom_right, PATCH_RGB, 1)
    _write_jpeg(path, rgb)


def message_picture(text: str, path: str | os.PathLike[str]) -> None:
    """A plain picture saying why a slide has no mask or grid (excluded slides)."""
    lines = textwrap.wrap(text, 70)[:12]
    rgb = np.full((40 + 28 * len(lines), 900, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(rgb, line, (12, 34 + 28 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (160, 0, 0), 1, cv2.LINE_AA)
    _write_jpeg(path, rgb)


def contours_geojson(tissue: Tissue, path: str | os.PathLike[str]) -> None:
    """Tissue as GeoJSON polygons (holes as inner rings) in level-0 pixels, which QuPath imports."""
    features = []
    for contour, holes in zip(tissue.contours, tissue.holes, strict=True):
        rings = [contour, *holes]
        coordinates = [[*c.reshape(-1, 2).tolist(), c.reshape(-1, 2)[0].tolist()] for c in rings]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": coordinates},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tissue", "color": list(TISSUE_RGB)},
                },
            }
        )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
