"""Harrell's C-index as the reference computes it (scikit-survival), free of torch."""

from __future__ import annotations

import numpy as np
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored


def harrell_c(times: np.ndarray, censorship: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (scikit-survival), with censorship = 1 meaning censored; NaN with no comparable pair."""
    if not np.any(np.asarray(censorship) == 0):
        return float("nan")
    try:
        return float(
            concordance_index_censored(
                (np.asarray(censorship) == 0), np.asarray(times, float), np.asarray(risk, float), tied_tol=1e-8
            )[0]
        )
    except NoComparablePairException:
        return float("nan")
