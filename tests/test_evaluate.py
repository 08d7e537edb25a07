"""Aggregation: the metric panel per fold and protocol, summaries, comparisons, risk groups, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.bins import time_bin_edges
from model.evaluate import (
    EvaluationSettings,
    Fold,
    compare_models,
    evaluation_times,
    fold_cindex,
    km_curves,
    km_statistics,
    markdown_table,
    median_split,
    metric_table,
    panel,
    summarise,
    training_median_split,
    training_quantiles,
    truncation_time,
)
from model.figures.survival import km_figure
from model.figures.training import cindex_curves
from model.metrics import NotComputable


def fold_tables(n_folds=5, per_fold=30, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    tables = []
    for fold in range(n_folds):
        risk = rng.standard_normal(per_fold)
        times = rng.exponential(20 * np.exp(-signal * risk))
        tables.append(
            pd.DataFrame(
                {
                    "patient_id": [f"F{fold}P{i}" for i in range(per_fold)],
                    "survival_months": times,
                    "censorship": rng.integers(0, 2, per_fold),
                    "risk": risk,
                    "fold": fold,
                    "epoch": 29,
                }
            )
        )
    return tables


def with_curves(table: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """Survival past each bin end from an exponential model whose rate grows with the risk."""
    survival = np.exp(-np.outer(np.exp(table["risk"]), edges[1:]) / 20)
    return table.assign(**{f"survival_{k}": survival[:, k] for k in range(len(edges) - 1)})


def cv_folds(n_folds=3, per_fold=30, seed=0, all_censored_fold=None):
    """Cross-validation folds: each fold's held-out table, the others as its training patients."""
    held = fold_tables(n_folds, per_fold, seed=seed)
    if all_censored_fold is not None:
        held[all_censored_fold] = held[all_censored_fold].assign(censorship=1)
    folds = []
    for k, test in enumerate(held):
        train = pd.concat([t for j, t in enumerate(held) if j != k], ignore_index=True).assign(fold=k)
        edges = time_bin_edges(train["survival_months"].to_numpy(), train["censorship"].to_numpy(), 4)
        folds.append(Fold(with_curves(test, edges), with_curves(train, edges), edges))
    return folds


def panel_for(folds, model="m", cohort="c"):
    oof = pd.concat([f.held for f in folds])
    horizons = evaluation_times(EvaluationSettings(), oof["survival_months"], oof["censorship"])
    tau = truncation_time(EvaluationSettings(), horizons)
    return metric_table({"honest": folds, "best_epoch": folds}, horizons, tau, 10).assign(cohort=cohort, model=model)


def test_horizons_and_truncation_time():
    default = EvaluationSettings()
    horizons = evaluation_times(default, [1.0, 2, 3, 4, 5, 100], [0, 0, 0, 0, 0, 1])
    assert horizons == pytest.approx([2.0, 3.0, 4.0]) and truncation_time(default, horizons) == 4.0
    assert list(evaluation_times(default, [5.0, 5, 5, 5, 9], [0] * 5)) == [5.0]  # coinciding quartiles
    configured = EvaluationSettings(horizons=[24.0, 12.0], truncation_time=36.0)
    assert list(evaluation_times(configured, [1.0], [1])) == [12.0, 24.0]
    assert truncation_time(configured, np.array([12.0, 24.0])) == 36.0
    with pytest.raises(NotComputable, match="no event"):
        evaluation_times(default, [1.0, 2.0], [1, 1])


def test_fold_cindex_rows():
    cindex = fold_cindex({"honest": fold_tables(), "best_epoch": fold_tables(seed=1)})
    assert list(cindex["fold"][cindex["protocol"] == "honest"]) == [0, 1, 2, 3, 4]
    assert cindex["c_index"].between(0, 1).all()


