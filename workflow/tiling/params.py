"""Tiling parameters: CLAM's segmentation presets and the settings of one tiling run.

CLAM counts its area thresholds ``a_t`` and ``a_h`` in reference patches of 512 x 512 level-0
pixels, so the same preset keeps 4x less tissue area on a 20x scan than on a 40x scan. The default
here is square millimetres: a preset is converted as CLAM behaves on a 40x scan (0.25 µm/px, one
reference patch = (128 µm)² = 0.016384 mm²), and then means the same tissue on every scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

CLAM_REF_PATCH_PX = 512
CLAM_REF_MPP = 0.25
CLAM_REF_PATCH_MM2 = (CLAM_REF_PATCH_PX * CLAM_REF_MPP / 1000.0) ** 2
AREA_UNITS = ("mm2", "clam")
KEEP_RULES = ("four_pt", "center", "four_pt_hard")
GRIDS = ("global", "clam")


@dataclass(frozen=True)
class SegParams:
    """CLAM's segmentation and contour-filter parameters (areas in ``area_unit``)."""

    sthresh: int = 8
    mthresh: int = 7
    close: int = 4
    use_otsu: bool = False
    a_t: float = 100.0
    a_h: float = 16.0
    max_n_holes: int = 8


# CLAM's presets (presets/*.csv) and its command-line defaults, areas in CLAM reference patches.
CLAM_PRESETS = {
    "clam_default": SegParams(),
    "tcga": SegParams(sthresh=8, mthresh=7, close=4, a_t=16, a_h=4, max_n_holes=8),
    "bwh_biopsy": SegParams(sthresh=15, mthresh=11, close=2, a_t=1, a_h=1, max_n_holes=2),
    "bwh_resection": SegParams(sthresh=15, mthresh=11, close=4, a_t=100, a_h=16, max_n_holes=8),
}


@dataclass(frozen=True)
class TilingParams:
    """Everything that decides a slide's patches; built from the ``tiling:`` config block."""

    seg: SegParams
    area_unit: str = "mm2"
    target_mpp: float = 0.5
    patch_size: int = 256
    mpp_tolerance: float = 0.1
    grid: str = "global"
    keep: str = "four_pt"
    clam_compatible: bool = False  # read level 0 as CLAM does (set with grid and area_unit by tiling_params)
    seg_downsample: float = 64.0
    max_seg_pixels: int = 40_000_000
    pixel_filter: bool = False
    max_white_fraction: float = 0.9
    max_black_fraction: float = 0.5
    white_saturation: int = 15
    black_value: int = 40

    def __post_init__(self) -> None:
        if self.area_unit not in AREA_UNITS:
            raise ValueError(f"tiling area_unit must be one of {AREA_UNITS}, not {self.area_unit!r}")
        if self.keep not in KEEP_RULES:
            raise ValueError(f"tiling keep must be one of {KEEP_RULES}, not {self.keep!r}")
        if self.grid not in GRIDS:
            raise ValueError(f"tiling grid must be one of {GRIDS}, not {self.grid!r}")
        if self.seg.mthresh % 2 != 1:
            raise ValueError("tiling seg mthresh (median blur kernel) must be odd")


def preset(name: str, area_unit: str) -> SegParams:
    """A CLAM preset with its areas expressed in ``area_unit``."""
    if name not in CLAM_PRESETS:
        raise ValueError(f"unknown tiling preset {name!r}; choose one of {sorted(CLAM_PRESETS)}")
    seg = CLAM_PRESETS[name]
    if area_unit == "mm2":
        seg = replace(seg, a_t=seg.a_t * CLAM_REF_PATCH_MM2, a_h=seg.a_h * CLAM_REF_PATCH_MM2)
    return seg


def tiling_params(cfg: Mapping[str, Any]) -> TilingParams:
    """Build TilingParams from a (schema-validated) ``tiling:`` block: preset, then overrides.

    ``clam_compatible: true`` switches to CLAM's per-contour grids, reference-patch area units and
    level-0 reads.
    """
    cfg = dict(cfg)
    seg_overrides = dict(cfg.pop("seg", None) or {})
    if cfg.get("clam_compatible"):
        cfg |= {"grid": "clam", "area_unit": "clam", "max_seg_pixels": 100_000_000}
    area_unit = cfg.get("area_unit", "mm2")
    seg = replace(preset(cfg.pop("preset", "tcga"), area_unit), **seg_overrides)
    known = {f.name for f in fields(TilingParams)}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown tiling settings: {sorted(unknown)}")
    return TilingParams(seg=seg, **cfg)
