"""MRI tumour ROI crops: every sequence resampled in one step onto a fixed grid around the tumour.

The output grid is the mask's tumour bounding box plus a margin in millimetres, in the mask's
orientation, sampled at ``roi_shape`` voxels (D, H, W = slices, rows, columns). Each sequence is
resampled onto it directly from its own grid with SimpleITK (linear; nearest for the mask), so
sequences with other spacings or fields of view are handled and nothing is interpolated twice.
Intensities are then normalised per sequence, by default z-scored over the tumour voxels. The
ROI files are written and read by ``workflow.roi_file``.
"""

from __future__ import annotations

import os
import textwrap
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.filebasedimages import ImageFileError

from workflow.io import RECOPY, atomic_path, not_data
from workflow.roi_file import PatientROI

NORMALISATIONS = ("zscore", "none", "percentile")


class MRIError(ValueError):
    """A problem with one patient's MRI, naming the patient and file and what to do."""


@dataclass(frozen=True)
class ROISettings:
    """The ``mri_roi:`` settings."""

    roi_shape: tuple[int, int, int] = (64, 64, 64)
    margin_mm: float = 10.0
    normalise: str = "zscore"
    missing_sequence: str = "error"  # or "zero": a zero channel, flagged as absent
    fov_tolerance_mm: float = 2.0


def roi_settings(cfg: Mapping[str, object]) -> ROISettings:
    """ROISettings from the validated ``mri_roi:`` config block."""
    values = dict(cfg)
    values["roi_shape"] = tuple(int(v) for v in values.get("roi_shape", ROISettings.roi_shape))
    return ROISettings(**values)


def _not_nifti(path: Path, exc: ImageFileError) -> str:
    """What a file nibabel cannot open is (a phrase after "is")."""
    if problem := not_data(path, "NIfTI image"):
        return problem
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if path.name.endswith(".gz") and not gzipped:
        return "not gzip-compressed although its name ends in .gz; rename it to end in .nii"
    return f"not a readable NIfTI image, or one cut short (nibabel: {exc}); {RECOPY}"


def _unreadable_voxels(path: Path, image: nib.spatialimages.SpatialImage, exc: Exception) -> str:
    """Why the voxels of an opened NIfTI file cannot be read (a phrase after "is")."""
    nbytes = int(np.prod(image.shape)) * image.get_data_dtype().itemsize
    cut = isinstance(exc, EOFError) or (
        not path.name.endswith(".gz") and path.stat().st_size < image.header.get_data_offset() + nbytes
    )
    if cut:
        return f"truncated: the file ends before the end of its image data ({nbytes:,} bytes); {RECOPY}"
    return f"damaged: its image data cannot be read ({type(exc).__name__}: {exc}); {RECOPY}"


def _stored_voxels(path: str, patient: str, what: str) -> np.ndarray:
    """Every voxel as stored, read with nibabel: SimpleITK reads a truncated file without a word, and turns NaN into 0."""
    try:
        image = nib.load(path)
    except ImageFileError as exc:
        raise MRIError(f"patient {patient}: {what} file {path} is {_not_nifti(Path(path), exc)}") from None
    try:
        return np.asanyarray(image.dataobj)
    except (EOFError, OSError, zlib.error) as exc:
        raise MRIError(
            f"patient {patient}: {what} file {path} is {_unreadable_voxels(Path(path), image, exc)}"
        ) from None


def _read(path: str, patient: str, what: str) -> sitk.Image:
    if not os.path.isfile(path):
        raise MRIError(f"patient {patient}: {what} file {path} not found")
    voxels = _stored_voxels(path, patient, what)
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise MRIError(f"patient {patient}: cannot read {what} {path}: {str(exc).strip().splitlines()[-1]}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MRIError(f"patient {patient}: {what} {path} is not a single-channel 3D volume")
    if not np.isfinite(voxels).all():
        raise MRIError(f"patient {patient}: {what} {path} has non-finite voxels (NaN or inf); fix or mask them")
    return image


def _fov_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Physical min/max corners of an image's field of view (voxel centres)."""
    size = np.asarray(image.GetSize())
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
        for corner in np.array(np.meshgrid(*[[0, s - 1] for s in size])).T.reshape(-1, 3)
    ]
    corners = np.asarray(corners)
    return corners.min(axis=0), corners.max(axis=0)


