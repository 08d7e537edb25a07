"""Risk-group figures: Kaplan-Meier curves (paper Fig. 6) and the predicted risk per group (Fig. 7)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts
from scipy.stats import ttest_ind

from model.figures import FigureInputError
from workflow.plots import COLUMN_WIDTH, GROUP_COLOURS, figure_style, save_figure

GROUPS = ("low risk", "high risk")  # left to right


def km_figure(
    curves: Mapping[str, KaplanMeierFitter], title: str, p_value: float, paths: Sequence[str | os.PathLike[str]]
) -> None:
    """Kaplan-Meier curves with 95% confidence bands, the log-rank p-value (n/a when NaN) and at-risk counts."""
    if not curves:
        raise FigureInputError(f"Kaplan-Meier figure '{title}': no risk group")
    with figure_style():
        figure, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.8))
        for group, fitter in sorted(curves.items()):
            fitter.plot_survival_function(
                ax=ax, ci_show=True, show_censors=True, color=GROUP_COLOURS.get(group), censor_styles={"ms": 4}
            )
        ax.set_xlabel("months")
        ax.set_ylabel("survival probability")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        label = f"log-rank p = {p_value:.2g}" if np.isfinite(p_value) else "log-rank test: n/a (one group)"
        ax.legend(title=label, loc="best", frameon=True, framealpha=0.85, edgecolor="none")
        add_at_risk_counts(*[curves[g] for g in sorted(curves)], ax=ax, rows_to_show=["At risk"], ypos=-0.32)
        save_figure(figure, paths)


def _welch(high: np.ndarray, low: np.ndarray) -> tuple[float, float, str]:
    """Welch's t-test (no equal-variance assumption) of high against low risk: t, p, and why they are NaN."""
    for name, values in (("high risk", high), ("low risk", low)):
        if len(values) < 2:
            return np.nan, np.nan, f"{name} has {len(values)} patient{'' if len(values) == 1 else 's'}"
    t, p = ttest_ind(high, low, equal_var=False)
    if not np.isfinite(t):
        return np.nan, np.nan, "no spread of risk within the groups"
    return float(t), float(p), ""


def risk_group_boxplot(
    risk: np.ndarray, group: Sequence[str], title: str, paths: Sequence[str | os.PathLike[str]]
) -> dict[str, float | int]:
    """Box plots of predicted risk in the low and high risk groups, every patient overlaid, Welch's t and p.

    A group with fewer than 2 patients is still drawn; t and p are then NaN and the figure says why.
    Returns {"t", "p", "n_high", "n_low"}.
    """
    risk, group = np.asarray(risk, dtype=float).ravel(), np.asarray(group, dtype=object).ravel()
    if len(risk) == 0:
        raise FigureInputError(f"risk groups of '{title}': no patients")
    if len(group) != len(risk):
        raise FigureInputError(f"risk groups of '{title}': {len(risk)} risks but {len(group)} group labels")
    unknown = sorted(set(group) - set(GROUPS))
    if unknown:
        raise FigureInputError(f"risk groups of '{title}': unknown groups {unknown}, expected {list(GROUPS)}")
    if not np.isfinite(risk).all():
        raise FigureInputError(f"risk groups of '{title}': {int((~np.isfinite(risk)).sum())} non-finite risks")
    values = {name: risk[group == name] for name in GROUPS}
    t, p, reason = _welch(values["high risk"], values["low risk"])
    with figure_style():
        figure, ax = plt.subplots(figsize=(COLUMN_WIDTH * 0.8, 2.8))
        jitter = np.random.default_rng(0)
        for x, name in enumerate(GROUPS, start=1):
            colour, points = GROUP_COLOURS[name], values[name]
            if len(points):
                box = ax.boxplot(points, positions=[x], widths=0.55, showfliers=False, patch_artist=True)
                plt.setp(box["boxes"], facecolor=colour, alpha=0.3, edgecolor=colour)
                plt.setp(box["medians"], color="black")
            ax.scatter(x + jitter.uniform(-0.15, 0.15, len(points)), points, s=9, color=colour, alpha=0.8, lw=0)
        ax.set_xticks(range(1, len(GROUPS) + 1), [f"{name}\n(n = {len(values[name])})" for name in GROUPS])
        ax.set_xlim(0.4, len(GROUPS) + 0.6)
        text = f"Welch's t = {t:.2f}, p = {p:.2g}" if not reason else f"Welch's t-test n/a: {reason}"
        ax.set_ylabel("predicted risk")
        ax.set_title(f"{title}\n{text}")
        save_figure(figure, paths)
    return {"t": t, "p": p, "n_high": len(values["high risk"]), "n_low": len(values["low risk"])}
