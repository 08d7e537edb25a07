"""Where each decoupled feature looks (paper Fig. 8): patch attention over the slide, top patches, second-modality shares.

Per patient: the slide thumbnail, one heat map per decoupled feature (shared, explore,
pathology-specific) with its highest-scoring patches outlined and magnified underneath, and the
attention share of every decoupled feature over the gene families (or MRI sequences). The heat map
is drawn from level-0 patch coordinates onto a thumbnail of known scale, so a hot patch in the
figure is the patch the model scored, to within one thumbnail pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle
from matplotlib.patheffects import withStroke

from model.figures import FigureInputError
from workflow.plots import FULL_WIDTH, SEQUENTIAL_CMAP, SKY_BLUE, figure_style, save_figure


@dataclass(frozen=True)
class PatientAttention:
    """One patient's attention: slide thumbnail and patches, per-feature patch scores, second-modality shares.

    ``top_patches[feature][i]`` is the RGB image of patch ``top_k(patch_scores[feature], k)[i]``.
    ``second_scores`` has one row per decoupled feature and one column per gene family or MRI sequence.
    """

    patient_id: str
    cohort: str
    risk: float
    group: str
    slide_id: str
    thumbnail: np.ndarray
    scale: float
    xy: np.ndarray
    size0: int
    patch_scores: Mapping[str, np.ndarray]
    top_patches: Mapping[str, list[np.ndarray]]
    second_scores: pd.DataFrame


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, highest first; ties keep patch order."""
    return np.argsort(-np.asarray(scores, float), kind="stable")[: max(k, 0)]


def _footprints(shape: tuple[int, ...], scale: float, xy: np.ndarray, size0: int) -> np.ndarray:
    """(N, 4) thumbnail pixel ranges x0, x1, y0, y1 (end exclusive) of the patches, at least one pixel wide."""
    start = np.rint(np.asarray(xy, float) * scale).astype(int)
    end = np.maximum(np.rint((np.asarray(xy, float) + size0) * scale).astype(int), start + 1)
    limits = [shape[1], shape[0]]
    start, end = np.clip(start, 0, limits), np.clip(end, 0, limits)
    return np.column_stack([start[:, 0], end[:, 0], start[:, 1], end[:, 1]])


def attention_overlay(
    thumbnail: np.ndarray,
    scale: float,
    xy: np.ndarray,
    size0: int,
    scores: np.ndarray,
    alpha: float = 0.5,
    cmap: str = SEQUENTIAL_CMAP,
) -> np.ndarray:
    """The thumbnail with every patch's score blended into its footprint; pixels outside patches are unchanged.

    Scores are min-max normalised over the slide's patches (the colour map's bottom is the slide's
    least attended patch, its top the most attended; equal scores all take its middle). A patch at
    level-0 ``(x, y)`` covers thumbnail pixels ``[x*scale, (x+size0)*scale)`` in x and likewise in
    y, rounded to whole pixels; where patches overlap their scores are averaged.
    """
    thumbnail, scores = np.asarray(thumbnail), np.asarray(scores, float).ravel()
    xy = np.asarray(xy).reshape(-1, 2)
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3 or thumbnail.dtype != np.uint8:
        raise FigureInputError(
            f"thumbnail must be an (H, W, 3) uint8 RGB array, not {thumbnail.dtype} {thumbnail.shape}"
        )
    if len(scores) == 0 or len(scores) != len(xy):
        raise FigureInputError(f"{len(scores)} patch scores for {len(xy)} patches")
    if not np.isfinite(scores).all():
        raise FigureInputError(f"{int((~np.isfinite(scores)).sum())} non-finite patch scores")
    spread = np.ptp(scores)
    normalised = (scores - scores.min()) / spread if spread > 0 else np.full(len(scores), 0.5)
    total = np.zeros(thumbnail.shape[:2])
    count = np.zeros(thumbnail.shape[:2])
    for (x0, x1, y0, y1), value in zip(_footprints(thumbnail.shape, scale, xy, size0), normalised, strict=True):
        total[y0:y1, x0:x1] += value
        count[y0:y1, x0:x1] += 1
    covered = count > 0
    colours = colormaps[cmap](total[covered] / count[covered])[:, :3] * 255
    out = thumbnail.copy()
    out[covered] = np.rint((1 - alpha) * thumbnail[covered] + alpha * colours).astype(np.uint8)
    return out


def _check(patient: PatientAttention) -> None:
    where = f"attention of patient {patient.patient_id} (slide {patient.slide_id})"
    if not patient.patch_scores:
        raise FigureInputError(f"{where}: no patch scores")
    for feature, scores in patient.patch_scores.items():
        if len(scores) == 0 or len(scores) != len(patient.xy):
            raise FigureInputError(f"{where}: {len(scores)} '{feature}' scores for {len(patient.xy)} patches")


