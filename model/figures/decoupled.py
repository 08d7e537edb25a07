"""Decoupled features (paper Fig. 4): a t-SNE of every feature type and their pairwise CKA similarity.

The paper's reading: modality-specific features form separate clouds, shared and explored features
lie between them, and the CKA heatmap quantifies how much each pair of feature types overlaps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.manifold import TSNE

from model.figures import FigureInputError
from workflow.plots import FULL_WIDTH, PALETTE, SEQUENTIAL_CMAP, figure_style, save_figure


def _stacked(features: Mapping[str, np.ndarray], what: str) -> np.ndarray:
    """The feature types stacked row-wise, after checking they hold the same patients and width."""
    if not features:
        raise FigureInputError(f"{what}: no feature types")
    arrays = {name: np.asarray(values, dtype=float) for name, values in features.items()}
    shapes = {name: a.shape for name, a in arrays.items()}
    if any(len(shape) != 2 for shape in shapes.values()):
        raise FigureInputError(f"{what}: every feature type must be (patients, channels), got {shapes}")
    if len({shape[0] for shape in shapes.values()}) > 1:
        raise FigureInputError(f"{what}: feature types hold different numbers of patients {shapes}")
    if len({shape[1] for shape in shapes.values()}) > 1:
        raise FigureInputError(f"{what}: feature types have different widths {shapes}")
    n = next(iter(shapes.values()))[0]
    if n < 2:
        raise FigureInputError(f"{what}: {n} patient(s), t-SNE needs at least 2")
    return np.concatenate(list(arrays.values()))


def decoupled_features_figure(
    features: Mapping[str, np.ndarray],
    cka: pd.DataFrame,
    title: str,
    paths: Sequence[str | os.PathLike[str]],
    seed: int = 0,
) -> np.ndarray:
    """Left: t-SNE of all decoupled features (one colour per type); right: the CKA heatmap, values annotated.

    ``features`` maps a feature type to its (patients, channels) array, the same patients in each;
    ``cka`` is the square type-by-type similarity table. Returns the 2-D embedding, rows in the order
    of ``features`` stacked.
    """
    what = f"decoupled features '{title}'"
    points = _stacked(features, what)
    if cka.empty or cka.shape[0] != cka.shape[1]:
        raise FigureInputError(f"{what}: the CKA table must be square and non-empty, got shape {cka.shape}")
    perplexity = min(30.0, (len(points) - 1) / 3)
    embedding = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(points)
    n = len(points) // len(features)
    with figure_style():
        figure, (left, right) = plt.subplots(
            1, 2, figsize=(FULL_WIDTH, 3.6), width_ratios=[1, 1.15], layout="constrained"
        )
        for index, name in enumerate(features):
            rows = embedding[index * n : (index + 1) * n]
            left.scatter(*rows.T, s=8, color=PALETTE[index % len(PALETTE)], alpha=0.8, lw=0, label=name)
        left.set_xlabel("t-SNE 1")
        left.set_ylabel("t-SNE 2")
        left.set_xticks([])
        left.set_yticks([])
        left.set_title("t-SNE of decoupled features")
        left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, markerscale=1.8)
        _cka_heatmap(figure, right, cka)
        figure.suptitle(title)
        save_figure(figure, paths)
    return embedding


def _cka_heatmap(figure: plt.Figure, ax: plt.Axes, cka: pd.DataFrame) -> None:
    """CKA on a fixed 0..1 scale, so heatmaps of different cohorts compare; each cell labelled."""
    values = cka.to_numpy(dtype=float)
    image = ax.imshow(values, cmap=SEQUENTIAL_CMAP, vmin=0, vmax=1)
    ax.set_xticks(range(values.shape[1]), [str(c) for c in cka.columns], rotation=35, ha="right")
    ax.set_yticks(range(values.shape[0]), [str(i) for i in cka.index])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for (row, column), value in np.ndenumerate(values):
        colour = "white" if value < 0.6 else "black"  # cividis is dark at the bottom; NaN cells stay blank
        ax.text(column, row, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", color=colour)
    ax.set_title("CKA similarity")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="CKA")
