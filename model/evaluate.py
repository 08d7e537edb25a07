"""Cross-validation results: the metric panel per fold and protocol, model comparisons, risk groups.

Protocols: ``honest`` is each fold's selected epoch (last epoch, or the inner-validation pick);
``best_epoch`` is the reference protocol (the epoch with the best C-index on the reported fold),
which is optimistic and always labelled so. Mean ± std over folds uses the population std
(ddof = 0), as the reference's ``np.std``, over the folds where the metric exists ("k of K folds"
otherwise). Pooled statistics concatenate the held-out predictions of every fold, each patient
once, as MCAT's evaluation notebook does, although the folds' risk scales may differ. To show how
much of a pooled C-index is lost to that, the comparison also scores each held-out risk by its
quantile among the same fold's training-patient risks (``training_quantiles``): leak-free, and
unchanged within a fold, it puts every fold on one scale. It is a diagnostic beside the pooled C.

Risk groups: the honest split cuts each fold's held-out patients at the median predicted risk of
that fold's training patients; the paper's split cuts the pooled held-out predictions at their own
median, so the test patients' risks choose the threshold they are judged by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from model.metrics import (
    NotComputable,
    bootstrap_harrell_c,
    bootstrap_indices,
    checked_harrell_c,
    d_calibration,
    harrell_c,
    integrated_brier,
    outcomes,
    paired_bootstrap_p,
    percentile_interval,
    survival_at_own_time,
    time_dependent_auc,
    uno_c,
)
from model.package import risk_groups

PROTOCOLS = {
    "honest": "honest: selected epoch",
    "best_epoch": "reference protocol: best epoch on the reported fold (optimistic)",
}
FOLD_METRICS = {"harrell_c": "Harrell's C", "uno_c": "Uno's C", "iauc": "iAUC", "ibs": "IBS"}
SPLITS = {
    "training_median": "leak-free cut-off: median risk of each fold's training patients",
    "paper": "paper: median of pooled test predictions, uses the test patients' own risks",
    "package": "a model package's fixed cut-off: median risk of its training cohort's patients",
}
POOLED = "pooled"
PER_FOLD_ONLY = "uno_c, iauc, ibs: per fold only (censoring weights come from each fold's training patients)"


@dataclass(frozen=True)
class EvaluationSettings:
    """The config's ``evaluation:`` block (defaults as in the config schema)."""

    horizons: Sequence[float] | None = None
    truncation_time: float | None = None
    bootstrap: int = 1000
    seed: int = 1
    reference_model: str = "coxph"
    calibration_bins: int = 10


@dataclass(frozen=True)
class Fold:
    """One fold's held-out predictions (one protocol), its training patients and its survival bins."""

    held: pd.DataFrame
    train: pd.DataFrame  # patient_id, survival_months, censorship, risk (selected epoch), ...
    edges: np.ndarray  # bin edges in months, fold.json's "bin_edges"


def fold_cindex(predictions: Mapping[str, Sequence[pd.DataFrame]]) -> pd.DataFrame:
    """protocol -> per-fold prediction tables  ->  one row per (protocol, fold): C-index, epoch, n."""
    rows = []
    for protocol, tables in predictions.items():
        for table in tables:
            rows.append(
                {
                    "protocol": protocol,
                    "fold": int(table["fold"].iloc[0]),
                    "epoch": int(table["epoch"].iloc[0]),
                    "n_patients": len(table),
                    "n_events": int((table["censorship"] == 0).sum()),
                    "c_index": harrell_c(table["survival_months"], table["censorship"], table["risk"]),
                }
            )
    return pd.DataFrame(rows).sort_values(["protocol", "fold"], ignore_index=True)


def evaluation_times(settings: EvaluationSettings, times: np.ndarray, censorship: np.ndarray) -> np.ndarray:
    """AUC horizons in months, distinct and increasing: the configured ones, else the quartiles of
    the cohort's event times (fewer when quartiles coincide)."""
    if settings.horizons:
        return np.unique(np.asarray(settings.horizons, float))
    events = np.asarray(times, float)[np.asarray(censorship) == 0]
    if len(events) == 0:
        raise NotComputable("no event in the cohort to place the default horizons")
    return np.unique(np.quantile(events, [0.25, 0.5, 0.75]))


