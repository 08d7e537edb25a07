"""Demo liver MRI: five co-registered sequences per patient and a tumour mask, as NIfTI.

A body ellipsoid holds a liver ellipsoid, which holds one tumour. The MRI view of the latent risk
makes the tumour larger, more heterogeneous and shifts its contrast per sequence (for example
stronger arterial enhancement and deeper hepatobiliary hypo-intensity), so a 3D encoder has
something real to learn.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from workflow.demo.design import LIVER_SEQUENCES
from workflow.io import atomic_path

SHAPE = (64, 64, 32)
SPACING_MM = (1.5, 1.5, 3.0)
# Per sequence: (body, liver, tumour at view 0, tumour change per unit of view).
_CONTRAST = {
    "arterial": (300.0, 420.0, 560.0, 70.0),
    "delay": (300.0, 450.0, 380.0, -40.0),
    "hepatobiliary": (280.0, 620.0, 300.0, -60.0),
    "t1w": (320.0, 480.0, 360.0, -30.0),
    "t2w": (260.0, 300.0, 520.0, 50.0),
}


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(axis=0) <= 1.0


def affine() -> np.ndarray:
    """RAS affine of the demo grid: voxel spacing on the diagonal, centred on the origin."""
    a = np.diag([*SPACING_MM, 1.0])
    a[:3, 3] = -0.5 * np.asarray(SHAPE) * np.asarray(SPACING_MM)
    return a


def tumour_radius_mm(view: float) -> float:
    """Mean tumour radius for a given MRI view of the latent risk."""
    return 9.0 * float(np.exp(0.2 * view))


def render_patient(view: float, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Volumes per sequence (float32, in mm-space grid) and the uint8 tumour mask."""
    spacing = np.asarray(SPACING_MM)
    grid = np.indices(SHAPE).astype(np.float32) * spacing[:, None, None, None]
    extent = np.asarray(SHAPE) * spacing
    body = _ellipsoid(grid, extent / 2, extent * np.array([0.46, 0.4, 0.48]))
    liver_centre = extent * np.array([0.45, 0.5, 0.5])
    liver = _ellipsoid(grid, liver_centre, extent * np.array([0.3, 0.26, 0.4]))
    r = tumour_radius_mm(view)
    radii = r * rng.uniform(0.85, 1.15, size=3)
    offset = rng.uniform(-0.35, 0.35, size=3) * (extent * np.array([0.3, 0.26, 0.4]) - radii)
    mask = _ellipsoid(grid, liver_centre + offset, radii) & liver
    heterogeneity = 0.08 + 0.05 * max(view + 1.5, 0.0)
    volumes = {}
    for seq in LIVER_SEQUENCES:
        body_i, liver_i, tumour_i, slope = _CONTRAST[seq]
        vol = np.zeros(SHAPE, np.float32)
        vol[body] = body_i
        vol[liver] = liver_i
        tumour_level = tumour_i + slope * view
        vol[mask] = tumour_level * (1 + heterogeneity * rng.standard_normal(int(mask.sum())))
        vol += rng.normal(0, 12.0, size=SHAPE).astype(np.float32)
        volumes[seq] = np.abs(vol).astype(np.float32)
    return volumes, mask.astype(np.uint8)


def write_patient(view: float, rng: np.random.Generator, out_dir: str | os.PathLike[str]) -> None:
    """Write ``<sequence>.nii.gz`` for each sequence and ``tumour_mask.nii.gz``, atomically."""
    volumes, mask = render_patient(view, rng)
    out_dir = Path(out_dir)
    for name, data in [*volumes.items(), ("tumour_mask", mask)]:
        image = nib.Nifti1Image(data, affine())
        image.header.set_xyzt_units("mm")
        with atomic_path(out_dir / f"{name}.nii.gz") as tmp:
            nib.save(image, tmp)
