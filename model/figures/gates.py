"""MoE gate weights (paper Fig. 5): how much each expert contributes, per cohort.

Unequal means show the experts are not interchangeable; the error bars (std over patients) show
whether the gate fuses dynamically, patient by patient, or applies one fixed weighting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from model.figures import FigureInputError
from workflow.plots import COLUMN_WIDTH, FULL_WIDTH, PALETTE, figure_style, save_figure


def gate_statistics(gates: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """cohort -> (patients, experts) gate weights  ->  one row per (cohort, expert): mean, std (ddof 0), n."""
    if not gates:
        raise FigureInputError("gate weights: no cohort")
    rows, widths = [], {}
    for cohort, weights in gates.items():
        weights = np.asarray(weights, dtype=float)
        if weights.ndim and len(weights) == 0:
            raise FigureInputError(f"gate weights of cohort {cohort}: no patients")
        if weights.ndim != 2 or weights.shape[1] == 0:
            raise FigureInputError(
                f"gate weights of cohort {cohort}: expected (patients, experts), got {weights.shape}"
            )
        widths[cohort] = weights.shape[1]
        for expert, column in enumerate(weights.T, start=1):
            stats = {"mean": column.mean(), "std": column.std(), "n": len(column)}
            rows.append({"cohort": cohort, "expert": f"expert {expert}"} | stats)
    if len(set(widths.values())) > 1:
        raise FigureInputError(f"gate weights: cohorts have different numbers of experts {widths}")
    return pd.DataFrame(rows)


def gate_weights_figure(
    gates: Mapping[str, np.ndarray], title: str, paths: Sequence[str | os.PathLike[str]]
) -> pd.DataFrame:
    """Mean gate weight per expert, grouped by cohort, with the std over patients and the uniform 1/n line.

    Returns the plotted table (cohort, expert, mean, std, n).
    """
    table = gate_statistics(gates)
    experts = list(dict.fromkeys(table["expert"]))
    cohorts = list(gates)
    width = 0.8 / len(experts)
    with figure_style():
        size = (COLUMN_WIDTH if len(cohorts) * len(experts) <= 12 else FULL_WIDTH, 2.6)
        figure, ax = plt.subplots(figsize=size)
        for index, expert in enumerate(experts):
            rows = table[table["expert"] == expert]
            x = np.arange(len(cohorts)) - 0.4 + width * (index + 0.5)
            ax.bar(
                x,
                rows["mean"],
                width * 0.9,
                yerr=rows["std"],
                color=PALETTE[index % len(PALETTE)],
                label=expert,
                error_kw={"elinewidth": 0.7, "capsize": 2},
            )
        ax.axhline(1 / len(experts), color="black", lw=0.8, ls="--", label=f"uniform (1/{len(experts)})")
        ax.set_xticks(range(len(cohorts)), cohorts)
        ax.set_ylabel("gate weight (mean ± std)")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.legend(ncol=min(len(experts) + 1, 3), loc="upper center", bbox_to_anchor=(0.5, -0.12))
        save_figure(figure, paths)
    return table
