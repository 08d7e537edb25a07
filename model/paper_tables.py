"""The DeReF paper's tables from saved per-fold metrics, in both protocols (torch-free).

Every table is long: one row per (protocol, table row, cohort), with the number, its spread, how
many folds it rests on, its rank in its column and the printed cell. A number that cannot be given
is NaN with the reason beside it, and the Markdown lists those reasons under each block. Mean ± std
over folds is the population std (ddof = 0) over the folds where the metric exists, as
``model.evaluate.summarise``; the paper's Overall column is the mean of the cohort means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from model.evaluate import POOLED
from model.metrics import NotComputable, checked_harrell_c


@dataclass(frozen=True)
class Row:
    """One printed row of a table: the run whose metrics it shows and its label."""

    run: str  # value of the `model` column
    label: str  # as printed, e.g. "W/o V_explore", "MSE", "4"
    ticks: tuple[str, ...] = ()  # modalities the row uses (main comparison table only)


PROTOCOLS = {
    "honest": "Honest: selection on training patients only",
    "best_epoch": "Reference protocol: best held-out epoch (optimistic, chooses on the reported patients)",
}
COLUMNS = ["protocol", "row", "run", "cohort", "mean", "std", "n_folds", "rank", "cell", "reason"]
OVERALL = "Overall"
AVERAGE = "Average"
MAIN = "harrell_c"
KEYS = ("cohort", "model", "protocol", "fold")
BOOKKEEPING = ("epoch", "n_patients", "n_events", "tau")  # fold facts, not metrics
NOT_KEPT = "the reference protocol's best-epoch weights are not kept, so repeated tests use the selected weights only"
REPEAT_KEYS = ["cohort", "model", "test_rfr", "repeat", "fold"]


def _check_labels(rows: Sequence[Row]) -> None:
    labels = [row.label for row in rows]
    if len(set(labels)) < len(labels):
        raise ValueError(f"row labels must be unique: {labels}")


def _unique(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    duplicated = table.duplicated(list(keys))
    if duplicated.any():
        raise ValueError(f"duplicate rows for {table.loc[duplicated, list(keys)].iloc[0].to_dict()}")
    return table


def _fold_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The fold rows (a pooled row is no fold), each (cohort, run, protocol, fold) once."""
    return _unique(metrics[metrics["fold"].astype(str) != POOLED], KEYS)


def _extra_metrics(folds: pd.DataFrame) -> list[str]:
    """Numeric fold metrics besides Harrell's C; per-horizon AUCs (cohort-specific horizons) are left to iAUC."""
    numeric = folds.select_dtypes("number").columns
    return [c for c in numeric if c not in (*KEYS, *BOOKKEEPING, MAIN) and not c.startswith("auc_")]


def _why(reason: Any, metric: str) -> str:
    """The fold's own note for ``metric`` ('<metric>: why'), else its whole reason."""
    if not isinstance(reason, str) or not reason:
        return "no reason recorded"
    own = [note.removeprefix(f"{metric}: ") for note in reason.split("; ") if note.startswith(f"{metric}: ")]
    return "; ".join(own) or reason


def _over_folds(group: pd.DataFrame, metric: str) -> tuple[float, float, str, str]:
    """Mean and population std over the folds where ``metric`` exists, 'k of K', and why the others lack it."""
    values = group[metric].to_numpy(float)
    finite = values[np.isfinite(values)]
    missing = group[~np.isfinite(values)]
    notes = "; ".join(f"fold {f}: {_why(r, metric)}" for f, r in zip(missing["fold"], missing["reason"], strict=True))
    if not len(finite):
        return np.nan, np.nan, f"0 of {len(values)}", notes
    return float(finite.mean()), float(np.std(finite)), f"{len(finite)} of {len(values)}", notes


def _summary(group: pd.DataFrame, absent: str, extras: Sequence[str]) -> dict[str, Any]:
    """mean, std, n_folds, reason (and the extras' means and stds) of one run's folds; NaN with ``absent`` if none."""
    if group.empty:
        return {"mean": np.nan, "std": np.nan, "n_folds": "0 of 0", "reason": absent} | {
            f"{m}_{s}": np.nan for m in extras for s in ("mean", "std")
        }
    mean, std, count, notes = _over_folds(group, MAIN)
    record, reasons = {"mean": mean, "std": std, "n_folds": count}, [f"{MAIN}: {notes}"] if notes else []
    for metric in extras:
        record[f"{metric}_mean"], record[f"{metric}_std"], _, notes = _over_folds(group, metric)
        reasons += [f"{metric}: {notes}"] if notes else []
    return record | {"reason": "; ".join(reasons)}


