"""Each survival metric against a hand-computed case or its reference library, and its NaN reasons."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index
from scipy.stats import chi2

from model.metrics import (
    NotComputable,
    bootstrap_harrell_c,
    bootstrap_indices,
    censor_at,
    checked_harrell_c,
    d_calibration,
    harrell_c,
    integrated_brier,
    outcomes,
    paired_bootstrap_p,
    percentile_interval,
    step_survival,
    survival_at_own_time,
    time_dependent_auc,
    uno_c,
)


def random_outcomes(n=80, seed=0):
    rng = np.random.default_rng(seed)
    risk = rng.standard_normal(n)
    return rng.exponential(20 * np.exp(-risk)), rng.integers(0, 2, n), risk


def test_harrell_c_agrees_with_lifelines():
    times, censorship, risk = random_outcomes()
    expected = concordance_index(times, -risk, 1 - censorship)
    assert harrell_c(times, censorship, risk) == pytest.approx(expected)
    assert checked_harrell_c(times, censorship, risk) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("times", "censorship", "reason"),
    [
        ([1.0, 2.0, 3.0], [1, 1, 1], "no event"),
        ([4.0], [0], "fewer than 2 patients"),
        ([5.0, 3.0], [0, 1], "no comparable pair"),  # the only event is the last time
    ],
)
def test_harrell_c_reasons(times, censorship, reason):
    assert np.isnan(harrell_c(times, censorship, np.arange(len(times), dtype=float)))
    with pytest.raises(NotComputable, match=reason):
        checked_harrell_c(times, censorship, np.arange(len(times), dtype=float))


# Training patients: one censored at 2 among four, so the censoring survival G is 1 before 2 and
# 2/3 from 2 on (three at risk at 2, one censored).
TRAIN = outcomes([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 0])


def test_uno_c_by_hand():
    test = outcomes([1.5, 2.5, 3.5], [0, 0, 0])
    risk = np.array([3.0, 1.0, 2.0])
    # pairs (1.5, 2.5) and (1.5, 3.5) concordant with weight 1/G(1.5)^2 = 1; (2.5, 3.5) discordant
    # with weight 1/G(2.5)^2 = 9/4; Harrell's C would be 2/3
    assert uno_c(TRAIN, test, risk, tau=3.0) == pytest.approx(2 / (2 + 9 / 4))
    assert uno_c(TRAIN, test, risk, tau=2.0) == pytest.approx(1.0)  # only pairs starting before 2
    with pytest.raises(ValueError, match="largest training time"):
        uno_c(TRAIN, test, risk, tau=5.0)
    with pytest.raises(NotComputable, match="no event before tau"):
        uno_c(TRAIN, test, risk, tau=1.0)
    with pytest.raises(NotComputable, match="no event"):
        uno_c(TRAIN, outcomes([1.5, 2.5], [1, 1]), risk[:2], tau=3.0)
    with pytest.raises(NotComputable, match="fewer than 2"):
        uno_c(TRAIN, outcomes([1.5], [0]), risk[:1], tau=3.0)


def test_time_dependent_auc_by_hand():
    train = outcomes([1.0, 2.0, 3.0, 5.0], [0, 0, 0, 0])  # no censoring: G = 1
    test = outcomes([1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0])
    risk = np.array([4.0, 2.0, 3.0, 1.0])
    result = time_dependent_auc(train, test, risk, [0.5, 2.5, 3.5, 10.0])
    # 2.5: cases risks {4, 2}, controls {3, 1}: 3 of 4 pairs ordered; 3.5: cases {4, 2, 3}, control {1}
    assert result.auc[1:3] == pytest.approx([0.75, 1.0])
    assert np.isnan(result.auc[[0, 3]]).all()
    # mean weighted by the test KM drops: S(2.5) = 1/2, S(3.5) = 1/4
    assert result.mean == pytest.approx((0.75 * 0.5 + 1.0 * 0.25) / 0.75)
    notes = " ".join(result.notes)
    assert "outside the test follow-up" in notes and "largest training time" in notes and "2 of 4" in notes
    with pytest.raises(NotComputable, match="no usable horizon"):
        time_dependent_auc(train, test, risk, [10.0])
    with pytest.raises(NotComputable, match="no event"):
        time_dependent_auc(train, outcomes([1.0, 2.0, 3.0], [1, 1, 1]), risk[:3], [2.5])
    with pytest.raises(NotComputable, match="training patients"):
        time_dependent_auc(outcomes([1.0, 5.0], [1, 1]), test, risk, [2.5])


def test_censor_at_only_changes_follow_up_beyond_the_end():
    y = censor_at(outcomes([1.0, 4.0, 6.0, 9.0], [0, 0, 0, 1]), 6.0)
    assert list(y["time"]) == [1.0, 4.0, 6.0, 6.0] and list(y["event"]) == [True, True, False, False]


def test_step_survival_convention():
    edges = np.array([0.0, 10.0, 20.0, 30.0])
    curves = np.array([[0.9, 0.6, 0.3], [0.8, 0.5, 0.1]])
    values = step_survival(curves, edges, [5.0, 10.0, 15.0, 25.0, 40.0])
    assert values[0] == pytest.approx([1.0, 0.9, 0.9, 0.6, 0.3])
    assert survival_at_own_time(curves, edges, [15.0, 30.0]) == pytest.approx([0.9, 0.1])
    with pytest.raises(ValueError, match="do not match"):
        step_survival(curves, edges[:-1], [1.0])


def test_integrated_brier_by_hand():
    train = outcomes([1.0, 2.0, 4.0, 6.0], [0, 0, 0, 0])  # G = 1
    test = outcomes([1.0, 3.0, 5.0], [0, 0, 0])
    # S = 0.5 from 0.5 months on: every patient adds 0.25 at every time, case or control
    assert integrated_brier(train, test, np.full((3, 2), 0.5), np.array([0.0, 0.5, 10.0])) == pytest.approx(0.25)
    # each curve drops to 0 exactly at the patient's event time: a perfect prediction
    perfect = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]], float)
    assert integrated_brier(train, test, perfect, np.array([0.0, 1.0, 3.0, 5.0, 7.0])) == pytest.approx(0.0)
    with pytest.raises(NotComputable, match="fewer than 2"):
        integrated_brier(train, test[:1], perfect[:1], np.array([0.0, 1.0, 3.0, 5.0, 7.0]))


def test_d_calibration_by_hand():
    # 4 bins; events at S = 0.1 (bin 0) and 0.6 (bin 2); censored at S = 0.5 spreads 1/2 over bins 0
    # and 1; censored at S = 0.8 gives 0.25/0.8 to bins 0-2 and 0.05/0.8 to bin 3
    statistic, p = d_calibration(np.array([0.1, 0.6, 0.5, 0.8]), np.array([0, 0, 1, 1]), n_bins=4)
    counts = np.array([1 + 0.5 + 0.3125, 0.5 + 0.3125, 1 + 0.3125, 0.0625])
    assert counts.sum() == pytest.approx(4)
    assert statistic == pytest.approx(((counts - 1) ** 2).sum()) == pytest.approx(1.671875)
    assert p == pytest.approx(chi2.sf(1.671875, 3))
    uniform = d_calibration(np.arange(10) / 10 + 0.05, np.zeros(10, int))
    assert uniform == pytest.approx((0.0, 1.0))
    assert d_calibration(np.array([1.0, 0.0]), np.array([0, 1]), n_bins=2)[0] == pytest.approx(0.0)
    with pytest.raises(NotComputable, match="fewer than 2"):
        d_calibration(np.array([0.5]), np.array([0]))


def test_bootstrap_is_seeded_and_paired_p_values():
    times, censorship, risk = random_outcomes(n=60)
    indices = bootstrap_indices(60, 100, seed=3)
    assert (indices == bootstrap_indices(60, 100, seed=3)).all() and indices.shape == (100, 60)
    good = bootstrap_harrell_c(times, censorship, risk, indices)
    noise = bootstrap_harrell_c(times, censorship, np.random.default_rng(9).standard_normal(60), indices)
    low, high = percentile_interval(good)
    assert low < harrell_c(times, censorship, risk) < high
    assert paired_bootstrap_p(good - good) == 1.0
    assert paired_bootstrap_p(good - noise) == pytest.approx(2 / 101)  # every resample favours the signal
    assert 0.05 < paired_bootstrap_p(np.random.default_rng(1).standard_normal(500)) <= 1
    with pytest.raises(NotComputable):
        percentile_interval(np.full(5, np.nan))
