"""The paper's tables: every number against a direct recomputation from the fold values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.evaluate import PER_FOLD_ONLY
from model.metrics import harrell_c
from model.paper_tables import (
    NOT_KEPT,
    PROTOCOLS,
    Row,
    fold_table,
    markdown,
    mi_table,
    repeat_cindex,
    repeats_table,
    rounds_table,
)

COHORTS = ["A", "B"]
ROWS = [Row("r1", "One", ("WSI",)), Row("r2", "Two", ("Gene",)), Row("r3", "Three", ("WSI", "Gene"))]
TIED = [0.70, 0.60, 0.65]  # r1 and r3 on A, honest: a tie for the best


def metrics_frame() -> pd.DataFrame:
    """2 cohorts, 3 runs (r3 not run on B), 3 folds, both protocols, and a pooled row per run (no fold)."""
    rng = np.random.default_rng(0)
    rows = []
    for cohort in COHORTS:
        for run in ("r1", "r2", "r3"):
            if run == "r3" and cohort == "B":
                continue
            for protocol in PROTOCOLS:
                for fold in range(3):
                    values = {"harrell_c": rng.uniform(0.5, 0.8), "uno_c": rng.uniform(0.5, 0.8)}
                    values |= {"ibs": rng.uniform(0.1, 0.3), "epoch": fold + 1, "reason": ""}
                    rows.append({"cohort": cohort, "model": run, "protocol": protocol, "fold": fold} | values)
                pooled = {"harrell_c": 0.99, "uno_c": np.nan, "ibs": np.nan, "epoch": np.nan, "reason": PER_FOLD_ONLY}
                rows.append({"cohort": cohort, "model": run, "protocol": protocol, "fold": "pooled"} | pooled)
    table = pd.DataFrame(rows)
    fold_rows = table["fold"] != "pooled"

    def where(cohort, run, protocol):
        return fold_rows & (table["cohort"] == cohort) & (table["model"] == run) & (table["protocol"] == protocol)

    table.loc[where("A", "r1", "honest"), "harrell_c"] = TIED
    table.loc[where("A", "r3", "honest"), "harrell_c"] = TIED
    table.loc[where("A", "r2", "honest"), "harrell_c"] = [0.5, 0.55, 0.6]
    table.loc[where("B", "r2", "best_epoch"), ["harrell_c", "uno_c"]] = np.nan
    table.loc[where("B", "r2", "best_epoch"), "reason"] = "harrell_c: no event (all patients censored); uno_c: no event"
    partial = where("B", "r1", "honest") & (table["fold"] == 2)
    table.loc[partial, "harrell_c"] = np.nan
    table.loc[partial, "reason"] = "harrell_c: no comparable pair"
    return table


def folds_of(metrics: pd.DataFrame, cohort: str, run: str, protocol: str, metric: str) -> np.ndarray:
    chosen = metrics[(metrics["cohort"] == cohort) & (metrics["model"] == run) & (metrics["protocol"] == protocol)]
    values = chosen.loc[chosen["fold"] != "pooled", metric].to_numpy(float)
    return values[np.isfinite(values)]


def entry(table: pd.DataFrame, protocol: str, row: str, cohort: str) -> pd.Series:
    chosen = table[(table["protocol"] == protocol) & (table["row"] == row) & (table["cohort"] == cohort)]
    assert len(chosen) == 1
    return chosen.iloc[0]


def test_fold_table_numbers_are_the_fold_means_and_population_stds():
    metrics = metrics_frame()
    table = fold_table(metrics, ROWS, COHORTS)
    assert list(table.columns[:11]) == [
        *["protocol", "row", "run", "cohort", "mean", "std", "n_folds", "rank", "cell", "reason", "ticks"]
    ]
    assert {"uno_c_mean", "uno_c_std", "ibs_mean", "ibs_std"} <= set(table.columns)
    assert "epoch_mean" not in table.columns
    checked = 0
    for protocol in PROTOCOLS:
        for row in ROWS:
            for cohort in COHORTS:
                values = folds_of(metrics, cohort, row.run, protocol, "harrell_c")
                if not len(values):
                    continue
                got = entry(table, protocol, row.label, cohort)
                assert got["mean"] == pytest.approx(np.mean(values))
                assert got["std"] == pytest.approx(np.std(values))
                for metric in ("uno_c", "ibs"):
                    extra = folds_of(metrics, cohort, row.run, protocol, metric)
                    assert got[f"{metric}_mean"] == pytest.approx(np.mean(extra))
                    assert got[f"{metric}_std"] == pytest.approx(np.std(extra))
                if len(values) == 3:
                    assert got["cell"] == f"{np.mean(values):.3f} ± {np.std(values):.3f}"
                checked += 1
    assert checked == 2 * 5 - 1  # Two on B under best_epoch has no fold value


def test_fold_table_says_why_a_cell_is_missing():
    table = fold_table(metrics_frame(), ROWS, COHORTS)
    not_run = entry(table, "honest", "Three", "B")
    assert np.isnan(not_run["mean"]) and not_run["cell"] == "n/a" and not_run["reason"] == "not run on B"
    all_nan = entry(table, "best_epoch", "Two", "B")
    assert np.isnan(all_nan["mean"]) and all_nan["cell"] == "n/a" and all_nan["n_folds"] == "0 of 3"
    assert "harrell_c: fold 0: no event (all patients censored); fold 1:" in all_nan["reason"]
    assert "uno_c: fold 0: no event" in all_nan["reason"]
    partial = entry(table, "honest", "One", "B")
    assert partial["n_folds"] == "2 of 3" and partial["cell"].endswith("(2 of 3 folds)")
    assert partial["reason"] == "harrell_c: fold 2: no comparable pair"


def test_overall_is_the_mean_of_the_cohort_means():
    table = fold_table(metrics_frame(), ROWS, COHORTS, overall=True)
    for protocol in PROTOCOLS:
        one = entry(table, protocol, "One", "Overall")
        means = [entry(table, protocol, "One", c)["mean"] for c in COHORTS]
        assert one["mean"] == pytest.approx(np.mean(means))
        partial = " (5 of 6 folds)" if protocol == "honest" else ""  # One lacks fold 2 on B, honest
        assert np.isnan(one["std"]) and one["cell"] == f"{np.mean(means):.3f}{partial}"
        assert one["uno_c_mean"] == pytest.approx(
            np.mean([entry(table, protocol, "One", c)["uno_c_mean"] for c in COHORTS])
        )
        three = entry(table, protocol, "Three", "Overall")
        assert np.isnan(three["mean"]) and three["cell"] == "n/a" and "no mean on B (not run on B)" in three["reason"]


def test_ranks_mark_the_best_two_per_column_and_share_ties():
    table = fold_table(metrics_frame(), ROWS, COHORTS, overall=True)
    assert [entry(table, "honest", r.label, "A")["rank"] for r in ROWS] == [1, 2, 1]  # One and Three tie
    for protocol in PROTOCOLS:
        for cohort in [*COHORTS, "Overall"]:
            column = table[(table["protocol"] == protocol) & (table["cohort"] == cohort)]
            finite = np.unique(column["mean"].dropna().round(3))[::-1]
            for _, got in column.iterrows():
                expected = {v: i + 1 for i, v in enumerate(finite[:2])}.get(round(got["mean"], 3), np.nan)
                assert got["rank"] == expected or (np.isnan(got["rank"]) and np.isnan(expected))


def test_fold_table_refuses_duplicate_folds_and_labels():
    metrics = metrics_frame()
    with pytest.raises(ValueError, match="duplicate"):
        fold_table(pd.concat([metrics, metrics.iloc[:1]]), ROWS, COHORTS)
    with pytest.raises(ValueError, match="unique"):
        fold_table(metrics, [Row("r1", "x"), Row("r2", "x")], COHORTS)


def test_rounds_average_is_mean_and_std_of_the_round_means():
    metrics = metrics_frame()
    rounds = [Row("r1", "1"), Row("r2", "2"), Row("r3", "3")]
    table = rounds_table(metrics, rounds, COHORTS)
    assert table["rank"].isna().all()
    for protocol in PROTOCOLS:
        average = entry(table, protocol, "Average", "A")
        means = [np.mean(folds_of(metrics, "A", r.run, protocol, "harrell_c")) for r in rounds]
        assert average["mean"] == pytest.approx(np.mean(means)) and average["std"] == pytest.approx(np.std(means))
        assert average["cell"] == f"{np.mean(means):.3f} ± {np.std(means):.3f}"
        ibs = [np.mean(folds_of(metrics, "A", r.run, protocol, "ibs")) for r in rounds]
        assert average["ibs_mean"] == pytest.approx(np.mean(ibs)) and average["ibs_std"] == pytest.approx(np.std(ibs))
    on_b = entry(table, "honest", "Average", "B")  # round 3 was not run on B
    means = [np.mean(folds_of(metrics, "B", r, "honest", "harrell_c")) for r in ("r1", "r2")]
    assert on_b["mean"] == pytest.approx(np.mean(means)) and on_b["n_folds"] == "2 of 3"
    assert on_b["cell"].endswith("(2 of 3 rounds)") and on_b["reason"] == "round 3: not run on B"
    assert list(table[table["protocol"] == "honest"]["row"].unique()) == ["1", "2", "3", "Average"]


def predictions_frame() -> pd.DataFrame:
    """deref on cohorts A and B, 2 folds of 6 patients, 3 repeats per test_rfr; 'average' repeats agree."""
    rng = np.random.default_rng(1)
    rows = []
    for cohort in COHORTS:
        for fold in range(2):
            times = rng.uniform(1, 60, 6)
            censorship = np.array([0, 1, 0, 0, 1, 0])
            fixed = rng.standard_normal(6)
            for test_rfr in ("average", "random"):
                for repeat in (1, 2, 3):
                    risk = fixed if test_rfr == "average" else rng.standard_normal(6)
                    for i in range(6):
                        rows.append(
                            {"cohort": cohort, "model": "deref", "fold": fold, "test_rfr": test_rfr, "repeat": repeat}
                            | {"patient_id": f"{cohort}{fold}P{i}", "survival_months": times[i]}
                            | {"censorship": censorship[i], "risk": risk[i]}
                        )
    return pd.DataFrame(rows)


def test_repeat_cindex_is_harrell_c_per_repeat_and_fold():
    predictions = predictions_frame()
    repeat_c = repeat_cindex(predictions)
    assert list(repeat_c.columns) == [
        *["cohort", "model", "test_rfr", "repeat", "fold", "n_patients", "harrell_c", "reason"]
    ]
    assert len(repeat_c) == 2 * 2 * 2 * 3
    for row in repeat_c.itertuples():
        group = predictions[
            (predictions["cohort"] == row.cohort)
            & (predictions["fold"] == row.fold)
            & (predictions["test_rfr"] == row.test_rfr)
            & (predictions["repeat"] == row.repeat)
        ]
        assert row.harrell_c == pytest.approx(harrell_c(group["survival_months"], group["censorship"], group["risk"]))
    censored = predictions.assign(censorship=1)
    assert repeat_c_reason(censored) == "harrell_c: no event (all patients censored)"


def repeat_c_reason(predictions: pd.DataFrame) -> str:
    table = repeat_cindex(predictions)
    assert table["harrell_c"].isna().all()
    return table["reason"].iloc[0]


def test_repeats_table_rows_are_repeats_and_their_average():
    repeat_c = repeat_cindex(predictions_frame())
    table = repeats_table(repeat_c, COHORTS)
    assert list(table.columns[:11]) == [
        *["protocol", "test_rfr", "row", "run", "cohort", "mean", "std", "n_folds", "rank", "cell", "reason"]
    ]
    assert table["rank"].isna().all() and set(table["run"]) == {"deref"}
    for test_rfr in ("average", "random"):
        block = table[(table["test_rfr"] == test_rfr) & (table["protocol"] == "honest")]
        assert list(block["row"].unique()) == ["1", "2", "3", "Average"]
        for cohort in COHORTS:
            chosen = repeat_c[(repeat_c["test_rfr"] == test_rfr) & (repeat_c["cohort"] == cohort)]
            means = []
            for repeat in (1, 2, 3):
                values = chosen.loc[chosen["repeat"] == repeat, "harrell_c"].to_numpy()
                got = block[(block["row"] == str(repeat)) & (block["cohort"] == cohort)].iloc[0]
                assert got["mean"] == pytest.approx(np.mean(values)) and got["std"] == pytest.approx(np.std(values))
                means.append(np.mean(values))
            average = block[(block["row"] == "Average") & (block["cohort"] == cohort)].iloc[0]
            assert average["mean"] == pytest.approx(np.mean(means)) and average["std"] == pytest.approx(np.std(means))
            if test_rfr == "average":  # identical repeats: no spread between them
                assert average["std"] == pytest.approx(0, abs=1e-12) and average["cell"].endswith("± 0.000")
        reference = table[(table["test_rfr"] == test_rfr) & (table["protocol"] == "best_epoch")]
        assert list(reference["cohort"]) == COHORTS and reference["mean"].isna().all()
        assert (reference["reason"] == NOT_KEPT).all() and (reference["cell"] == "n/a").all()
    random_average = table[
        (table["test_rfr"] == "random") & (table["row"] == "Average") & (table["protocol"] == "honest")
    ]
    assert (random_average["std"] > 0).all()
    with pytest.raises(ValueError, match="one model"):
        repeats_table(pd.concat([repeat_c, repeat_c.assign(model="hdmoe")]), COHORTS)


def test_repeats_table_says_when_a_cohort_lacks_the_model():
    table = repeats_table(repeat_cindex(predictions_frame().query("cohort == 'A'")), COHORTS)
    missing = table[(table["cohort"] == "B") & (table["protocol"] == "honest") & (table["row"] == "2")]
    assert (missing["reason"] == "not run on B").all() and missing["mean"].isna().all()


def test_mi_table_cells_are_shared_and_explore_means():
    rows = []
    values = {"r1": ([0.3, 0.35, 0.4], [0.2, 0.3, 0.25]), "r2": ([0.1, 0.2, 0.3], [0.5, np.nan, 0.6])}
    for run, (shared, explore) in values.items():
        for fold in range(3):
            rows.append({"cohort": "A", "model": run, "fold": fold, "feature": "shared", "nmi": shared[fold]})
            rows.append({"cohort": "A", "model": run, "fold": fold, "feature": "explore", "nmi": explore[fold]})
    mi = pd.DataFrame(rows).assign(reason="")
    mi.loc[mi["nmi"].isna(), "reason"] = "nmi: a label has 2 samples"
    table = mi_table(mi, ROWS[:2], COHORTS)
    assert list(table.columns) == [
        *["protocol", "row", "run", "cohort", "mean", "std", "n_folds", "rank", "cell", "reason"],
        *["mean_shared", "mean_explore"],
    ]
    one = entry(table, "honest", "One", "A")
    assert one["cell"] == f"{np.mean([0.3, 0.35, 0.4]):.3f}/{np.mean([0.2, 0.3, 0.25]):.3f}"
    assert one["mean"] == pytest.approx((0.35 + 0.25) / 2) and one["n_folds"] == "3 of 3"
    two = entry(table, "honest", "Two", "A")  # fold 1 lacks explore: both means over folds 0 and 2
    assert two["mean_shared"] == pytest.approx(0.2) and two["mean_explore"] == pytest.approx(0.55)
    assert two["cell"] == "0.200/0.550 (2 of 3 folds)" and two["reason"] == "fold 1, explore: a label has 2 samples"
    assert (two["rank"], one["rank"]) == (1, 2)  # 0.375 vs 0.3
    missing = entry(table, "honest", "One", "B")
    assert missing["cell"] == "n/a" and missing["reason"] == "no features of this run on B"


def blocks(text: str) -> dict[str, list[list[str]]]:
    """'#### heading' -> table rows (header first) as lists of cells."""
    found: dict[str, list[list[str]]] = {}
    for part in text.split("#### ")[1:]:
        heading, *lines = part.splitlines()
        found[heading] = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    return found


def test_markdown_bolds_the_best_and_underlines_the_second_per_column_and_protocol():
    table = fold_table(metrics_frame(), ROWS, COHORTS, overall=True)
    text = markdown(table, "Table III", note="snakemake paper_tables", modalities=["WSI", "Gene"])
    assert text.startswith("### Table III\n\nsnakemake paper_tables\n")
    found = blocks(text)
    assert list(found) == list(PROTOCOLS.values())
    for protocol, label in PROTOCOLS.items():
        header, *lines = found[label]
        assert header == ["WSI", "Gene", "", "A", "B", "Overall"]
        assert [line[:3] for line in lines] == [["✓", "", "One"], ["", "✓", "Two"], ["✓", "✓", "Three"]]
        for position, cohort in enumerate(["A", "B", "Overall"], start=3):
            for line in lines:
                got = entry(table, protocol, line[2], cohort)
                if got["rank"] == 1:
                    assert line[position] == f"**{got['cell']}**"
                elif got["rank"] == 2:
                    assert line[position] == f"<u>{got['cell']}</u>"
                else:
                    assert line[position] == got["cell"]
            column = [line[position] for line in lines]
            assert sum(c.startswith("**") for c in column) >= 1
    honest = found[PROTOCOLS["honest"]]
    assert [line[3] for line in honest[1:]] == ["**0.650 ± 0.041**", "<u>0.550 ± 0.041</u>", "**0.650 ± 0.041**"]
    assert "- n/a, Three, B: not run on B" in text
    assert "- n/a, Two, B: harrell_c: fold 0: no event (all patients censored)" in text


def test_markdown_without_ticks_and_with_test_rfr_blocks():
    table = repeats_table(repeat_cindex(predictions_frame()), COHORTS)
    found = blocks(markdown(table, "Table X"))
    assert list(found) == [
        f"{PROTOCOLS['honest']} (test_rfr = average)",
        f"{PROTOCOLS['honest']} (test_rfr = random)",
        f"{PROTOCOLS['best_epoch']} (test_rfr = average)",
        f"{PROTOCOLS['best_epoch']} (test_rfr = random)",
    ]
    assert found[f"{PROTOCOLS['honest']} (test_rfr = random)"][0] == ["", "A", "B"]
    assert found[f"{PROTOCOLS['best_epoch']} (test_rfr = random)"][1] == ["Average", "n/a", "n/a"]
    assert not any("**" in cell for rows in found.values() for row in rows for cell in row)
