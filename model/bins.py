"""Discrete survival-time bins (numpy only, so splits and evaluation run without torch).

As in MCAT, DeReF and HDMoE: quantiles of the uncensored patients' times with the outer edges
widened to the data's range, left-closed intervals. Censorship follows the TCGA convention
(1 = censored/alive, 0 = event).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def time_bin_edges(times: np.ndarray, censorship: np.ndarray, n_bins: int = 4, eps: float = 1e-6) -> np.ndarray:
    """Quantile edges of the uncensored times, first and last widened to the data's min and max."""
    times = np.asarray(times, float)
    events = times[np.asarray(censorship) < 1]
    if len(events) < n_bins:
        raise ValueError(f"{len(events)} uncensored patients cannot define {n_bins} time bins")
    _, edges = pd.qcut(events, q=n_bins, retbins=True, labels=False)
    edges[0] = times.min() - eps
    edges[-1] = times.max() + eps
    return edges


def assign_bins(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time with left-closed bins [a, b); times outside the edges go to the end bins."""
    inner = np.asarray(edges[1:-1])
    return np.searchsorted(inner, np.asarray(times, float), side="right").astype(np.int64)