def _counts(count: str) -> tuple[int, int]:
    k, _, total = count.partition(" of ")
    return int(k), int(total)


def _cell(mean: float, std: float, count: str, unit: str = "folds") -> str:
    """'0.681 ± 0.031' (std left out where NaN), '(k of K folds)' when some are missing, or 'n/a'."""
    if not np.isfinite(mean):
        return "n/a"
    k, total = _counts(count)
    text = f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else "")
    return text + ("" if k == total else f" ({count} {unit})")


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Rank 1 for the highest mean of each (protocol, cohort) column, 2 for the next, ties (as printed) shared."""
    rank = table["mean"].round(3).groupby([table["protocol"], table["cohort"]]).rank(method="dense", ascending=False)
    return table.assign(rank=rank.where(rank <= 2))


def _ordered(table: pd.DataFrame, first: Sequence[str]) -> pd.DataFrame:
    return table[[*first, *(c for c in table.columns if c not in first)]]


def _overall(entries: Sequence[dict[str, Any]], extras: Sequence[str]) -> dict[str, Any]:
    """The paper's Overall: mean of the cohort means, NaN (with why) when a cohort has none."""
    missing = [f"no mean on {e['cohort']} ({e['reason']})" for e in entries if not np.isfinite(e["mean"])]
    counts = np.array([_counts(e["n_folds"]) for e in entries]).sum(axis=0)
    record = {k: entries[0][k] for k in ("protocol", "row", "run", "ticks")} | {"cohort": OVERALL}
    record |= {"mean": np.nan if missing else float(np.mean([e["mean"] for e in entries])), "std": np.nan}
    record |= {"n_folds": f"{counts[0]} of {counts[1]}", "reason": "; ".join(missing)}
    for metric in extras:
        record[f"{metric}_mean"] = float(np.mean([e[f"{metric}_mean"] for e in entries]))
        record[f"{metric}_std"] = np.nan
    return record | {"cell": _cell(record["mean"], np.nan, record["n_folds"])}


def fold_table(
    metrics: pd.DataFrame, rows: Sequence[Row], cohorts: Sequence[str], overall: bool = False
) -> pd.DataFrame:
    """Harrell's C per (protocol, row, cohort) over folds, the other fold metrics as extra columns.

    Columns: ``COLUMNS``, ``ticks`` (the row's modalities, comma-separated), then ``<metric>_mean`` and
    ``<metric>_std`` for every other numeric fold metric (per-horizon AUCs excepted: iAUC sums them
    up, and horizons differ by cohort). With ``overall``, an Overall column (mean of the cohort means).
    """
    _check_labels(rows)
    folds = _fold_rows(metrics)
    extras = _extra_metrics(folds)
    records = []
    for protocol in dict.fromkeys([*(p for p in PROTOCOLS if p in set(folds["protocol"])), *folds["protocol"]]):
        for row in rows:
            entries = []
            for cohort in cohorts:
                run = folds[(folds["model"] == row.run) & (folds["cohort"] == cohort)]
                absent = f"not run on {cohort}" if run.empty else f"no {protocol} results on {cohort}"
                record = {"protocol": protocol, "row": row.label, "run": row.run, "cohort": cohort}
                record |= {"ticks": ",".join(row.ticks)} | _summary(run[run["protocol"] == protocol], absent, extras)
                entries.append(record | {"cell": _cell(record["mean"], record["std"], record["n_folds"])})
            records += [*entries, _overall(entries, extras)] if overall else entries
    return _ordered(_ranked(pd.DataFrame(records)), [*COLUMNS, "ticks"])


def _average(entries: Sequence[dict[str, Any]], what: str, extras: Sequence[str] = ()) -> dict[str, Any]:
    """Mean ± population std of the rows' means, over the rows that have one ('k of K <what>s')."""
    means = np.array([e["mean"] for e in entries])
    finite = means[np.isfinite(means)]
    count = f"{len(finite)} of {len(means)}"
    record = {k: entries[0][k] for k in ("protocol", "run", "cohort")} | {"row": AVERAGE, "n_folds": count}
    record |= {
        "mean": float(finite.mean()) if len(finite) else np.nan,
        "std": float(np.std(finite)) if len(finite) else np.nan,
    }
    for metric in extras:
        values = np.array([e[f"{metric}_mean"] for e in entries])
        values = values[np.isfinite(values)]
        record[f"{metric}_mean"] = float(values.mean()) if len(values) else np.nan
        record[f"{metric}_std"] = float(np.std(values)) if len(values) else np.nan
    notes = [f"{what} {e['row']}: {e['reason']}" for e in entries if not np.isfinite(e["mean"])]
    return record | {"reason": "; ".join(notes), "cell": _cell(record["mean"], record["std"], count, f"{what}s")}


