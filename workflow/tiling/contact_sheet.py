"""A cohort's tiling at a glance: every slide's grid picture on one sheet, titled with its patch count or exclusion.

Looking at the grid pictures one by one does not scale to a cohort; one sheet shows at a glance the
slides whose grid misses tissue, covers background or pen marks, or was excluded, and why.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from workflow.plots import BLACK, VERMILLION, figure_style, save_figure
from workflow.tiling.coords import OK

MAX_PANELS = 100  # one readable figure; the rest are counted in the title
PANEL_INCHES = 1.6
PANEL_PIXELS = 480  # PANEL_INCHES at 300 dpi: pictures are shrunk to this on reading, bounding memory


def _read_picture(slide_id: str, path: str | os.PathLike[str]) -> np.ndarray:
    """The picture as RGB, its longer side at most PANEL_PIXELS."""
    if not Path(path).is_file():
        raise ValueError(f"slide {slide_id}: grid picture {path} is missing; run the tiling of this slide again")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"slide {slide_id}: grid picture {path} is not a readable image; run its tiling again")
    shrink = max(bgr.shape[:2]) / PANEL_PIXELS
    if shrink > 1:
        size = (max(1, round(bgr.shape[1] / shrink)), max(1, round(bgr.shape[0] / shrink)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _label(slide_id: str, row: pd.Series) -> tuple[str, bool]:
    """Panel title and whether the slide was tiled: its patch count, or its status and reason."""
    if row["status"] == OK:
        return f"{slide_id}\n{int(row['patches'])} patches", True
    reason = "" if pd.isna(row["reason"]) else str(row["reason"])
    lines = textwrap.wrap(f"{row['status']}: {reason}", 34)
    return "\n".join([slide_id, *lines[:2]]) + (" ..." if len(lines) > 2 else ""), False


def contact_sheet(
    pictures: Mapping[str, str | os.PathLike[str]],
    summary: pd.DataFrame,
    title: str,
    paths: Sequence[str | os.PathLike[str]],
) -> None:
    """Every slide's grid picture in one grid of panels (at most MAX_PANELS), each titled from the tiling summary.

    ``pictures`` maps slide IDs to grid pictures in display order; ``summary`` is the tiling
    summary (slide_id, status, patches, reason). Excluded slides are titled in vermillion with their reason.
    """
    if not pictures:
        raise ValueError(f"contact sheet '{title}': no slides")
    rows = summary.set_index("slide_id")
    absent = [slide for slide in pictures if slide not in rows.index]
    if absent:
        raise ValueError(f"contact sheet '{title}': slides {absent} are not in the tiling summary; tile them again")
    shown = list(pictures)[:MAX_PANELS]
    images = {slide: _read_picture(slide, pictures[slide]) for slide in shown}
    hidden = len(pictures) - len(shown)
    ncols = min(len(shown), max(1, round(math.sqrt(len(shown) * 1.5))))
    nrows = math.ceil(len(shown) / ncols)
    with figure_style():
        figure, axes = plt.subplots(
            nrows, ncols, figsize=(PANEL_INCHES * ncols, (PANEL_INCHES + 0.3) * nrows + 0.4), squeeze=False
        )
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, slide in zip(axes.flat, shown, strict=False):
            label, tiled = _label(slide, rows.loc[slide])
            ax.imshow(images[slide])
            ax.set_title(label, fontsize=5.5, color=BLACK if tiled else VERMILLION)
        figure.suptitle(title + (f" (+{hidden} more slides not shown)" if hidden else ""))
        figure.tight_layout()
        save_figure(figure, paths)