def test_metric_table_has_every_metric_per_fold_and_a_pooled_row():
    metrics = panel_for(cv_folds())
    honest = metrics[metrics["protocol"] == "honest"]
    assert list(honest["fold"]) == [0, 1, 2, "pooled"]
    per_fold = honest.iloc[:3]
    for column in ("harrell_c", "uno_c", "iauc", "ibs", "dcal_p"):
        assert per_fold[column].notna().all(), column
    assert (per_fold["harrell_c"] > 0.6).all() and (per_fold["ibs"] < 0.25).all()  # the planted signal
    pooled = honest.iloc[3]
    assert pooled["n_patients"] == 90 and np.isfinite(pooled["harrell_c"]) and np.isfinite(pooled["dcal_p"])
    assert np.isnan(pooled["uno_c"]) and "per fold only" in pooled["reason"]
    assert len([c for c in metrics.columns if c.startswith("auc_")]) == 3  # the quartiles of the event times


def test_all_censored_fold_is_nan_with_its_reason_and_k_of_k():
    metrics = panel_for(cv_folds(all_censored_fold=1))
    fold = metrics[(metrics["protocol"] == "honest") & (metrics["fold"] == 1)].iloc[0]
    assert np.isnan(fold["harrell_c"]) and np.isnan(fold["uno_c"]) and np.isnan(fold["iauc"])
    assert "harrell_c: no event" in fold["reason"] and "ibs: no event" in fold["reason"]
    assert np.isfinite(fold["dcal_p"])  # D-calibration spreads the censored patients, it needs no event
    summary = summarise(metrics).set_index("protocol")
    assert summary.loc["honest", "harrell_c_folds"] == "2 of 3"
    values = metrics[(metrics["protocol"] == "honest") & metrics["fold"].isin([0, 2])]["harrell_c"]
    assert summary.loc["honest", "harrell_c_mean"] == pytest.approx(values.mean())
    assert summary.loc["honest", "harrell_c_std"] == pytest.approx(np.std(values))  # population std
    assert "harrell_c: fold 1: no event" in summary.loc["honest", "reason"]


def test_tau_is_clipped_to_the_training_follow_up_and_noted():
    folds = cv_folds()
    metrics = metric_table({"honest": folds}, np.array([5.0, 10.0]), 1e4, 10)
    fold_rows = metrics[metrics["fold"] != "pooled"]
    ends = [f.train["survival_months"].max() for f in folds]
    assert fold_rows["tau"].to_numpy() == pytest.approx(ends)
    assert fold_rows["reason"].str.contains("tau: clipped").all()


def test_summary_survives_a_tsv_round_trip(tmp_path):
    metrics = panel_for(cv_folds(all_censored_fold=0))
    metrics.to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    again = summarise(pd.read_csv(tmp_path / "m.tsv", sep="\t"))
    assert again.set_index("protocol").loc["honest", "harrell_c_folds"] == "2 of 3"


def test_leak_free_cut_off_uses_the_training_medians():
    # fold 0's training patients have high risks, fold 1's low ones: the cut-offs differ from the
    # pooled held-out median (2.5), and so do the groups
    held = [
        pd.DataFrame({"patient_id": list("abc"), "risk": [0.0, 1.0, 2.0], "fold": 0}),
        pd.DataFrame({"patient_id": list("def"), "risk": [3.0, 4.0, 5.0], "fold": 1}),
    ]
    train = [
        pd.DataFrame({"risk": [1.5, 1.6, 10.0], "fold": 0}),
        pd.DataFrame({"risk": [-1.0, 0.0, 3.5], "fold": 1}),
    ]
    rng = np.random.default_rng(0)
    held = [h.assign(survival_months=rng.exponential(10, 3), censorship=[0, 0, 1]) for h in held]
    honest = training_median_split(held, train)
    assert honest.thresholds == (1.6, 0.0)
    groups = honest.table.set_index("patient_id")["group"]
    assert list(groups) == ["low risk", "low risk", "high risk", "high risk", "high risk", "high risk"]
    paper = median_split(pd.concat(held))
    assert paper.thresholds == (2.5,) and (paper.table["group"] == "high risk").sum() == 3
    assert km_statistics(honest)["n_high"] == 4 and km_statistics(honest)["thresholds"] == "1.6;0"
    with pytest.raises(ValueError, match="paired with training fold"):
        training_median_split(held, train[::-1])


