"""Training figures: C-index per epoch over folds, and each fold's loss and C-index curves.

Colour is the data split (training, inner split, held-out) and line style the quantity (dashed
loss, solid C-index), the same in both figures. An ensemble's log has one row per member and epoch:
its members are averaged per epoch. A single-fit model (coxph) has one epoch and shows as points.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from model.figures import FigureInputError
from workflow.plots import BLACK, BLUE, COLUMN_WIDTH, FULL_WIDTH, ORANGE, figure_style, save_figure

C_INDEX = {"train_c_index": "training", "inner_c_index": "inner split", "held_out_c_index": "held-out"}
LOSS = {"loss": "training", "inner_loss": "inner split"}
SPLIT_COLOURS = {"training": BLACK, "inner split": ORANGE, "held-out": BLUE}


def _epoch_means(logs: Sequence[pd.DataFrame], what: str, required: Sequence[str]) -> list[pd.DataFrame]:
    """Each log averaged over ensemble members per epoch, after checking it has epochs and ``required``."""
    if not logs:
        raise FigureInputError(f"{what}: no fold logs")
    means = []
    for fold, log in enumerate(logs):
        missing = [c for c in ("epoch", *required) if c not in log.columns]
        if missing:
            raise FigureInputError(f"{what}: fold {fold} log lacks column(s) {', '.join(missing)}")
        if log.empty:
            raise FigureInputError(f"{what}: fold {fold} log has no epochs")
        means.append(
            log.drop(columns="member", errors="ignore").groupby("epoch", as_index=False).mean(numeric_only=True)
        )
    return means


def cindex_curves(logs: Sequence[pd.DataFrame], title: str, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Training, inner and held-out C-index per epoch, one thin line per fold and the fold mean in bold."""
    logs = _epoch_means(logs, f"C-index curves '{title}'", [])
    shown = [c for c in C_INDEX if all(c in log for log in logs)]
    if not shown:
        raise FigureInputError(f"C-index curves '{title}': no C-index column ({', '.join(C_INDEX)}) in every log")
    marker = "o" if max(len(log) for log in logs) == 1 else None
    with figure_style():
        figure, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
        for column in shown:
            colour = SPLIT_COLOURS[C_INDEX[column]]
            for log in logs:
                ax.plot(log["epoch"], log[column], color=colour, alpha=0.3, lw=0.7, marker=marker)
            mean = pd.concat(logs).groupby("epoch")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), color=colour, lw=1.8, marker=marker, label=C_INDEX[column])
        ax.axhline(0.5, color="black", lw=0.5, ls=":")
        _epoch_axis(ax, logs)
        ax.set_xlabel("epoch")
        ax.set_ylabel("C-index")
        ax.set_title(title)
        ax.legend(ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        save_figure(figure, paths)


def fold_training_curves(
    logs: Sequence[pd.DataFrame], title: str, paths: Sequence[str | os.PathLike[str]]
) -> pd.DataFrame:
    """One panel per fold: loss (left axis, dashed) and C-index (right axis, solid) per epoch.

    Shows whether a fold overfits (training C rising while held-out C falls) or has not converged.
    Losses are drawn where the log has them (coxph has none). Returns the plotted per-epoch values,
    members averaged, with a ``fold`` column (the log's position).
    """
    what = f"training curves '{title}'"
    logs = _epoch_means(logs, what, ["train_c_index", "held_out_c_index"])
    marker = "o" if max(len(log) for log in logs) == 1 else None
    ncols = min(len(logs), 3)
    nrows = math.ceil(len(logs) / ncols)
    width = FULL_WIDTH if ncols > 1 else COLUMN_WIDTH
    with figure_style():
        figure, axes = plt.subplots(
            nrows, ncols, figsize=(width, 0.6 + 1.9 * nrows), squeeze=False, layout="constrained"
        )
        for index, ax in enumerate(axes.flat):
            if index >= len(logs):
                ax.set_visible(False)
                continue
            _fold_panel(
                ax,
                logs[index],
                marker,
                first_column=index % ncols == 0,
                last_column=index % ncols == ncols - 1 or index == len(logs) - 1,
            )
            ax.set_title(f"fold {index}")
            if index + ncols >= len(logs):  # nothing below this panel
                ax.set_xlabel("epoch")
        drawn = {c for log in logs for c in log.columns}
        handles = [
            Line2D([], [], color=SPLIT_COLOURS[s], ls="--", label=f"{s} loss") for c, s in LOSS.items() if c in drawn
        ]
        handles += [
            Line2D([], [], color=SPLIT_COLOURS[s], label=f"{s} C-index") for c, s in C_INDEX.items() if c in drawn
        ]
        figure.suptitle(title)
        figure.legend(handles=handles, ncol=len(handles) if ncols > 1 else 2, loc="outside lower center")
        save_figure(figure, paths)
    return pd.concat([log.assign(fold=fold) for fold, log in enumerate(logs)], ignore_index=True)


def _fold_panel(ax: plt.Axes, log: pd.DataFrame, marker: str | None, first_column: bool, last_column: bool) -> None:
    """One fold: losses on ``ax``, C-indices on a twin axis fixed to 0..1 so folds compare at a glance."""
    losses = [c for c in LOSS if c in log]
    for column in losses:
        ax.plot(log["epoch"], log[column], color=SPLIT_COLOURS[LOSS[column]], ls="--", marker=marker)
    if not losses:
        ax.set_yticks([])
    elif first_column:
        ax.set_ylabel("loss")
    _epoch_axis(ax, [log])
    c_ax = ax.twinx()
    c_ax.spines["right"].set_visible(True)
    for column in (c for c in C_INDEX if c in log):
        c_ax.plot(log["epoch"], log[column], color=SPLIT_COLOURS[C_INDEX[column]], marker=marker)
    c_ax.axhline(0.5, color="black", lw=0.5, ls=":")
    c_ax.set_ylim(0, 1.03)  # a C-index of 1 stays visible
    if last_column:
        c_ax.set_ylabel("C-index")


def _epoch_axis(ax: plt.Axes, logs: Sequence[pd.DataFrame]) -> None:
    """Integer epoch ticks; a single-fit model's one epoch gets its own tick instead of fractional ones."""
    epochs = sorted({e for log in logs for e in log["epoch"]})
    if len(epochs) == 1:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
