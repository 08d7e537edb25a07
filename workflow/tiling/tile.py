"""Tile one slide end to end: resolution, segmentation, grid, optional pixel filter, outputs.

Outputs (each written to a temporary name and renamed): the coordinates HDF5 with CLAM's
attributes plus explicit ones so no downstream tool guesses, the contours as GeoJSON, and the
mask and grid pictures. A slide that cannot be tiled either stops the run (``on_error: fail``) or
is written as excluded, with the reason in the HDF5 attributes and the pictures, so that later
stages skip it with a warning (``on_error: exclude``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import openslide

from workflow.slides import SlideError, open_slide, resolve_mpp
from workflow.tiling import qc
from workflow.tiling.coords import PATCH_SIZE_LEVEL0, PatchGeometry, excluded_attrs, geometry_attrs, write_coords
from workflow.tiling.grid import PatchSpec, choose_patch_spec, clam_grid, global_grid
from workflow.tiling.params import TilingParams
from workflow.tiling.segment import Tissue, estimated_downsample, read_seg_image, segment

log = logging.getLogger(__name__)
ON_ERROR = ("fail", "exclude")


@dataclass(frozen=True)
class TileOutputs:
    """Paths of one slide's tiling outputs."""

    coords: str
    contours: str
    mask: str
    grid: str


def pixel_filter(slide: openslide.OpenSlide, coords: np.ndarray, spec: PatchSpec, params: TilingParams) -> np.ndarray:
    """Keep patches whose white (low saturation) and black (dark) pixel fractions are within limits."""
    keep = np.ones(len(coords), bool)
    for i, (x, y) in enumerate(coords):
        rgb = np.asarray(
            slide.read_region((int(x), int(y)), spec.read_level, (spec.read_size, spec.read_size)).convert("RGB")
        )
        white = (cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1] < params.white_saturation).mean()
        black = (rgb.max(axis=2) < params.black_value).mean()
        keep[i] = white <= params.max_white_fraction and black <= params.max_black_fraction
    return coords[keep]


def tile_slide(
    slide_id: str,
    path: str | os.PathLike[str],
    params: TilingParams,
    outputs: TileOutputs,
    mpp_override: float | None = None,
    mpp_from_objective_power: bool = False,
    on_error: str = "fail",
) -> dict[str, Any]:
    """Tile one slide and write its outputs; return the attributes stored with the coordinates."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}")
    start = time.perf_counter()
    try:
        with open_slide(path, slide_id) as slide:
            attrs, coords, tissue = _tile_open_slide(slide, slide_id, params, mpp_override, mpp_from_objective_power)
            picture = qc.read_picture_image(slide)
    except (SlideError, openslide.OpenSlideError) as exc:
        if on_error == "fail":
            raise
        log.warning("slide %s excluded: %s", slide_id, exc)
        attrs = excluded_attrs(slide_id, str(exc)) | {"seconds": round(time.perf_counter() - start, 3)}
        write_coords(outputs.coords, np.empty((0, 2), np.int64), attrs)
        qc.contours_geojson(Tissue(), outputs.contours)
        qc.message_picture(f"{slide_id} excluded: {exc}", outputs.mask)
        qc.message_picture(f"{slide_id} excluded: {exc}", outputs.grid)
        return attrs
    attrs["seconds"] = round(time.perf_counter() - start, 3)
    qc.contours_geojson(tissue, outputs.contours)
    qc.mask_picture(picture, tissue, outputs.mask)
    qc.grid_picture(picture, coords, attrs[PATCH_SIZE_LEVEL0], outputs.grid)
    write_coords(outputs.coords, coords, attrs)
    log.info(
        "slide %s: %d patches from %d contours in %.2f s", slide_id, len(coords), attrs["n_contours"], attrs["seconds"]
    )
    return attrs


def _tile_open_slide(
    slide: openslide.OpenSlide,
    slide_id: str,
    params: TilingParams,
    mpp_override: float | None,
    mpp_from_objective_power: bool,
) -> tuple[dict[str, Any], np.ndarray, Tissue]:
    props = dict(slide.properties)
    resolution = resolve_mpp(props, slide_id, mpp_override, mpp_from_objective_power)
    spec = choose_patch_spec(
        resolution.mpp,
        slide.level_downsamples,
        params.target_mpp,
        params.patch_size,
        params.mpp_tolerance,
        slide_id,
        level0_only=params.clam_compatible,
    )
    image = read_seg_image(slide, params.seg_downsample, params.max_seg_pixels)
    tissue = segment(image, params.seg, params.area_unit, resolution.mpp)
    read_downsample = estimated_downsample(slide, spec.read_level)
    if params.grid == "global":
        coords = global_grid(tissue, spec.size_level0, slide.dimensions, params.keep)
    else:
        coords = clam_grid(tissue, spec.read_size, read_downsample, params.keep)
    n_grid = len(coords)
    if params.pixel_filter and n_grid:
        coords = pixel_filter(slide, coords, spec, params)
    if not len(coords):
        raise SlideError(
            f"slide {slide_id}: no tissue found (0 patches from {len(tissue.contours)} tissue contours). "
            "Look at its mask picture; for small biopsies try tiling: preset: bwh_biopsy or a lower seg: a_t / sthresh"
        )
    geometry = PatchGeometry(spec.read_level, spec.read_size, spec.size_level0, read_downsample)
    attrs = geometry_attrs(geometry, slide.level_dimensions[spec.read_level], slide_id, params.clam_compatible) | {
        "target_patch_size": params.patch_size,
        "target_mpp": params.target_mpp,
        "patch_mpp": round(spec.patch_mpp, 6),
        "slide_mpp": resolution.mpp,
        "mpp_source": resolution.source,
        "objective_power": float(props.get("openslide.objective-power") or 0) or None,
        "level0_dim": np.asarray(slide.dimensions, np.int64),
        "grid": params.grid,
        "keep": params.keep,
        "seg_level": image.level,
        "seg_downsample": np.asarray(image.downsample),
        "area_unit": params.area_unit,
        "n_contours": len(tissue.contours),
        "n_holes": sum(len(h) for h in tissue.holes),
        "tissue_mm2": round(tissue.area_px0() * resolution.mpp**2 / 1e6, 6),
        "pixel_filter": params.pixel_filter,
        "pixel_filter_dropped": n_grid - len(coords),
        **{f"seg_{k}": v for k, v in asdict(params.seg).items()},
    }
    return attrs, coords, tissue
