"""Survival metrics on saved predictions, free of torch (scikit-survival, scipy).

Censorship follows the TCGA convention (1 = censored, 0 = event). ``harrell_c`` returns NaN where
no pair is comparable, as training logs need; the evaluation's metrics raise ``NotComputable``
instead, whose message is the reason written next to the NaN in the tables.

IPCW metrics (Uno's C, cumulative/dynamic AUC, Brier score) estimate the censoring distribution
by Kaplan-Meier on the fold's training patients. That estimate ends at the largest training time,
so test follow-up is administratively censored there (``censor_at``) and every evaluation time
must lie below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chisquare
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv


class NotComputable(ValueError):
    """The metric is undefined on these patients; the message says why."""


def harrell_c(times: np.ndarray, censorship: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (scikit-survival), with censorship = 1 meaning censored; NaN with no comparable pair."""
    if len(censorship) < 2 or not np.any(np.asarray(censorship) == 0):
        return float("nan")
    try:
        with np.errstate(invalid="ignore"):  # pairs tied in time only: 0/0, NaN
            return float(
                concordance_index_censored(
                    (np.asarray(censorship) == 0), np.asarray(times, float), np.asarray(risk, float), tied_tol=1e-8
                )[0]
            )
    except NoComparablePairException:
        return float("nan")


def outcomes(times: np.ndarray, censorship: np.ndarray) -> np.ndarray:
    """scikit-survival's structured outcome array (fields ``event``, ``time``) from TCGA censorship."""
    return Surv.from_arrays(event=np.asarray(censorship) == 0, time=np.asarray(times, float))


def censor_at(y: np.ndarray, end: float) -> np.ndarray:
    """Follow-up from ``end`` on becomes censored at ``end``: no metric at times below ``end`` changes."""
    return Surv.from_arrays(event=y["event"] & (y["time"] < end), time=np.minimum(y["time"], end))


def _require_events(y: np.ndarray, train: np.ndarray | None = None) -> None:
    """Test patients need two patients and an event; training ones (scikit-survival's IPCW) an event."""
    if train is not None and not train["event"].any():
        raise NotComputable("no event among the training patients")
    if len(y) < 2:
        raise NotComputable("fewer than 2 patients")
    if not y["event"].any():
        raise NotComputable("no event (all patients censored)")