def test_training_quantiles_put_every_fold_on_one_scale():
    # each fold ranks its own patients perfectly, but fold 1's model outputs risks 10 higher: pooled
    # raw risks pair fold 1's low-risk patient above fold 0's high-risk one, training quantiles do not
    times = {"a": 1.0, "b": 4.0, "c": 2.0, "d": 5.0}
    held = [
        pd.DataFrame({"patient_id": ["a", "b"], "risk": [2.0, 0.0], "fold": 0}),
        pd.DataFrame({"patient_id": ["c", "d"], "risk": [12.0, 10.0], "fold": 1}),
    ]
    held = [h.assign(survival_months=h["patient_id"].map(times), censorship=0) for h in held]
    train = [
        pd.DataFrame({"risk": [-1.0, 1.0, 2.0, 3.0], "fold": 0}),
        pd.DataFrame({"risk": [9.0, 11.0, 12.0, 13.0], "fold": 1}),
    ]
    oof = training_quantiles(held, train).set_index("patient_id")
    # a: 2 of 4 below and one tie -> 2.5 / 4; b: 1 of 4 below -> 0.25; c and d the same in fold 1
    assert oof["risk_train_quantile"].to_dict() == {"a": 0.625, "b": 0.25, "c": 0.625, "d": 0.25}
    assert oof["risk"].to_dict() == {"a": 2.0, "b": 0.0, "c": 12.0, "d": 10.0}
    row = compare_models({"m": oof.reset_index()}, "m", 20, seed=1).iloc[0]
    # raw, earlier death first: a-c no (2 < 12), a-b yes, a-d no (2 < 10), c-b yes, c-d yes, b-d no -> 3 of 6
    assert row["pooled_c"] == pytest.approx(0.5)
    # quantiles: a-b yes, a-c tie (0.5), a-d yes, c-b yes, c-d yes, b-d tie (0.5) -> 5 of 6
    assert row["pooled_c_train_quantile"] == pytest.approx(5 / 6)
    plain = compare_models({"m": oof.reset_index().drop(columns="risk_train_quantile")}, "m", 20, seed=1).iloc[0]
    assert np.isnan(plain["pooled_c_train_quantile"]) and "no training-patient quantiles" in plain["reason"]
    with pytest.raises(ValueError, match="paired with training fold"):
        training_quantiles(held, train[::-1])


def test_one_group_gives_a_nan_log_rank_with_its_reason(tmp_path):
    held = [pd.DataFrame({"patient_id": list("abcd"), "risk": [5.0, 6, 7, 8], "fold": 0})]
    held = [held[0].assign(survival_months=[1.0, 2, 3, 4], censorship=[0, 0, 1, 0])]
    km = training_median_split(held, [pd.DataFrame({"risk": [0.0, 1.0], "fold": 0})])
    assert np.isnan(km.p_value) and km.reason == "every patient falls in one group"
    km_figure(km_curves(km), "one group", km.p_value, [tmp_path / "km.pdf"])
    assert (tmp_path / "km.pdf").read_bytes()[:4] == b"%PDF"


def oof_tables(n=60, seed=0):
    rng = np.random.default_rng(seed)
    risk = rng.standard_normal(n)
    base = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "survival_months": rng.exponential(20 * np.exp(-1.5 * risk)),
            "censorship": rng.integers(0, 2, n),
        }
    )
    return {
        "deref": base.assign(risk=risk),
        "coxph": base.assign(risk=rng.standard_normal(n)),
        "twin": base.assign(risk=risk),
    }


def test_paired_bootstrap_comparison():
    oof = oof_tables()
    comparison = compare_models(oof, "coxph", 50, seed=1).set_index("model")
    better = comparison.loc["deref"]
    assert better["delta_c"] > 0.15 and better["delta_low"] > 0 and better["delta_p"] < 0.05
    assert better["pooled_c_low"] < better["pooled_c"] < better["pooled_c_high"]
    assert np.isnan(comparison.loc["coxph", "delta_c"]) and "reference model" in comparison.loc["coxph", "reason"]
    same = compare_models(oof, "deref", 20, seed=1).set_index("model").loc["twin"]
    assert same["delta_c"] == 0 and same["delta_p"] == 1.0
    absent = compare_models({"deref": oof["deref"]}, "coxph", 20, seed=1).iloc[0]
    assert np.isnan(absent["delta_p"]) and "not trained on this cohort" in absent["reason"]
    # a model that left a patient out (no usable slide): every model is compared on the common patients
    fewer = compare_models({"deref": oof["deref"].iloc[1:], "coxph": oof["coxph"]}, "coxph", 20, seed=1)
    fewer = fewer.set_index("model")
    common = compare_models({"deref": oof["deref"].iloc[1:], "coxph": oof["coxph"].iloc[1:]}, "coxph", 20, seed=1)
    assert fewer["pooled_c"].tolist() == common["pooled_c"].tolist()
    assert (fewer["n_patients"] == len(oof["deref"]) - 1).all()
    assert (
        "compared on the 59 patients every model holds out (1 of this model's left out" in fewer.loc["coxph", "reason"]
    )
    assert "compared on" not in fewer.loc["deref", "reason"]
    with pytest.raises(ValueError, match="deref: holds out patient"):
        compare_models({"deref": pd.concat([oof["deref"], oof["deref"].iloc[:1]])}, "coxph", 20, seed=1)