def rounds_table(metrics: pd.DataFrame, rounds: Sequence[Row], cohorts: Sequence[str]) -> pd.DataFrame:
    """Table IX: one row per cross-validation round (a run on other split seeds) and their Average.

    The Average is mean ± population std of the rounds' fold means, per protocol and cohort.
    Rounds of one model are not competitors, so nothing is ranked.
    """
    table = fold_table(metrics, rounds, cohorts).assign(rank=np.nan)
    extras = [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]
    runs, parts = ",".join(r.run for r in rounds), []
    for _, block in table.groupby("protocol", sort=False):
        averages = [
            _average(group.to_dict("records"), "round", extras) | {"run": runs, "ticks": ""}
            for _, group in block.groupby("cohort", sort=False)
        ]
        parts += [block, pd.DataFrame(averages)]
    return pd.concat(parts, ignore_index=True)


def repeat_cindex(predictions: pd.DataFrame) -> pd.DataFrame:
    """Harrell's C of each repeated test: one row per (cohort, model, test_rfr, repeat, fold).

    Columns: cohort, model, test_rfr, repeat, fold, n_patients, harrell_c, reason (why NaN).
    """
    rows = []
    for key, group in predictions.groupby(REPEAT_KEYS, sort=True):
        row = dict(zip(REPEAT_KEYS, key, strict=True)) | {"n_patients": len(group)}
        try:
            c, reason = checked_harrell_c(group["survival_months"], group["censorship"], group["risk"]), ""
        except NotComputable as error:
            c, reason = np.nan, f"{MAIN}: {error}"
        rows.append(row | {MAIN: c, "reason": reason})
    return pd.DataFrame(rows, columns=[*REPEAT_KEYS, "n_patients", MAIN, "reason"])


def repeats_table(repeat_c: pd.DataFrame, cohorts: Sequence[str]) -> pd.DataFrame:
    """Table X: per test_rfr block, Harrell's C of each repeated test (over folds) and their Average.

    ``repeat_c`` is ``repeat_cindex``'s table for one model. "average" takes the mean hazards over
    segment choices (deterministic: repeats agree), "random" one random draw per call (the authors'
    code). Rows are labelled by the ``repeat`` value. The reference protocol has one NaN row per
    block and cohort saying why. Columns: protocol, test_rfr, then ``COLUMNS``; nothing is ranked.
    """
    models = list(dict.fromkeys(repeat_c["model"]))
    if len(models) != 1:
        raise ValueError(f"repeats_table takes one model's repeated tests, not {models}")
    repeat_c = _unique(repeat_c, REPEAT_KEYS)
    records, reference = [], []
    for test_rfr, block in repeat_c.groupby("test_rfr", sort=False):
        base = {"protocol": "honest", "test_rfr": test_rfr, "run": models[0]}
        for cohort in cohorts:
            entries = []
            for repeat in sorted(block["repeat"].unique()):
                group = block[(block["cohort"] == cohort) & (block["repeat"] == repeat)]
                absent = (
                    f"no repeat {repeat} on {cohort}" if (block["cohort"] == cohort).any() else f"not run on {cohort}"
                )
                entry = base | {"row": str(repeat), "cohort": cohort} | _summary(group, absent, ())
                entries.append(entry | {"cell": _cell(entry["mean"], entry["std"], entry["n_folds"])})
            records += [*entries, base | _average(entries, "repeat")]
        reference += [
            base
            | {"protocol": "best_epoch", "row": AVERAGE, "cohort": cohort, "mean": np.nan, "std": np.nan}
            | {"n_folds": "0 of 0", "cell": "n/a", "reason": NOT_KEPT}
            for cohort in cohorts
        ]
    return _ordered(pd.DataFrame(records + reference).assign(rank=np.nan), ["protocol", "test_rfr", *COLUMNS[1:]])


