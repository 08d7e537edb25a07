"""Patch grid at a physical resolution, and CLAM's keep rules.

Which pyramid level and read size give 256 px at 0.5 µm/px is decided from the slide's resolution,
never from a level index: a level within the tolerance of the target is read at the patch size;
otherwise the nearest finer level is read over a proportionally larger region, resized at feature
time (a 40x scan with levels 1, 4, 16 reads 512 px at level 0).

CLAM knows no microns: its users patch level 0 at the size that gives 20x (512 px on a 40x scan,
resized at feature time), so ``clam_compatible`` tiling reads level 0 even where a 20x level exists.

The default grid is one global grid anchored at the slide origin, so a patch is listed once even
where the bounding boxes of two tissue pieces overlap. ``clam`` grids reproduce CLAM's
create_patches_fp: one grid per contour from its bounding box, padding past the border allowed.
A contour with a single kept patch is kept, as CLAM does since August 2023 (it dropped them before).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from workflow.slides import SlideError
from workflow.tiling.segment import Tissue


@dataclass(frozen=True)
class PatchSpec:
    """How one patch is read: level, size at that level, and its footprint in level-0 pixels."""

    read_level: int
    read_size: int
    size_level0: int
    level_mpp: float
    patch_size: int

    @property
    def patch_mpp(self) -> float:
        """Effective resolution once the read region is resized to the patch size."""
        return self.level_mpp * self.read_size / self.patch_size


def choose_patch_spec(
    slide_mpp: float,
    downsamples: Sequence[float],
    target_mpp: float,
    patch_size: int,
    tolerance: float,
    slide_id: str,
    level0_only: bool = False,
) -> PatchSpec:
    """Pick the level and read size for ``patch_size`` px at ``target_mpp`` (± ``tolerance``).

    ``level0_only`` reads level 0 whatever the pyramid holds, as CLAM's recipe does.
    """
    level_mpps = [slide_mpp * d for d in (downsamples[:1] if level0_only else downsamples)]
    matching = [lv for lv, m in enumerate(level_mpps) if abs(m / target_mpp - 1) <= tolerance]
    if matching:
        level = min(matching, key=lambda lv: (abs(level_mpps[lv] / target_mpp - 1), lv))
        read_size = patch_size
    else:
        finer = [lv for lv, m in enumerate(level_mpps) if m < target_mpp]
        if not finer:
            raise SlideError(
                f"slide {slide_id}: its finest level is {level_mpps[0]:.3f} µm/px, coarser than the target "
                f"{target_mpp} µm/px (± {tolerance:.0%}); lower tiling: target_mpp or check its mpp"
            )
        level = max(finer, key=lambda lv: level_mpps[lv])
        factor = target_mpp / level_mpps[level]
        # An integer factor within tolerance (0.252 µm/px -> 2x) keeps CLAM's 512 px reads.
        if abs(factor / round(factor) - 1) <= tolerance:
            factor = round(factor)
        read_size = round(patch_size * factor)
    return PatchSpec(level, read_size, round(read_size * downsamples[level]), level_mpps[level], patch_size)


def _inside(contour: np.ndarray, point: tuple[float, float]) -> float:
    return cv2.pointPolygonTest(contour, point, False)


def keeps(x: int, y: int, size0: int, contour: np.ndarray, holes: Sequence[np.ndarray], rule: str) -> bool:
    """CLAM's test of one candidate against one contour.

    four_pt: any of the points centre ± size0/4 lies in or on the contour; four_pt_hard: all do;
    center: the centre does. In every case the exact centre must not lie strictly inside a hole.
    """
    half = size0 // 2
    cx, cy = x + half, y + half
    shift = int(half * 0.5)
    if rule == "center" or shift == 0:
        ok = _inside(contour, (cx, cy)) >= 0
    else:
        points = [
            (cx - shift, cy - shift),
            (cx + shift, cy + shift),
            (cx + shift, cy - shift),
            (cx - shift, cy + shift),
        ]
        inside = (_inside(contour, (float(px), float(py))) >= 0 for px, py in points)
        ok = all(inside) if rule == "four_pt_hard" else any(inside)
    if not ok:
        return False
    centre = (x + size0 / 2, y + size0 / 2)
    return not any(_inside(hole, centre) > 0 for hole in holes)


def global_grid(tissue: Tissue, size0: int, dimensions: tuple[int, int], rule: str) -> np.ndarray:
    """(N, 2) int64 top-left corners on one grid from the origin, row by row; whole patches inside the slide only."""
    last_x, last_y = dimensions[0] - size0, dimensions[1] - size0
    kept: set[tuple[int, int]] = set()
    for contour, holes in zip(tissue.contours, tissue.holes, strict=True):
        bx, by, bw, bh = cv2.boundingRect(contour)
        # Grid positions whose patch overlaps the contour's bounding box.
        xs = range(max(0, (bx - size0) // size0 + 1) * size0, min(bx + bw - 1, last_x) + 1, size0)
        ys = range(max(0, (by - size0) // size0 + 1) * size0, min(by + bh - 1, last_y) + 1, size0)
        kept.update((x, y) for y in ys for x in xs if (x, y) not in kept and keeps(x, y, size0, contour, holes, rule))
    return np.asarray(sorted(kept, key=lambda p: (p[1], p[0])), dtype=np.int64).reshape(-1, 2)


def clam_grid(tissue: Tissue, read_size: int, level_downsample: tuple[float, float], rule: str) -> np.ndarray:
    """CLAM create_patches_fp coordinates (use_padding=True, step = patch size), contour by contour."""
    step = (read_size * int(level_downsample[0]), read_size * int(level_downsample[1]))
    size0 = step[0]
    kept = []
    for contour, holes in zip(tissue.contours, tissue.holes, strict=True):
        x0, y0, w, h = cv2.boundingRect(contour)
        xs, ys = np.arange(x0, x0 + w, step[0]), np.arange(y0, y0 + h, step[1])
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        candidates = np.stack([gx.ravel(), gy.ravel()], axis=1)
        kept.extend(c for c in candidates if keeps(int(c[0]), int(c[1]), size0, contour, holes, rule))
    return np.asarray(kept, dtype=np.int64).reshape(-1, 2)
