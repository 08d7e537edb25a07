"""Bad user inputs stop ``snakemake -n`` at parse time with a message naming the file, row and fix.

One dry run per class of problem, on a tiny user cohort (two or four patients, dummy slide files:
a dry run opens no slide). The precise wording of each message is tested in test_cohort.py.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from model.splits import write_mcat_split
from tests.conftest import ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n"]


def user_cohort(folder, patients, slides=None, table=None, cohort=None):
    """A WSI + genomics user cohort in ``folder``: sheets and tables from row lists, one slide file per slide."""
    slides = slides or [{"slide_id": f"S{p['patient_id']}", "patient_id": p["patient_id"]} for p in patients]
    slides = [{"path": f"{s['slide_id']}.svs"} | s for s in slides]
    for s in slides:
        (folder / s["path"]).write_text(s["slide_id"])  # distinct content: no identical-content warning
    table = table or [{"case_id": p["patient_id"], "TP53_rnaseq": 0.1} for p in patients]
    pd.DataFrame(patients).to_csv(folder / "patients.tsv", sep="\t", index=False)
    pd.DataFrame(slides).to_csv(folder / "slides.tsv", sep="\t", index=False)
    pd.DataFrame(table).to_csv(folder / "genomics.csv")
    pd.DataFrame({"Tumor Suppressor Genes": ["TP53"]}).to_csv(folder / "signatures.csv", index=False)
    block = {
        "modalities": ["wsi", "genomics"],
        "patients": "patients.tsv",
        "slides": "slides.tsv",
        "genomics": {"table": "genomics.csv", "signatures": "signatures.csv"},
    } | (cohort or {})
    (folder / "config").mkdir(exist_ok=True)
    config = {
        "cohorts": {"mine": block},
        "features": {"weights": "random"},
        "training": {"folds": 2, "n_bins": 2, "bins": "cohort"},
    }
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def dry_run_error(folder) -> str:
    """The output of a dry run that must fail."""
    done = subprocess.run([*SNAKEMAKE, "--directory", str(folder)], cwd=folder, capture_output=True, text=True)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def outcomes(*rows):
    return [{"patient_id": p, "survival_months": t, "censorship": c} for p, t, c in rows]


FOUR = outcomes(("P1", 10.0, 0), ("P2", 20.0, 0), ("P3", 30.0, 1), ("P4", 40.0, 0))


@pytest.mark.integration
def test_a_text_cell_in_a_numeric_column_is_reported_alone(tmp_path):
    user_cohort(tmp_path, outcomes(("P1", "10", "0"), ("P2", "12,5", "0"), ("P3", "7", "dead")))
    out = dry_run_error(tmp_path)
    assert (
        "patients sheet patients.tsv: 2 problem(s):\n"
        "  line 3 (patient_id=P2), column 'survival_months' has '12,5'; use a point as decimal separator: 12.5\n"
        "  line 4 (patient_id=P3), column 'censorship' has 'dead', not a number; expected 0 or 1" in out
    )
    assert "line 2 (patient_id=P1)" not in out


@pytest.mark.integration
def test_an_infinite_outcome_in_a_genomics_table_is_refused(tmp_path):
    table = [
        {"case_id": p, "survival_months": t, "censorship": 0, "TP53_rnaseq": 0.1} for p, t in (("P1", 3), ("P2", "inf"))
    ]
    user_cohort(tmp_path, [], table=table)
    block = {"modalities": ["genomics"], "genomics": {"table": "genomics.csv", "signatures": "signatures.csv"}}
    config = {"cohorts": {"mine": block}, "training": {"folds": 2, "n_bins": 2, "bins": "cohort"}}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    assert (
        "genomics table genomics.csv: 1 problem(s):\n  line 3 (patient_id=P2), column 'survival_months' has 'inf', "
        "not a finite number; expected overall survival" in dry_run_error(tmp_path)
    )


def both_train_and_val(folder):
    write_mcat_split(folder / "splits_0.csv", ["P1", "P2"], ["P3", "P4"])
    write_mcat_split(folder / "splits_1.csv", ["P3", "P4", "P1"], ["P1", "P2"])
    return {"splits": "."}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("patients", "table", "cohort", "expected"),
    [
        (
            outcomes(("P1", 10.0, 1), ("P2", 20.0, 1)),
            None,
            None,
            "cohort 'mine': all 2 patients are censored (column 'censorship' of patients sheet patients.tsv is 1 "
            "everywhere)",
        ),
        (
            FOUR,
            [{"case_id": p, "TP53_rnaseq": 0.1} for p in ("P1", "P2", "P4")],
            None,
            "genomics table genomics.csv: no row (column 'case_id') for patient(s) of patients sheet patients.tsv: "
            "line 4 (P3). Add their genomics to the table",
        ),
        (
            FOUR,
            None,
            both_train_and_val,
            "cohort 'mine': ./splits_1.csv: patient(s) ['P1'] are in both train and val. Fix the files in splits: .",
        ),
    ],
    ids=["all_censored", "genomics_lacks_a_patient", "split_in_train_and_val"],
)
def test_what_training_cannot_use_stops_the_dry_run(tmp_path, patients, table, cohort, expected):
    user_cohort(tmp_path, patients, table=table, cohort=cohort(tmp_path) if cohort else None)
    assert expected in dry_run_error(tmp_path)


@pytest.mark.integration
def test_one_slide_file_for_two_patients_is_refused(tmp_path):
    slides = [{"slide_id": "S1", "patient_id": "P1"}, {"slide_id": "S2", "patient_id": "P2", "path": "S1.svs"}]
    user_cohort(tmp_path, outcomes(("P1", 10.0, 0), ("P2", 20.0, 0)), slides=slides)
    assert (
        "slides sheet slides.tsv: the same file is listed twice: line 2 (slide_id=S1, S1.svs) and line 3 "
        "(slide_id=S2, S1.svs). One image in two rows could sit in training and in test" in dry_run_error(tmp_path)
    )


@pytest.mark.integration
def test_a_variants_own_bins_are_checked_against_the_cohort(tmp_path):
    user_cohort(tmp_path, FOUR)
    (tmp_path / "variants.yaml").write_text(yaml.safe_dump({"snn_fine": {"model": "snn", "options": {"n_bins": 4}}}))
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    config["experiments"] = {"catalogue": "variants.yaml", "run": ["snn_fine"]}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    assert (
        "experiment variant snn_fine: cohort 'mine': 3 patient(s) with an event (censorship 0) cannot define "
        "training: n_bins: 4 time bins" in dry_run_error(tmp_path)
    )