def checked_harrell_c(times: np.ndarray, censorship: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C, raising NotComputable (fewer than 2 patients, no event, no comparable pair) for NaN."""
    _require_events(outcomes(times, censorship))
    value = harrell_c(times, censorship, risk)
    if np.isnan(value):
        raise NotComputable("no comparable pair")
    return value


def uno_c(train: np.ndarray, test: np.ndarray, risk: np.ndarray, tau: float) -> float:
    """Uno's C over pairs whose earlier time is below ``tau`` (IPCW from the training patients).

    ``tau`` must not exceed the largest training time, where the censoring estimate ends.
    """
    if tau > train["time"].max():
        raise ValueError(f"tau = {tau} lies beyond the largest training time {train['time'].max()}")
    _require_events(test, train)
    if not (test["event"] & (test["time"] < tau)).any():
        raise NotComputable(f"no event before tau = {tau:.4g} months")
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # all weights 0: NaN, reported below
            value = concordance_index_ipcw(train, test, np.asarray(risk, float), tau=tau)[0]
    except NoComparablePairException as error:
        raise NotComputable("no comparable pair") from error
    if not np.isfinite(value):
        raise NotComputable(f"no comparable pair before tau = {tau:.4g} months")
    return float(value)


@dataclass(frozen=True)
class HorizonAUC:
    """Cumulative/dynamic AUC per horizon (NaN where undefined, ``notes`` say why) and its mean."""

    auc: np.ndarray
    mean: float
    notes: tuple[str, ...]


def time_dependent_auc(train: np.ndarray, test: np.ndarray, risk: np.ndarray, horizons: np.ndarray) -> HorizonAUC:
    """Cumulative/dynamic AUC at each horizon and its integrated mean (scikit-survival).

    ``horizons`` must increase. A horizon needs a case (event at or before it) among the test
    patients, and must lie inside the test follow-up (so a control follows it) and below the
    largest training time; the others are NaN with a note, and the mean (weighted by the test
    Kaplan-Meier, as scikit-survival does) is over the rest. NotComputable when none is usable.
    """
    horizons = np.asarray(horizons, float)
    end = float(train["time"].max())
    if len(horizons) == 0:
        raise NotComputable("no horizon")
    if np.any(np.diff(horizons) <= 0):
        raise ValueError(f"horizons must increase: {horizons}")
    _require_events(test, train)
    test = censor_at(test, end)
    usable, notes = np.zeros(len(horizons), bool), []
    for i, h in enumerate(horizons):
        if h >= end:
            notes.append(f"{h:.4g} months: at or beyond the largest training time {end:.4g}")
        elif h < test["time"].min() or h >= test["time"].max():
            notes.append(f"{h:.4g} months: outside the test follow-up")
        elif not (test["event"] & (test["time"] <= h)).any():
            notes.append(f"{h:.4g} months: no event by then")
        else:
            usable[i] = True
    if not usable.any():
        raise NotComputable("no usable horizon (" + "; ".join(notes) + ")")
    auc = np.full(len(horizons), np.nan)
    auc[usable], mean = cumulative_dynamic_auc(train, test, np.asarray(risk, float), horizons[usable])
    if usable.sum() < len(horizons):
        notes.append(f"mean over {usable.sum()} of {len(horizons)} horizons")
    return HorizonAUC(auc, float(mean), tuple(notes))


def step_survival(curves: np.ndarray, edges: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Discrete survival curves as step functions of time: patients x times.

    ``curves[:, k]`` is the probability of surviving past bin k, whose bins are ``[edges[k],
    edges[k+1])``. S(t) = 1 before the end of bin 0 (``edges[1]``), and ``curves[:, k]`` from the
    end of bin k until the end of bin k+1; the last value holds beyond the last edge. So S is
    right-continuous and only drops where the model's own bins say survival was assessed.
    """
    return _padded(curves, edges)[:, _steps(edges, times)]


def survival_at_own_time(curves: np.ndarray, edges: np.ndarray, times: np.ndarray) -> np.ndarray:
    """S_i(t_i): each patient's step survival function (as ``step_survival``) at their own time."""
    padded = _padded(curves, edges)
    return padded[np.arange(len(padded)), _steps(edges, times)]


def _padded(curves: np.ndarray, edges: np.ndarray) -> np.ndarray:
    curves = np.atleast_2d(np.asarray(curves, float))
    if curves.shape[1] != len(edges) - 1:
        raise ValueError(f"{curves.shape[1]} survival columns do not match {len(edges)} bin edges")
    return np.hstack([np.ones((len(curves), 1)), curves])


def _steps(edges: np.ndarray, times: np.ndarray) -> np.ndarray:
    """How many bins have ended by each time: the column of the padded curve [1, S_0, ..]."""
    return np.searchsorted(np.asarray(edges[1:], float), np.asarray(times, float), side="right")


def integrated_brier(
    train: np.ndarray, test: np.ndarray, curves: np.ndarray, edges: np.ndarray, n_times: int = 100
) -> float:
    """Integrated Brier score (scikit-survival) of the step survival curves on an even time grid.

    The grid has ``n_times`` points from the first test time up to (excluding) the last test time
    or the largest training time, whichever comes first (IPCW is undefined beyond the latter).
    scikit-survival refuses a test set without an event.
    """
    _require_events(test, train)
    end = float(train["time"].max())
    start, stop = float(test["time"].min()), min(float(test["time"].max()), end)
    if stop <= start:
        raise NotComputable("no follow-up range (the first test time is at or after the last usable one)")
    test = censor_at(test, end)
    if not test["event"].any():
        raise NotComputable(f"no event before the largest training time {end:.4g} months")
    grid = np.linspace(start, stop, n_times, endpoint=False)
    return float(integrated_brier_score(train, test, step_survival(curves, edges, grid), grid))


def d_calibration(survival: np.ndarray, censorship: np.ndarray, n_bins: int = 10) -> tuple[float, float]:
    """D-calibration (Haider et al. 2020, JMLR 21:85): chi-square statistic and p-value vs uniform.

    ``survival`` is S_i(t_i) at each patient's own time. Bins are [j/B, (j+1)/B), the last closed.
    An event adds 1 to the bin holding S_i(t_i). A patient censored at c with s = S_i(c) > 0 only
    says that S_i(T) < s, so as in the paper 1 is spread uniformly over [0, s): a full bin below s gets
    (1/B)/s, the bin holding s gets (s - its lower bound)/s; s = 0 puts 1 in the lowest bin.
    """
    s = np.clip(np.asarray(survival, float), 0.0, 1.0)
    censored = np.asarray(censorship) == 1
    if len(s) < 2:
        raise NotComputable("fewer than 2 patients")
    lower = np.arange(n_bins) / n_bins
    counts = np.bincount(np.minimum((s[~censored] * n_bins).astype(int), n_bins - 1), minlength=n_bins).astype(float)
    for value in s[censored]:
        if value == 0:
            counts[0] += 1
        else:
            counts += np.clip(value - lower, 0, 1 / n_bins) / value
    result = chisquare(counts)
    return float(result.statistic), float(result.pvalue)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Patient indices of ``n_boot`` resamples with replacement (one row each), seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_harrell_c(times: np.ndarray, censorship: np.ndarray, risk: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Harrell's C on each resample of patients (rows of ``indices``); NaN where a resample has no pair."""
    times, censorship, risk = (np.asarray(a, float) for a in (times, censorship, risk))
    return np.array([harrell_c(times[rows], censorship[rows], risk[rows]) for rows in indices])


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval over the finite resample values."""
    finite = np.asarray(values, float)[np.isfinite(values)]
    if len(finite) == 0:
        raise NotComputable("no resample has a comparable pair")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of a paired bootstrap difference being 0.

    Twice the smaller share of resampled differences on either side of 0 (each count + 1 over
    resamples + 1, so it is never 0), at most 1: the smallest level at which the percentile
    interval excludes 0. Identical models give differences of exactly 0 and p = 1.
    """
    finite = np.asarray(differences, float)[np.isfinite(differences)]
    if len(finite) == 0:
        raise NotComputable("no resample has a comparable pair")
    below, above = (finite <= 0).sum(), (finite >= 0).sum()
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(finite) + 1)))