def survival_columns(table: pd.DataFrame) -> list[str]:
    """survival_0 .. survival_{K-1}, in bin order."""
    columns = [c for c in table.columns if c.startswith("survival_") and c.removeprefix("survival_").isdigit()]
    return sorted(columns, key=lambda c: int(c.removeprefix("survival_")))


def _attempt(notes: list[str], name: str, compute: Callable[[], Any]) -> Any:
    """The metric's value, or None with '<name>: <reason>' noted when it is not computable."""
    try:
        return compute()
    except NotComputable as reason:
        notes.append(f"{name}: {reason}")
        return None


def _auc_column(horizon: float) -> str:
    return f"auc_{horizon:.4g}"


def truncation_time(settings: EvaluationSettings, horizons: np.ndarray) -> float:
    """Uno's C truncation time tau: the configured one, else the last horizon (NaN without horizons)."""
    if settings.truncation_time is not None:
        return float(settings.truncation_time)
    return float(horizons[-1]) if len(horizons) else np.nan


def fold_metrics(fold: Fold, horizons: np.ndarray, tau: float, bins: int) -> dict[str, Any]:
    """Every metric of one fold's held-out predictions; NaN where undefined, the reasons in ``reason``.

    ``tau`` (Uno's C) is clipped to the fold's largest training time, where the censoring estimate
    ends; the clipping is noted.
    """
    held, notes = fold.held, []
    test = outcomes(held["survival_months"], held["censorship"])
    train = outcomes(fold.train["survival_months"], fold.train["censorship"])
    risk, curves = held["risk"].to_numpy(float), held[survival_columns(held)].to_numpy(float)
    end = float(train["time"].max())
    row: dict[str, Any] = {
        "fold": int(held["fold"].iloc[0]),
        "epoch": int(held["epoch"].iloc[0]),
        "n_patients": len(held),
        "n_events": int(test["event"].sum()),
        "harrell_c": _attempt(notes, "harrell_c", lambda: checked_harrell_c(test["time"], held["censorship"], risk)),
        "tau": min(tau, end) if np.isfinite(tau) else np.nan,
    }
    if tau > end:
        notes.append(f"tau: clipped from {tau:.4g} to the largest training time {end:.4g} months")
    row["uno_c"] = _attempt(notes, "uno_c", lambda: _uno(train, test, risk, row["tau"]))
    auc = _attempt(notes, "iauc", lambda: time_dependent_auc(train, test, risk, horizons))
    values = np.full(len(horizons), np.nan) if auc is None else auc.auc
    row |= {_auc_column(h): a for h, a in zip(horizons, values, strict=True)}
    row["iauc"] = None if auc is None else auc.mean
    notes += [] if auc is None else [f"auc: {note}" for note in auc.notes]
    row["ibs"] = _attempt(notes, "ibs", lambda: integrated_brier(train, test, curves, fold.edges))
    s = survival_at_own_time(curves, fold.edges, test["time"])
    row |= _calibration(notes, s, held["censorship"], bins)
    return _finish(row, notes)


def _uno(train: np.ndarray, test: np.ndarray, risk: np.ndarray, tau: float) -> float:
    if not np.isfinite(tau):
        raise NotComputable("no truncation time (no horizon)")
    return uno_c(train, test, risk, tau)


def _calibration(notes: list[str], survival: np.ndarray, censorship: pd.Series, bins: int) -> dict[str, Any]:
    dcal = _attempt(notes, "dcal", lambda: d_calibration(survival, censorship.to_numpy(), bins))
    return dict(zip(("dcal_statistic", "dcal_p"), dcal or (None, None), strict=True))