def mi_table(mi: pd.DataFrame, rows: Sequence[Row], cohorts: Sequence[str]) -> pd.DataFrame:
    """Table VIII: normalised MI of the shared and exploration features with the label, 'shared/explore'.

    ``mi`` has cohort, model, fold, feature ("shared"/"explore"), nmi, reason (and protocol, else the
    features are the selected model's: "honest"). Means are over the folds where both features have
    a value; ``mean`` (ranked) is the mean of ``mean_shared`` and ``mean_explore``; std is NaN.
    """
    _check_labels(rows)
    if not set(mi["feature"]) <= {"shared", "explore"}:
        raise ValueError(f"features must be 'shared' or 'explore', not {sorted(set(mi['feature']))}")
    mi = _unique(mi if "protocol" in mi else mi.assign(protocol="honest"), [*KEYS, "feature"])
    records = []
    for protocol in dict.fromkeys(mi["protocol"]):
        for row in rows:
            for cohort in cohorts:
                group = mi[(mi["protocol"] == protocol) & (mi["model"] == row.run) & (mi["cohort"] == cohort)]
                record = {"protocol": protocol, "row": row.label, "run": row.run, "cohort": cohort, "std": np.nan}
                records.append(record | _mi_summary(group, cohort))
    return _ordered(_ranked(pd.DataFrame(records)), [*COLUMNS, "mean_shared", "mean_explore"])


def _mi_summary(group: pd.DataFrame, cohort: str) -> dict[str, Any]:
    if group.empty:
        nothing = {"mean": np.nan, "mean_shared": np.nan, "mean_explore": np.nan, "n_folds": "0 of 0", "cell": "n/a"}
        return nothing | {"reason": f"no features of this run on {cohort}"}
    wide = group.pivot(index="fold", columns="feature", values="nmi").reindex(columns=["shared", "explore"])
    wide = wide.astype(float)
    why = group.set_index(["fold", "feature"])["reason"]
    notes = [
        f"fold {fold}, {feature}: {_why(why.get((fold, feature), 'no row'), 'nmi')}"
        for fold in wide.index
        for feature in wide.columns
        if not np.isfinite(wide.loc[fold, feature])
    ]
    both = wide[np.isfinite(wide).all(axis=1)]
    count = f"{len(both)} of {len(wide)}"
    shared, explore = (float(both[f].mean()) if len(both) else np.nan for f in ("shared", "explore"))
    cell = f"{shared:.3f}/{explore:.3f}" + ("" if len(both) == len(wide) else f" ({count} folds)")
    record = {"mean": (shared + explore) / 2, "mean_shared": shared, "mean_explore": explore, "n_folds": count}
    return record | {"cell": cell if len(both) else "n/a", "reason": "; ".join(notes)}


def _marked(cell: str, rank: float) -> str:
    """The paper's marks: best **bold**, second <u>underlined</u>."""
    return f"**{cell}**" if rank == 1 else f"<u>{cell}</u>" if rank == 2 else cell


def markdown(table: pd.DataFrame, title: str, note: str = "", modalities: Sequence[str] = ()) -> str:
    """One Markdown block per protocol (and test_rfr): rows by cohort columns, the best two marked.

    Modality tick columns (✓) come first when ``modalities`` is given and rows have ticks. n/a cells'
    reasons are listed under their block.
    """
    lines = [f"### {title}", "", *([note, ""] if note else [])]
    ticked = bool(modalities) and "ticks" in table and table["ticks"].fillna("").astype(bool).any()
    keys = ["protocol", "test_rfr"] if "test_rfr" in table else ["protocol"]
    for key, block in table.groupby(keys, sort=False):
        protocol, *rest = key
        heading = PROTOCOLS.get(protocol, protocol) + "".join(f" (test_rfr = {r})" for r in rest)
        cohorts = list(dict.fromkeys(block["cohort"]))
        header = [*(modalities if ticked else []), "", *cohorts]
        lines += [f"#### {heading}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        footnotes = []
        for label, group in block.groupby("row", sort=False):
            by_cohort = group.set_index("cohort")
            cells = []
            if ticked:
                used = str(group["ticks"].fillna("").iloc[0]).split(",")
                cells += ["✓" if m in used else "" for m in modalities]
            cells.append(str(label))
            for cohort in cohorts:
                entry = by_cohort.loc[cohort]
                cells.append(_marked(entry["cell"], entry["rank"]))
                if "n/a" in entry["cell"]:
                    footnotes.append(f"- n/a, {label}, {cohort}: {entry['reason'] or 'no reason recorded'}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *footnotes, *([""] if footnotes else [])]
    return "\n".join(lines)
