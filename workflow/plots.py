"""Result figures: Kaplan-Meier curves of risk groups and per-epoch C-index curves.

Every figure is saved as PNG (300 dpi) and PDF, each written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts
from matplotlib.ticker import MaxNLocator

from workflow.io import atomic_path

GROUP_COLOURS = {"high risk": "#c0392b", "low risk": "#2471a3"}


def save_figure(figure: plt.Figure, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Save one figure under each path (format from the suffix), atomically, then close it."""
    for path in paths:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=300, bbox_inches="tight", format=str(path).rsplit(".", 1)[-1])
    plt.close(figure)


def km_figure(
    curves: Mapping[str, KaplanMeierFitter], title: str, p_value: float, paths: Sequence[str | os.PathLike[str]]
) -> None:
    """Kaplan-Meier curves with 95% confidence bands, the log-rank p-value (n/a when NaN) and at-risk counts."""
    figure, ax = plt.subplots(figsize=(5.2, 4.4))
    for group, fitter in sorted(curves.items()):
        fitter.plot_survival_function(ax=ax, ci_show=True, show_censors=True, color=GROUP_COLOURS.get(group))
    ax.set_xlabel("months")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    label = f"log-rank p = {p_value:.2g}" if np.isfinite(p_value) else "log-rank test: n/a (one group)"
    ax.legend(title=label, loc="best", fontsize=8, title_fontsize=8)
    add_at_risk_counts(*[curves[g] for g in sorted(curves)], ax=ax, rows_to_show=["At risk"])
    save_figure(figure, paths)


def cindex_curves(logs: Sequence[pd.DataFrame], title: str, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Training, inner and held-out C-index per epoch, one thin line per fold and the fold mean in bold.

    An ensemble's log has one row per member and epoch: its members are averaged per epoch. A
    single-fit model (coxph) has one epoch and shows as points.
    """
    figure, ax = plt.subplots(figsize=(5.2, 3.6))
    logs = [log.groupby("epoch", as_index=False).mean(numeric_only=True) for log in logs]
    marker = "o" if max(len(log) for log in logs) == 1 else None
    columns = {"train_c_index": "#7f8c8d", "inner_c_index": "#2471a3", "held_out_c_index": "#c0392b"}
    labels = {"train_c_index": "training", "inner_c_index": "inner split", "held_out_c_index": "held-out"}
    for column, colour in columns.items():
        if not all(column in log for log in logs):
            continue
        for log in logs:
            ax.plot(log["epoch"], log[column], color=colour, alpha=0.3, lw=0.8, marker=marker)
        mean = pd.concat(logs).groupby("epoch")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), color=colour, lw=2, marker=marker, label=labels[column])
    ax.axhline(0.5, color="black", lw=0.5, ls=":")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("C-index")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.17))
    save_figure(figure, paths)