def _finish(row: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """None (not computable) becomes NaN; the notes become the ``reason`` column."""
    return {k: (np.nan if v is None else v) for k, v in row.items()} | {"reason": "; ".join(notes)}


def pooled_metrics(folds: Sequence[Fold], bins: int) -> dict[str, Any]:
    """Harrell's C and D-calibration of the pooled held-out predictions (each with its fold's curve)."""
    notes = [PER_FOLD_ONLY]
    held = pd.concat([f.held for f in folds], ignore_index=True)
    survival = np.concatenate(
        [
            survival_at_own_time(f.held[survival_columns(f.held)].to_numpy(float), f.edges, f.held["survival_months"])
            for f in folds
        ]
    )
    row: dict[str, Any] = {
        "fold": POOLED,
        "epoch": None,
        "n_patients": len(held),
        "n_events": int((held["censorship"] == 0).sum()),
        "harrell_c": _attempt(
            notes, "harrell_c", lambda: checked_harrell_c(held["survival_months"], held["censorship"], held["risk"])
        ),
        "tau": None,
        "uno_c": None,
        "iauc": None,
        "ibs": None,
    }
    row |= _calibration(notes, survival, held["censorship"], bins)
    return _finish(row, notes)


def metric_table(
    protocols: Mapping[str, Sequence[Fold]],
    horizons: np.ndarray,
    tau: float,
    bins: int,
    left_out: Sequence[Sequence[str]] | None = None,
) -> pd.DataFrame:
    """One row per (protocol, fold) and a pooled row per protocol, every metric with its reasons.

    ``left_out``: per fold, the held-out patients the model left out (no usable slide or MRI); the
    ``n_excluded`` column counts them, and ``excluded`` names them.
    """
    rows = []
    for protocol, folds in protocols.items():
        held_out = left_out or [[] for _ in folds]
        for fold, patients in zip(folds, held_out, strict=True):
            excluded = {"n_excluded": len(patients), "excluded": ", ".join(patients)}
            rows.append({"protocol": protocol} | fold_metrics(fold, horizons, tau, bins) | excluded)
        everyone = [p for patients in held_out for p in patients]
        excluded = {"n_excluded": len(everyone), "excluded": ", ".join(everyone)}
        rows.append({"protocol": protocol} | pooled_metrics(folds, bins) | excluded)
    return pd.DataFrame(rows).astype({"epoch": "Int64"})


def _fold_notes(folds: pd.DataFrame, metric: str) -> str:
    """'fold 2: no event; fold 4: ...' for a metric's NaN folds, from the rows' reasons."""
    parts = []
    for fold, reason in zip(folds["fold"], folds["reason"].fillna(""), strict=True):
        parts += [f"fold {fold}: {n.split(': ', 1)[1]}" for n in reason.split("; ") if n.startswith(f"{metric}: ")]
    return "; ".join(parts)


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (cohort, model, protocol): mean ± population std over folds, 'k of K' folds, pooled values.

    Means are over the folds where the metric exists; the ``reason`` column names the others and why.
    """
    keys = [k for k in ("cohort", "model", "protocol") if k in metrics.columns]
    rows = []
    for key, group in metrics.groupby(keys, sort=False):
        pooled_rows = group[group["fold"].astype(str) == POOLED]
        folds = group[group["fold"].astype(str) != POOLED]
        row, notes = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), []
        for metric in FOLD_METRICS:
            values = folds[metric].to_numpy(float)
            finite = values[np.isfinite(values)]
            row[f"{metric}_mean"] = float(finite.mean()) if len(finite) else np.nan
            row[f"{metric}_std"] = float(np.std(finite)) if len(finite) else np.nan
            row[f"{metric}_folds"] = f"{len(finite)} of {len(values)}"
            if len(finite) < len(values):
                notes.append(f"{metric}: {_fold_notes(folds, metric)}")
        pooled = pooled_rows.iloc[0] if len(pooled_rows) else pd.Series(dtype=object)
        row["pooled_harrell_c"] = float(pooled.get("harrell_c", np.nan))
        row["dcal_p"] = float(pooled.get("dcal_p", np.nan))
        row["n_excluded"] = int(pooled.get("n_excluded", 0))
        row["excluded"] = "" if row["n_excluded"] == 0 else str(pooled.get("excluded", ""))
        pooled_notes = str(pooled.get("reason", "")).split("; ")
        notes += [f"pooled {n}" for n in pooled_notes if n.startswith(("harrell_c: ", "dcal: "))]
        for fold, value in zip(folds["fold"], folds["harrell_c"], strict=True):
            row[f"fold_{fold}"] = value
        rows.append(row | {"reason": "; ".join(notes)})
    return pd.DataFrame(rows)


def compare_models(oof: Mapping[str, pd.DataFrame], reference: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Pooled out-of-fold Harrell's C with a percentile bootstrap 95% CI, and the paired difference to the reference.

    Models are compared on the patients every one of them holds out: a model that reads slides
    leaves out patients without a usable slide (``tiling: on_error: exclude``), one that reads MRI
    those without a usable MRI (``mri_roi: on_error: exclude``), and the others'
    rows say how many of theirs the comparison leaves out. One set of ``n_boot`` resamples of
    patients (seeded) serves every model, so each difference is paired: the same resampled patients
    under both models.
    The difference's CI is the percentile interval of the resampled differences, its two-sided p-value
    ``paired_bootstrap_p``. Resamples without a comparable pair are left out and counted.
    ``pooled_c_train_quantile`` (point estimate) is the pooled C of the ``risk_train_quantile`` column
    where the tables have it, NaN with its reason otherwise.
    """
    for model, table in oof.items():
        if table["patient_id"].duplicated().any():
            raise ValueError(f"{model}: holds out patient(s) more than once")
    patients = {m: set(t["patient_id"]) for m, t in oof.items()}
    order = sorted(set.intersection(*patients.values())) if patients else []
    if patients and not order:
        raise ValueError(f"models {sorted(oof)} hold out no patient in common")
    indices = bootstrap_indices(len(order), n_boot, seed)
    aligned = {m: t.set_index("patient_id").loc[order] for m, t in oof.items()}
    point, boot = {}, {}
    for model, t in aligned.items():
        point[model] = harrell_c(t["survival_months"], t["censorship"], t["risk"])
        boot[model] = bootstrap_harrell_c(t["survival_months"], t["censorship"], t["risk"], indices)
    rows = []
    for model, t in aligned.items():
        notes: list[str] = []
        if len(patients[model]) > len(order):
            notes.append(
                f"compared on the {len(order)} patients every model holds out "
                f"({len(patients[model]) - len(order)} of this model's left out: another model excluded them)"
            )
        ci = _attempt(notes, "pooled_c", lambda m=model: _pooled_interval(point[m], boot[m])) or (np.nan, np.nan)
        row = {
            "model": model,
            "protocol": "honest",
            "n_patients": len(t),
            "n_events": int((t["censorship"] == 0).sum()),
            "pooled_c": point[model],
            "pooled_c_low": ci[0],
            "pooled_c_high": ci[1],
            "pooled_c_train_quantile": _value(_attempt(notes, "pooled_c_train_quantile", lambda t=t: _quantile_c(t))),
            "n_bootstrap": n_boot,
            "bootstrap_valid": int(np.isfinite(boot[model]).sum()),
            "reference_model": reference,
        }
        delta = _attempt(notes, "delta", lambda m=model: _paired(m, reference, point, boot))
        row |= dict(zip(("delta_c", "delta_low", "delta_high", "delta_p"), delta or (np.nan,) * 4, strict=True))
        rows.append(row | {"reason": "; ".join(notes)})
    return pd.DataFrame(rows)


def _value(value: float | None) -> float:
    return np.nan if value is None else value


def _quantile_c(table: pd.DataFrame) -> float:
    if "risk_train_quantile" not in table:
        raise NotComputable("no training-patient quantiles in the predictions")
    return harrell_c(table["survival_months"], table["censorship"], table["risk_train_quantile"])


def _pooled_interval(point: float, boot: np.ndarray) -> tuple[float, float]:
    if not np.isfinite(point):
        raise NotComputable("no comparable pair among the pooled patients")
    return percentile_interval(boot)


def _paired(
    model: str, reference: str, point: Mapping[str, float], boot: Mapping[str, np.ndarray]
) -> tuple[float, float, float, float]:
    if model == reference:
        raise NotComputable("this is the reference model")
    if reference not in point:
        raise NotComputable(f"reference model {reference} is not trained on this cohort")
    differences = boot[model] - boot[reference]
    return (point[model] - point[reference], *percentile_interval(differences), paired_bootstrap_p(differences))


def panel(summary: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """The summary with each model's bootstrap CI and reference comparison (honest rows; others say why not)."""
    columns = ["pooled_c_low", "pooled_c_high", "pooled_c_train_quantile", "n_bootstrap", "bootstrap_valid"]
    columns += ["reference_model"]
    columns += ["delta_c", "delta_low", "delta_high", "delta_p"]
    extra = comparison[["cohort", "model", "protocol", *columns, "reason"]].rename(columns={"reason": "comparison"})
    table = summary.merge(extra, on=["cohort", "model", "protocol"], how="left")
    table["reference_model"] = table["cohort"].map(comparison.groupby("cohort")["reference_model"].first())
    missing = table["comparison"].isna() & table["pooled_c_low"].isna()
    table.loc[missing, "comparison"] = np.where(
        table.loc[missing, "protocol"] == "honest",
        "no comparison row",
        "bootstrap and comparison: honest protocol only",
    )
    notes = [
        "; ".join(str(n) for n in pair if isinstance(n, str) and n)
        for pair in zip(table["reason"], table["comparison"], strict=True)
    ]
    return table.drop(columns="comparison").assign(reason=notes)


def _cell(mean: float, std: float, folds: str) -> str:
    if not np.isfinite(mean):
        return "n/a"
    k, _, total = folds.partition(" of ")
    return f"{mean:.3f} ± {std:.3f}" + ("" if k == total else f" ({folds} folds)")


def _number(value: float, spec: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, spec)


def markdown_table(summary: pd.DataFrame, descriptions: Mapping[str, str]) -> str:
    """One block per protocol and cohort: models as rows, the metric panel as columns.

    Fold metrics are 'mean ± std' ('k of K folds' when some fold has none); D-calibration is the
    pooled p-value; pooled C and the difference to the reference come from the bootstrap (honest
    protocol only). Reasons for n/a cells are in table.tsv's ``reason`` column.
    """
    lines = []
    for protocol, label in PROTOCOLS.items():
        block = summary[summary["protocol"] == protocol]
        for cohort in dict.fromkeys(block["cohort"]):
            rows = block[block["cohort"] == cohort]
            reference = rows["reference_model"].iloc[0]
            header = ["model", *FOLD_METRICS.values(), "D-calibration p", "pooled C [95% CI]", f"ΔC vs {reference} (p)"]
            lines += [f"**{cohort}, {label}**", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
            for row in rows.to_dict("records"):
                cells = [descriptions.get(row["model"], row["model"])]
                cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_folds"]) for m in FOLD_METRICS]
                cells.append(_number(row["dcal_p"], ".2g"))
                low, high = row["pooled_c_low"], row["pooled_c_high"]
                cells.append(
                    _number(row["pooled_harrell_c"], ".3f")
                    + (f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) and np.isfinite(high) else "")
                )
                delta = row["delta_c"]
                cells.append(
                    "reference"
                    if row["model"] == reference and protocol == "honest"
                    else _number(delta, "+.3f") + (f" (p = {row['delta_p']:.2g})" if np.isfinite(delta) else "")
                )
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            if any("n/a" in line for line in lines[-len(rows) - 1 :]):
                lines += ["n/a: not computable; the reasons are in table.tsv, column `reason`.", ""]
            lines += [
                f"{descriptions.get(row['model'], row['model'])}: {row['n_excluded']} patient(s) left out, "
                f"their slides or MRI excluded ({row['excluded']}); models that do not read those keep them.\n"
                for row in rows.to_dict("records")
                if row.get("n_excluded", 0) > 0
            ]
    return "\n".join(lines)


@dataclass(frozen=True)
class KMResult:
    """Risk groups of pooled out-of-fold predictions and their log-rank test."""

    table: pd.DataFrame  # one row per patient, with a "group" column (high / low risk)
    split: str  # a key of SPLITS
    thresholds: tuple[float, ...]  # the cut-off (one per fold for training_median)
    statistic: float
    p_value: float
    c_index: float
    reason: str  # why the log-rank test is NaN, else ""


def _risk_groups(table: pd.DataFrame, split: str, thresholds: Sequence[float]) -> KMResult:
    high, low = table[table["group"] == "high risk"], table[table["group"] == "low risk"]
    statistic = p_value = np.nan
    reason = "" if len(high) and len(low) else "every patient falls in one group"
    if not reason:
        test = logrank_test(
            high["survival_months"],
            low["survival_months"],
            event_observed_A=1 - high["censorship"],
            event_observed_B=1 - low["censorship"],
        )
        statistic, p_value = float(test.test_statistic), float(test.p_value)
    c = harrell_c(table["survival_months"], table["censorship"], table["risk"])
    return KMResult(table, split, tuple(float(t) for t in thresholds), statistic, p_value, c, reason)


def median_split(oof: pd.DataFrame) -> KMResult:
    """The paper's split: high risk = above the median of the pooled held-out risks (one row per patient)."""
    pooled = oof.groupby("patient_id", sort=False).agg(
        survival_months=("survival_months", "first"), censorship=("censorship", "first"), risk=("risk", "mean")
    )
    if len(pooled) < 4:
        raise ValueError(f"{len(pooled)} patients are too few for a median split")
    threshold = float(np.median(pooled["risk"]))
    pooled["group"] = np.where(pooled["risk"] > threshold, "high risk", "low risk")
    return _risk_groups(pooled.reset_index(), "paper", [threshold])


def package_split(table: pd.DataFrame, cutoff: float) -> KMResult:
    """New patients scored by a model package, cut at the package's training cut-off (an external validation)."""
    groups = table.assign(group=risk_groups(table["risk"], cutoff))
    columns = ["patient_id", "survival_months", "censorship", "risk", "group"]
    return _risk_groups(groups[columns].reset_index(drop=True), "package", [cutoff])


def _paired_folds(
    held: Sequence[pd.DataFrame], train: Sequence[pd.DataFrame]
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """(held-out, training) tables of each fold, checked to belong to the same fold."""
    for test, fit in zip(held, train, strict=True):
        if set(test["fold"]) != set(fit["fold"]):
            raise ValueError(f"held-out fold {set(test['fold'])} paired with training fold {set(fit['fold'])}")
    return list(zip(held, train, strict=True))


def training_quantiles(held: Sequence[pd.DataFrame], train: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The pooled held-out rows with ``risk_train_quantile``: the mid-rank fraction of the same fold's
    training patients whose risk is below the held-out patient's (ties count half)."""
    tables = []
    for test, fit in _paired_folds(held, train):
        reference = np.sort(np.asarray(fit["risk"], float))
        risk = np.asarray(test["risk"], float)
        below = np.searchsorted(reference, risk, side="left")
        at_most = np.searchsorted(reference, risk, side="right")
        tables.append(test.assign(risk_train_quantile=(below + at_most) / (2 * len(reference))))
    return pd.concat(tables, ignore_index=True)


def training_median_split(held: Sequence[pd.DataFrame], train: Sequence[pd.DataFrame]) -> KMResult:
    """The leak-free split: each fold's held-out patients cut at the median risk of its training patients."""
    groups, thresholds = [], []
    for test, fit in _paired_folds(held, train):
        thresholds.append(float(np.median(fit["risk"])))
        groups.append(test.assign(group=np.where(test["risk"] > thresholds[-1], "high risk", "low risk")))
    columns = ["patient_id", "survival_months", "censorship", "risk", "fold", "group"]
    return _risk_groups(pd.concat(groups, ignore_index=True)[columns], "training_median", thresholds)


def km_statistics(result: KMResult) -> dict[str, Any]:
    """One km.tsv row: the split, its label, group sizes, cut-off(s), log-rank test and pooled C."""
    counts = result.table["group"].value_counts()
    return {
        "split": result.split,
        "label": SPLITS[result.split],
        "n_patients": len(result.table),
        "n_high": int(counts.get("high risk", 0)),
        "n_low": int(counts.get("low risk", 0)),
        "thresholds": ";".join(f"{t:.6g}" for t in result.thresholds),
        "logrank_statistic": result.statistic,
        "logrank_p": result.p_value,
        "pooled_c_index": result.c_index,
        "reason": result.reason,
    }


def km_curves(result: KMResult) -> dict[str, KaplanMeierFitter]:
    """One fitted Kaplan-Meier estimator (with 95% CI) per risk group."""
    fitted = {}
    for group, rows in result.table.groupby("group"):
        fitted[group] = KaplanMeierFitter(label=f"{group} (n={len(rows)})").fit(
            rows["survival_months"], event_observed=1 - rows["censorship"]
        )
    return fitted