def test_markdown_table_panel():
    one = summarise(panel_for(cv_folds(all_censored_fold=2)))
    summary = pd.concat([one.assign(cohort=c, model=m) for c in ("tcga", "liver") for m in ("deref", "coxph")])
    comparison = pd.concat(
        [compare_models(oof_tables(), "coxph", 20, seed=1).assign(cohort=c) for c in ("tcga", "liver")]
    )
    table = panel(summary, comparison)
    best = table[table["protocol"] == "best_epoch"]
    assert best["reason"].str.contains("honest protocol only").all()
    text = markdown_table(table, {"deref": "DeReF", "coxph": "Cox PH"})
    assert "**tcga, honest: selected epoch**" in text and "optimistic" in text
    assert text.count("| DeReF |") == 4 and "ΔC vs coxph (p)" in text
    assert "(2 of 3 folds)" in text and " ± " in text and "| reference |" in text and "n/a" in text
    assert "left out" not in text
    # a model that left out patients without a usable slide: counted per fold, in total, and in the text
    folds = cv_folds()
    oof = pd.concat([f.held for f in folds])
    horizons = evaluation_times(EvaluationSettings(), oof["survival_months"], oof["censorship"])
    metrics = metric_table({"honest": folds}, horizons, 24.0, 10, [["P7"], [], ["P8", "P9"]])
    assert metrics["n_excluded"].tolist() == [1, 0, 2, 3] and metrics["excluded"].iloc[-1] == "P7, P8, P9"
    fewer = summarise(metrics.assign(cohort="tcga", model="deref"))
    assert fewer["n_excluded"].tolist() == [3]
    text = markdown_table(panel(fewer, comparison[comparison["cohort"] == "tcga"]), {"deref": "DeReF"})
    assert "DeReF: 3 patient(s) left out, their slides or MRI excluded (P7, P8, P9)" in text


def test_median_split_separates_a_planted_signal(tmp_path):
    oof = pd.concat(fold_tables(signal=1.5), ignore_index=True)
    km = median_split(oof)
    assert km.p_value < 0.01 and set(km.table["group"]) == {"high risk", "low risk"}
    assert (km.table["group"] == "high risk").sum() == 75 and km.c_index > 0.65
    null = median_split(pd.concat(fold_tables(signal=0.0, seed=5), ignore_index=True))
    assert null.p_value > km.p_value

    km_figure(km_curves(km), "test", km.p_value, [tmp_path / "km.png", tmp_path / "km.pdf"])
    assert (tmp_path / "km.png").stat().st_size > 10_000 and (tmp_path / "km.pdf").read_bytes()[:4] == b"%PDF"


def test_median_split_needs_patients():
    with pytest.raises(ValueError, match="too few"):
        median_split(fold_tables(n_folds=1, per_fold=3)[0])


def test_cindex_curves_figure(tmp_path):
    logs = [
        pd.DataFrame(
            {"epoch": range(4), "train_c_index": [0.5, 0.6, 0.7, 0.8], "held_out_c_index": [0.5, 0.55, 0.6, 0.58]}
        )
        for _ in range(3)
    ]
    cindex_curves(logs, "curves", [tmp_path / "c.png"])
    assert (tmp_path / "c.png").stat().st_size > 5_000 and not list(tmp_path.glob(".tmp*"))
