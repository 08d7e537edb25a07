"""The one figure style of the workflow: a colour-blind-safe palette, print-size fonts, and saving.

Figures are drawn at the size they are printed (a paper column is about 3.5 in wide, a full page
width 7 in), so the font sizes below are the printed sizes. Colours are Okabe-Ito's, which stay
distinguishable under the common colour-vision deficiencies and in greyscale print. The figures
themselves live in ``model.figures``; this module imports nothing from ``model``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import matplotlib.pyplot as plt
from matplotlib import cycler

from workflow.io import atomic_path

BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
# Categorical order: the most distinct colours first, yellow (faint on white) last.
PALETTE = [BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE, BLACK, YELLOW]
GROUP_COLOURS = {"high risk": VERMILLION, "low risk": BLUE}
SEQUENTIAL_CMAP = "cividis"  # perceptually uniform and colour-blind safe

COLUMN_WIDTH = 3.5  # inches
FULL_WIDTH = 7.0

STYLE = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.prop_cycle": cycler(color=PALETTE),
    "legend.frameon": False,
    "savefig.dpi": 300,
    "pdf.fonttype": 42,  # TrueType: text stays editable and searchable in the PDF
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Apply ``STYLE`` while a figure is built and saved; the caller's rcParams come back afterwards."""
    with plt.rc_context(STYLE):
        yield


def save_figure(figure: plt.Figure, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Save one figure under each path (format from the suffix), atomically, then close it.

    PDFs carry no creation date, so the same data gives the same bytes on every run and machine.
    """
    for path in paths:
        kind = str(path).rsplit(".", 1)[-1]
        metadata = {"CreationDate": None} if kind == "pdf" else None
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=300, bbox_inches="tight", format=kind, metadata=metadata)
    plt.close(figure)