def roi_grid(
    mask: sitk.Image, roi_shape: tuple[int, int, int], margin_mm: float, patient: str, mask_path: str
) -> sitk.Image:
    """A reference image: the tumour's bounding box plus margin, in the mask's orientation, at roi_shape."""
    array = sitk.GetArrayViewFromImage(mask) > 0  # (z, y, x)
    if not array.any():
        raise MRIError(f"patient {patient}: tumour mask {mask_path} is empty; check the file or the label value")
    zyx = np.argwhere(array)
    lo_idx, hi_idx = zyx.min(axis=0)[::-1], zyx.max(axis=0)[::-1]  # (x, y, z) voxel indices
    spacing = np.asarray(mask.GetSpacing())
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    # Box in the mask's index frame, in mm from the first tumour voxel's centre.
    extent = (hi_idx - lo_idx) * spacing + 2 * margin_mm + spacing
    start = np.asarray(mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in lo_idx])) - direction @ (
        np.full(3, margin_mm) + spacing / 2
    )
    size_xyz = np.asarray(roi_shape[::-1])
    out_spacing = extent / size_xyz
    reference = sitk.Image([int(s) for s in size_xyz], sitk.sitkFloat32)
    reference.SetSpacing([float(s) for s in out_spacing])
    reference.SetDirection([float(d) for d in direction.ravel()])
    # The first output voxel's centre sits half an output voxel inside the box corner.
    reference.SetOrigin([float(v) for v in start + direction @ (out_spacing / 2)])
    return reference


def _resample(image: sitk.Image, reference: sitk.Image, interpolator: int) -> np.ndarray:
    resampled = sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)  # (D, H, W)


def _normalise(values: np.ndarray, tumour: np.ndarray, how: str) -> np.ndarray:
    if how == "none":
        return values
    if how == "zscore":
        inside = values[tumour] if tumour.any() else values.ravel()
        return (values - inside.mean()) / (inside.std() or 1.0)
    lo, hi = np.percentile(values, [1, 99])
    return np.clip((values - lo) / ((hi - lo) or 1.0), 0, 1)


def crop_patient(
    patient: str, images: Mapping[str, str | None], mask_path: str, sequences: Sequence[str], settings: ROISettings
) -> PatientROI:
    """Crop and resample every configured sequence of one patient around the tumour."""
    if settings.normalise not in NORMALISATIONS:
        raise ValueError(f"mri_roi normalise must be one of {NORMALISATIONS}")
    mask = _read(mask_path, patient, "mask")
    reference = roi_grid(mask, settings.roi_shape, settings.margin_mm, patient, mask_path)
    tumour_resampled = _resample(sitk.Cast(mask > 0, sitk.sitkUInt8), reference, sitk.sitkNearestNeighbor) > 0
    zyx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    tumour_points = np.asarray(
        [mask.TransformIndexToPhysicalPoint([int(v) for v in p[::-1]]) for p in zyx[:: max(1, len(zyx) // 2000)]]
    )
    channels = np.zeros((len(sequences), *settings.roi_shape), np.float32)
    present = np.zeros(len(sequences), bool)
    for c, sequence in enumerate(sequences):
        path = images.get(sequence)
        if path is None or not os.path.isfile(path):
            if settings.missing_sequence == "zero":
                continue
            raise MRIError(
                f"patient {patient}: sequence '{sequence}' missing ({path or 'no row in mri.tsv'}); add it, or set mri_roi: missing_sequence: zero"
            )
        image = _read(path, patient, f"sequence '{sequence}'")
        lo, hi = _fov_box(image)
        tol = settings.fov_tolerance_mm + np.asarray(image.GetSpacing()).max() / 2
        outside = ((tumour_points < lo - tol) | (tumour_points > hi + tol)).any(axis=1)
        if outside.any():
            raise MRIError(
                f"patient {patient}: sequence '{sequence}' ({path}) does not cover the tumour of mask {mask_path}: "
                f"{int(outside.sum())} sampled tumour voxels lie outside its field of view; are image and mask registered?"
            )
        values = _resample(image, reference, sitk.sitkLinear)
        channels[c] = _normalise(values, tumour_resampled, settings.normalise)
        present[c] = True
    box_lo = np.asarray(reference.GetOrigin())
    return PatientROI(
        channels,
        tumour_resampled.astype(np.uint8),
        present,
        box_lo,
        np.asarray(reference.GetSpacing()),
        np.asarray(reference.GetDirection()),
        np.stack([box_lo, np.asarray(reference.TransformIndexToPhysicalPoint([s - 1 for s in reference.GetSize()]))]),
    )


def qc_picture(path: str | os.PathLike[str], patient: str, roi: PatientROI, sequences: Sequence[str]) -> None:
    """Per sequence, the ROI slice with the most tumour, the mask outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(roi.mask.sum(axis=(1, 2)).argmax())
    fig, axes = plt.subplots(1, len(sequences), figsize=(2.4 * len(sequences), 2.8), squeeze=False)
    for ax, channel, sequence, present in zip(axes[0], roi.channels, sequences, roi.present, strict=True):
        ax.imshow(channel[z], cmap="gray")
        if roi.mask[z].any():
            ax.contour(roi.mask[z], levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(sequence if present else f"{sequence} (missing)", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{patient}: slice {z} of {roi.mask.shape[0]}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def excluded_picture(path: str | os.PathLike[str], patient: str, reason: str) -> None:
    """The QC picture of a patient whose MRI was excluded: the reason, in place of the slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7, 2))
    fig.text(0.02, 0.5, textwrap.fill(f"{patient} excluded: {reason}", 95), va="center", fontsize=9, color="darkred")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
