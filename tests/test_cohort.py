"""Sheet validation: every bad input names the sheet, line, ID and column and says what to do."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

from model.config import TrainingConfig, training_config
from model.splits import write_mcat_split
from workflow.cohort import (
    MODALITY_KEYS,
    Cohort,
    CohortError,
    check_folds,
    load_cohort,
    load_cohorts,
    read_sheet,
)
from workflow.demo.sheets import DemoCohort
from workflow.io import write_tsv


def write(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return str(path)


@pytest.fixture
def cohort_dir(tmp_path):
    """A valid WSI + genomics cohort on disk: two patients, three slides."""
    for name in ("a.svs", "b.svs", "c.svs", "table.csv", "sig.csv"):
        (tmp_path / name).write_text("x")
    patients = write(
        tmp_path / "patients.tsv",
        [
            {"patient_id": "001", "survival_months": 12.5, "censorship": 0, "age": 60},
            {"patient_id": "P2", "survival_months": 30, "censorship": 1, "age": 70},
        ],
    )
    slides = write(
        tmp_path / "slides.tsv",
        [
            {"slide_id": "S1.a", "patient_id": "001", "path": str(tmp_path / "a.svs"), "mpp": None},
            {"slide_id": "S1.b", "patient_id": "001", "path": str(tmp_path / "b.svs"), "mpp": 0.25},
            {"slide_id": "S2", "patient_id": "P2", "path": str(tmp_path / "c.svs"), "mpp": None},
        ],
    )
    cfg = {
        "modalities": ["wsi", "genomics"],
        "patients": patients,
        "slides": slides,
        "genomics": {"table": str(tmp_path / "table.csv"), "signatures": str(tmp_path / "sig.csv")},
    }
    return tmp_path, cfg


def edit(path, change):
    df = pd.read_csv(path, sep="\t", dtype=str)
    change(df)
    df.to_csv(path, sep="\t", index=False)


def test_valid_cohort_loads_with_string_ids(cohort_dir):
    _, cfg = cohort_dir
    cohort = load_cohort("c", cfg)
    assert cohort.patient_ids == ["001", "P2"]
    assert cohort.slide_ids == ["S1.a", "S1.b", "S2"]
    assert cohort.patients.loc["001", "age"] == 60
    assert cohort.slides.loc["S1.b", "mpp"] == 0.25


@pytest.mark.parametrize(
    ("sheet", "change", "expected"),
    [
        (
            "patients",
            lambda df: df.loc.__setitem__((1, "patient_id"), "001"),
            r"duplicated patient_id: line 2 \(001\), line 3 \(001\)",
        ),
        (
            "slides",
            lambda df: df.loc.__setitem__((2, "slide_id"), "S1.a"),
            r"duplicated slide_id: line 2 \(S1.a\), line 4 \(S1.a\)",
        ),
        (
            "slides",
            lambda df: df.loc.__setitem__((2, "patient_id"), "P9"),
            r"patient_id not found in patients sheet .*: line 4 \(P9\)",
        ),
        ("slides", lambda df: df.drop(index=2, inplace=True), r"patient\(s\) with no slide: P2"),
        (
            "patients",
            lambda df: df.loc.__setitem__((0, "survival_months"), "-3"),
            r"line 2 \(patient_id=001\), column 'survival_months' has -3; expected .*>= 0",
        ),
        (
            "patients",
            lambda df: df.loc.__setitem__((1, "survival_months"), None),
            r"line 3 \(patient_id=P2\), column 'survival_months' is empty",
        ),
        (
            "patients",
            lambda df: df.loc.__setitem__((1, "censorship"), "2"),
            r"line 3 \(patient_id=P2\), column 'censorship' has 2; expected 1 = censored",
        ),
        (
            "patients",
            lambda df: df.loc.__setitem__((0, "censorship"), "alive"),
            r"line 2 \(patient_id=001\), column 'censorship' has 'alive'",
        ),
        ("patients", lambda df: df.drop(columns="censorship", inplace=True), r"missing column\(s\) 'censorship'"),
        (
            "slides",
            lambda df: df.loc.__setitem__((0, "slide_id"), "bad id/x"),
            r"line 2 \(slide_id=bad id/x\), column 'slide_id'",
        ),
        ("slides", lambda df: df.loc.__setitem__((1, "mpp"), "0"), r"line 3 \(slide_id=S1.b\), column 'mpp' has 0"),
    ],
)
def test_bad_sheets_are_explained(cohort_dir, sheet, change, expected):
    _, cfg = cohort_dir
    edit(cfg[sheet], change)
    with pytest.raises(CohortError, match=expected) as err:
        load_cohort("c", cfg)
    assert f"{sheet} sheet {cfg[sheet]}" in str(err.value)


def test_missing_files_are_listed(cohort_dir):
    tmp_path, cfg = cohort_dir
    (tmp_path / "b.svs").unlink()
    (tmp_path / "sig.csv").unlink()
    with pytest.raises(CohortError, match="file\\(s\\) not found") as err:
        load_cohort("c", cfg)
    assert f"slide S1.b: {tmp_path / 'b.svs'}" in str(err.value)
    assert f"signatures: {tmp_path / 'sig.csv'}" in str(err.value)


def test_missing_sheet_file(cohort_dir):
    _, cfg = cohort_dir
    cfg["slides"] = "nowhere/slides.tsv"
    with pytest.raises(CohortError, match=r"slides sheet nowhere/slides\.tsv does not exist"):
        load_cohort("c", cfg)


@pytest.mark.parametrize("modalities", [["wsi", "xray"], [], ["wsi", "genomics", "mri"], ["wsi", "wsi"]])
def test_unknown_or_too_many_modalities(cohort_dir, modalities):
    _, cfg = cohort_dir
    cfg["modalities"] = modalities
    with pytest.raises(CohortError, match=r"cohort 'c': modalities .*: use one or two of wsi, genomics, mri"):
        load_cohort("c", cfg)


def test_genomics_paths_required(cohort_dir):
    _, cfg = cohort_dir
    del cfg["genomics"]
    with pytest.raises(CohortError, match="genomics: lacks table, signatures"):
        load_cohort("c", cfg)


def test_mri_sheet_checks(cohort_dir):
    tmp_path, cfg = cohort_dir
    (tmp_path / "img.nii.gz").write_text("x")
    rows = [
        {"patient_id": p, "sequence": s, "image": str(tmp_path / "img.nii.gz"), "mask": str(tmp_path / "img.nii.gz")}
        for p in ("001", "P2")
        for s in ("t1w", "t2w")
    ]
    del cfg["genomics"]
    cfg = cfg | {
        "modalities": ["wsi", "mri"],
        "mri": {"sheet": write(tmp_path / "mri.tsv", rows), "sequences": ["t1w", "t2w"]},
    }
    cohort = load_cohort("c", cfg)
    assert len(cohort.mri) == 4 and cohort.sequences == ("t1w", "t2w")

    cfg["mri"]["sequences"] = ["t1w"]
    with pytest.raises(
        CohortError,
        match=r"sequence not among the configured mri: sequences: \['t1w'\]: line 3 \(t2w\), line 5 \(t2w\)",
    ):
        load_cohort("c", cfg)
    cfg["mri"]["sequences"] = ["t1w", "t2w"]
    rows[1]["mask"] = str(tmp_path / "a.svs")
    write(tmp_path / "mri.tsv", rows)
    with pytest.raises(CohortError, match=r"patient\(s\) 001 list different masks"):
        load_cohort("c", cfg)
    rows[1]["mask"] = rows[0]["mask"]
    write(tmp_path / "mri.tsv", rows[:2])
    with pytest.raises(CohortError, match=r"patient\(s\) with no MRI: P2"):
        load_cohort("c", cfg)


def test_demo_cohort_needs_no_files_and_matches_its_kind():
    cohort = load_cohort("d", {"modalities": ["wsi", "genomics"], "demo": {"kind": "tcga", "seed": 3, "n_patients": 5}})
    assert len(cohort.patients) == 5 and cohort.genomics["table"] == "resources/demo/d/genomics.csv"
    with pytest.raises(CohortError, match="a demo of kind 'liver' has modalities"):
        load_cohort("d", {"modalities": ["wsi", "genomics"], "demo": {"kind": "liver", "seed": 3}})


@pytest.mark.parametrize(
    "cfg",
    [
        {"modalities": ["wsi", "genomics"], "demo": {"kind": "tcga", "seed": 5, "n_patients": 6}},
        {"modalities": ["wsi", "mri"], "demo": {"kind": "liver", "seed": 5, "n_patients": 6}},
    ],
    ids=["tcga", "liver"],
)
def test_a_demo_cohort_is_the_real_cohort_its_files_make(tmp_path, monkeypatch, cfg):
    """Written out, a demo's sheets and files load as a user's cohort: the one the Snakefile knew before."""
    monkeypatch.chdir(tmp_path)
    demo = DemoCohort.from_config("d", cfg)
    for path in demo.files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("x")
    for path, sheet in demo.sheets.items():
        write_tsv(sheet, path)
    real, known = load_cohort("d", demo.config(cfg)), load_cohort("d", cfg)
    assert "demo" not in demo.config(cfg) and real.demo is None and known.demo == demo
    for frame in ("patients", "slides", "mri"):
        if getattr(known, frame) is None:
            assert getattr(real, frame) is None
        else:
            pd.testing.assert_frame_equal(getattr(real, frame), getattr(known, frame), check_dtype=False)
    assert (real.modalities, real.sequences, real.genomics) == (known.modalities, known.sequences, known.genomics)


@pytest.mark.parametrize("kind", ["patients", "slides", "mri"])
def test_example_sheets_are_valid(kind):
    """config/examples/ shows users the sheet format; it must pass the same schema checks."""
    from tests.conftest import ROOT

    read_sheet(ROOT / "config" / "examples" / f"{kind}.tsv", kind)


def mcat_table(path, rows):
    """An MCAT-style CSV: leading unnamed index column, metadata, then gene columns."""
    pd.DataFrame(rows).assign(TP53_rnaseq=0.5, TP53_cnv=1).to_csv(path)
    return str(path)


@pytest.fixture
def genomics_only(tmp_path):
    """A genomics-only cohort with no sheets: three patients, one of them with two slide rows."""
    table = mcat_table(
        tmp_path / "table.csv",
        [
            {"case_id": "P1", "slide_id": "P1-a.svs", "survival_months": 12.5, "censorship": 0},
            {"case_id": "P2", "slide_id": "P2-a.svs", "survival_months": 30.0, "censorship": 1},
            {"case_id": "P2", "slide_id": "P2-b.svs", "survival_months": 30.0, "censorship": 1},
            {"case_id": "P3", "slide_id": "P3-a.svs", "survival_months": 4.0, "censorship": 0},
        ],
    )
    (tmp_path / "sig.csv").write_text("x")
    return tmp_path, {"modalities": ["genomics"], "genomics": {"table": table, "signatures": str(tmp_path / "sig.csv")}}


def test_genomics_only_cohort_takes_its_outcomes_from_the_table(genomics_only):
    _, cfg = genomics_only
    cohort = load_cohort("g", cfg)
    assert cohort.slides is None and cohort.slide_ids == [] and cohort.mri is None
    assert cohort.patient_ids == ["P1", "P2", "P3"]  # the table's order, one row per patient
    assert cohort.patients["survival_months"].tolist() == [12.5, 30.0, 4.0]
    assert cohort.patients["censorship"].tolist() == [0, 1, 0]


def test_genomics_table_rows_of_a_patient_must_agree(genomics_only):
    _, cfg = genomics_only
    table = pd.read_csv(cfg["genomics"]["table"], index_col=0)
    table.loc[2, "survival_months"] = 31.0
    table.to_csv(cfg["genomics"]["table"])
    with pytest.raises(
        CohortError, match=r"genomics table .*table\.csv: the rows of a patient disagree .*: P2 \(lines 3, 4\)"
    ):
        load_cohort("g", cfg)


def test_genomics_table_outcomes_are_checked_like_a_patients_sheet(genomics_only):
    _, cfg = genomics_only
    table = pd.read_csv(cfg["genomics"]["table"], index_col=0)
    table.loc[3, "censorship"] = 2
    table.to_csv(cfg["genomics"]["table"])
    with pytest.raises(CohortError, match=r"line 5 \(patient_id=P3\), column 'censorship' has 2"):
        load_cohort("g", cfg)
    cfg["genomics"]["patient_column"] = "patient"
    with pytest.raises(CohortError, match=r"no column\(s\) \['patient'\], where a cohort without a patients: sheet"):
        load_cohort("g", cfg)


def test_a_patients_sheet_wins_over_the_table(cohort_dir, genomics_only):
    _, sheets = cohort_dir
    _, cfg = genomics_only
    cohort = load_cohort("g", cfg | {"patients": sheets["patients"]})
    assert cohort.patient_ids == ["001", "P2"]


@pytest.mark.parametrize("modalities", [["wsi"], ["genomics"], ["mri"], ["genomics", "mri"]])
def test_single_modality_and_slide_free_cohorts_load(cohort_dir, modalities):
    tmp_path, cfg = cohort_dir
    rows = [
        {"patient_id": p, "sequence": "t1w", "image": str(tmp_path / "a.svs"), "mask": str(tmp_path / "b.svs")}
        for p in ("001", "P2")
    ]
    cfg["mri"] = {"sheet": write(tmp_path / "mri.tsv", rows), "sequences": ["t1w"]}
    for key, modality in MODALITY_KEYS.items():
        if modality not in modalities:
            del cfg[key]
    cohort = load_cohort("c", cfg | {"modalities": modalities})
    assert cohort.modalities == tuple(modalities) and cohort.patient_ids == ["001", "P2"]
    assert (cohort.slides is not None) == ("wsi" in modalities)
    assert (cohort.mri is not None) == ("mri" in modalities)
    assert bool(cohort.genomics) == ("genomics" in modalities)


def test_data_of_a_modality_the_cohort_lacks_is_refused(cohort_dir):
    _, cfg = cohort_dir
    with pytest.raises(CohortError, match=r"cohort 'c': slides: given, but its modalities \['genomics'\] lack wsi"):
        load_cohort("c", cfg | {"modalities": ["genomics"]})


def test_a_cohort_without_genomics_needs_a_patients_sheet(cohort_dir):
    _, cfg = cohort_dir
    del cfg["patients"], cfg["genomics"]
    with pytest.raises(CohortError, match=r"cohort 'c': config lacks patients:"):
        load_cohort("c", cfg | {"modalities": ["wsi"]})


def test_genomics_only_demo_has_no_slides():
    both = load_cohort("d", {"modalities": ["wsi", "genomics"], "demo": {"kind": "tcga", "seed": 3, "n_patients": 5}})
    alone = load_cohort("d", {"modalities": ["genomics"], "demo": {"kind": "tcga", "seed": 3, "n_patients": 5}})
    assert alone.slides is None and alone.demo.spec.modalities == ("genomics",)
    pd.testing.assert_frame_equal(alone.patients, both.patients)
    assert alone.genomics == both.genomics


def outcomes_cohort(times, censorship):
    patients = pd.DataFrame(
        {"patient_id": [f"P{i}" for i in range(len(times))], "survival_months": times, "censorship": censorship}
    )
    return Cohort("c", ("genomics",), patients.set_index("patient_id", drop=False))


TRAINING = TrainingConfig(folds=2, n_bins=2, seed=1)


@pytest.mark.parametrize(
    ("times", "censorship", "training", "expected"),
    [
        ([1, 2, 3], [0, 0, 0], {"folds": 4}, r"3 patient\(s\) cannot fill training: folds: 4 .*at most 3"),
        (
            [1, 2, 3, 4],
            [0, 1, 1, 1],
            {},
            r"1 patient\(s\) with an event \(censorship 0\) for training: folds: 2: a held-out fold .*needs two",
        ),
        (
            [1, 2, 3, 4, 5],
            [0, 0, 0, 1, 1],
            {"n_bins": 4},
            r"3 patient\(s\) with an event .* cannot define training: n_bins: 4 .*at most 3",
        ),
        (
            [1, 1, 1, 2, 3, 4, 5],
            [0, 0, 0, 0, 0, 0, 0],
            {"n_bins": 4},
            r"tied event times give duplicate quantile edges for training: n_bins: 4 .*to 2$",
        ),
        ([5, 5, 5, 6], [0, 0, 0, 1], {}, r"tied event times .* no number of bins works"),
    ],
)
def test_folds_and_bins_the_outcomes_cannot_fill_are_refused(times, censorship, training, expected):
    with pytest.raises(CohortError, match=r"cohort 'c': " + expected):
        check_folds(outcomes_cohort(times, censorship), replace(TRAINING, **training), None)


def test_mcat_folds_are_checked_at_parse_time(tmp_path, caplog):
    cohort = outcomes_cohort([1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 1, 1])
    write_mcat_split(tmp_path / "splits_0.csv", ["P0", "P1", "P2"], ["P3", "P4", "P5"])
    write_mcat_split(tmp_path / "splits_1.csv", ["P3", "P4", "P5"], ["P0", "P1", "P2"])
    with caplog.at_level(logging.WARNING, logger="workflow.cohort"):
        check_folds(cohort, TRAINING, str(tmp_path))
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("cohort 'c': fold 0 (")
    assert "holds no event among its 3 held-out patients" in caplog.text

    (tmp_path / "splits_1.csv").unlink()
    with pytest.raises(CohortError, match=r"cohort 'c': .*splits_1\.csv is missing"):
        check_folds(cohort, TRAINING, str(tmp_path))
    write_mcat_split(tmp_path / "splits_1.csv", ["P3", "P4"], ["P0", "P1", "P2"])
    with pytest.raises(
        CohortError, match=r"cohort 'c': .*splits_1\.csv: patients \[\] are not in the cohort and \['P5'\]"
    ):
        check_folds(cohort, TRAINING, str(tmp_path))


def test_load_cohorts_checks_the_folds():
    config = {
        "cohorts": {"d": {"modalities": ["genomics"], "demo": {"kind": "tcga", "seed": 3, "n_patients": 5}}},
        "training": {"folds": 6, "n_bins": 2, "seed": 1},
    }
    with pytest.raises(CohortError, match=r"cohort 'd': 5 patient\(s\) cannot fill training: folds: 6"):
        load_cohorts(config["cohorts"], training_config(config["training"]))


def test_example_config_is_valid():
    """config/examples/tcga_blca_genomics.yaml passes the config schema (its data: the realdata test)."""
    from snakemake.utils import validate

    from tests.conftest import ROOT

    config = yaml.safe_load((ROOT / "config" / "examples" / "tcga_blca_genomics.yaml").read_text())
    validate(config, str(ROOT / "config" / "schemas" / "config.schema.yaml"))
    assert (
        config["cohorts"]["tcga_blca"]["modalities"] == ["genomics"]
        and "patients" not in config["cohorts"]["tcga_blca"]
    )