def _hide_axes(ax: plt.Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _heat_panel(figure: plt.Figure, ax: plt.Axes, patient: PatientAttention, feature: str, k: int) -> None:
    """One feature's heat map with its top-k patches outlined and numbered as in the strip below."""
    scores = np.asarray(patient.patch_scores[feature], float)
    ax.imshow(attention_overlay(patient.thumbnail, patient.scale, patient.xy, patient.size0, scores))
    boxes = _footprints(patient.thumbnail.shape, patient.scale, patient.xy, patient.size0)
    for rank, index in enumerate(top_k(scores, k), start=1):
        x0, x1, y0, y1 = boxes[index]
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=SKY_BLUE, lw=0.8))
        ax.text(
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            str(rank),
            ha="center",
            va="center",
            fontsize=4.5,
            color="white",
            path_effects=[withStroke(linewidth=1, foreground="black")],
        )
    ax.set_title(feature)
    _hide_axes(ax)
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), SEQUENTIAL_CMAP), ax=ax, fraction=0.05, pad=0.03, shrink=0.7)
    bar.set_ticks([0, 1], labels=["min", "max"])
    bar.ax.tick_params(labelsize=5, length=2)
    bar.outline.set_linewidth(0.4)


def _patch_strip(figure: plt.Figure, cell: plt.SubplotSpec, patches: Sequence[np.ndarray]) -> None:
    """The top patches, magnified, numbered by rank."""
    rows = 1 if len(patches) <= 3 else 2
    grid = cell.subgridspec(rows, math.ceil(len(patches) / rows), wspace=0.04, hspace=0.04)
    for rank, image in enumerate(patches, start=1):
        ax = figure.add_subplot(grid[(rank - 1) // grid.ncols, (rank - 1) % grid.ncols])
        ax.imshow(image)
        ax.text(
            0.04,
            0.96,
            str(rank),
            transform=ax.transAxes,
            va="top",
            fontsize=5,
            color="white",
            bbox={"boxstyle": "square,pad=0.15", "fc": "black", "ec": "none", "alpha": 0.6},
        )
        _hide_axes(ax)


def _shares_panel(ax: plt.Axes, shares: pd.DataFrame) -> None:
    """Second-modality attention shares, one row per family or sequence, one column per decoupled feature, annotated."""
    table = shares.T
    values = table.to_numpy(float)
    top = max(float(np.nanmax(values)), 1e-12) if np.isfinite(values).any() else 1.0
    ax.imshow(values, cmap=SEQUENTIAL_CMAP, vmin=0, vmax=top, aspect="auto")
    mapper = colormaps[SEQUENTIAL_CMAP]
    for (i, j), value in np.ndenumerate(values):
        light = np.isfinite(value) and np.dot(mapper(value / top)[:3], [0.299, 0.587, 0.114]) > 0.5
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5, color="black" if light else "white")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns], rotation=30, ha="right", fontsize=5)
    ax.set_yticks(range(values.shape[0]), [str(r) for r in table.index], fontsize=5)
    ax.yaxis.tick_right()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("attention share")


def attention_figure(patients: Sequence[PatientAttention], title: str, paths: Sequence[str | os.PathLike[str]]) -> None:
    """One row block per patient: thumbnail, a heat map per score (decoupled feature, attention) with its top
    patches, and the second-modality shares where the model gives them."""
    if not patients:
        raise FigureInputError(f"attention figure '{title}': no patients")
    for patient in patients:
        _check(patient)
    shares = any(not p.second_scores.empty for p in patients)
    columns = max(len(p.patch_scores) for p in patients) + 1 + shares
    with figure_style():
        height = 2.6 * len(patients) + 0.3
        figure = plt.figure(figsize=(FULL_WIDTH, height))
        # room above the first row for its panel titles and the figure's title, whatever the height
        outer = figure.add_gridspec(len(patients), 1, hspace=0.35, top=1 - 0.55 / height)
        for row, patient in enumerate(patients):
            block = outer[row].subgridspec(
                2,
                columns,
                height_ratios=[1, 0.8],
                width_ratios=[1] * (columns - shares) + [0.9] * shares,
                wspace=0.35,
                hspace=0.06,
            )
            ax = figure.add_subplot(block[0, 0])
            ax.imshow(patient.thumbnail)
            ax.set_title(f"{patient.patient_id} ({patient.cohort})\n{patient.group}, risk {patient.risk:.2f}")
            _hide_axes(ax)
            for col, feature in enumerate(patient.patch_scores, start=1):
                patches = patient.top_patches.get(feature, [])
                _heat_panel(figure, figure.add_subplot(block[0, col]), patient, feature, len(patches))
                if patches:
                    _patch_strip(figure, block[1, col], patches)
            if not patient.second_scores.empty:
                _shares_panel(figure.add_subplot(block[:, columns - 1]), patient.second_scores)
        figure.suptitle(title)
        save_figure(figure, paths)
