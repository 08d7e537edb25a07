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
    content_digest,
    load_cohort,
    load_cohorts,
    read_sheet,
)
from workflow.demo.genomics import write_genomics
from workflow.demo.sheets import DemoCohort
from workflow.io import write_tsv


def write(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return str(path)


@pytest.fixture
def cohort_dir(tmp_path):
    """A valid WSI + genomics cohort on disk: two patients, three slides."""
    for name in ("a.svs", "b.svs", "c.svs", "sig.csv"):
        (tmp_path / name).write_text(name)
    pd.DataFrame({"case_id": ["001", "P2"], "TP53_rnaseq": [0.1, 0.2]}).to_csv(tmp_path / "table.csv")
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
            r"line 2 \(patient_id=001\), column 'survival_months' has -3; expected .*a finite number > 0",
        ),
        (
            "patients",
            lambda df: df.loc.__setitem__((1, "survival_months"), None),
            r"line 3 \(patient_id=P2\), column 'survival_months' is empty",
        ),
        (
            "patients",
            lambda df: df.loc.__setitem__((1, "censorship"), "2"),
            r"line 3 \(patient_id=P2\), column 'censorship' has 2; expected 0 or 1: 1 = censored",
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


def test_one_bad_numeric_cell_is_reported_alone(cohort_dir):
    """A comma decimal or a word makes pandas read the column as text: only the bad cell is reported."""
    _, cfg = cohort_dir
    edit(cfg["patients"], lambda df: df.loc.__setitem__((1, "survival_months"), "12,5"))
    with pytest.raises(CohortError) as err:
        load_cohort("c", cfg)
    assert str(err.value) == (
        f"patients sheet {cfg['patients']}: 1 problem(s):\n  line 3 (patient_id=P2), column 'survival_months' "
        "has '12,5'; use a point as decimal separator: 12.5"
    )
    edit(cfg["patients"], lambda df: df.loc.__setitem__((1, "survival_months"), "12.5"))
    edit(cfg["patients"], lambda df: df.loc.__setitem__((0, "censorship"), "dead"))
    with pytest.raises(CohortError) as err:
        load_cohort("c", cfg)
    assert str(err.value) == (
        f"patients sheet {cfg['patients']}: 1 problem(s):\n  line 2 (patient_id=001), column 'censorship' has "
        "'dead', not a number; expected 0 or 1: 1 = censored (alive at last follow-up), 0 = event (death); "
        "the TCGA/MCAT convention"
    )


@pytest.mark.parametrize(
    ("sheet", "row", "column", "cell", "expected"),
    [
        ("patients", 0, "survival_months", "inf", "has 'inf', not a finite number; expected overall survival"),
        ("patients", 0, "survival_months", "-inf", "has '-inf', not a finite number"),
        ("patients", 1, "survival_months", "Infinity", "has 'Infinity', not a finite number"),
        ("patients", 1, "survival_months", "1e999", "has '1e999', not a finite number"),
        ("patients", 1, "survival_months", "NaN", "is empty (or NA); expected overall survival"),
        ("patients", 0, "survival_months", "0", "has 0; expected overall survival or follow-up time in months, a"),
        ("patients", 1, "censorship", "2", "has 2; expected 0 or 1: 1 = censored"),
        ("patients", 1, "censorship", "0.5", "has 0.5; expected 0 or 1: 1 = censored"),
        ("patients", 1, "censorship", "TRUE", "has 'TRUE', not a number; expected 0 or 1: 1 = censored"),
        ("slides", 1, "mpp", "inf", "has 'inf', not a finite number; expected optional microns per pixel"),
        ("slides", 1, "mpp", "0,25", "has '0,25'; use a point as decimal separator: 0.25"),
    ],
)
def test_each_bad_number_gets_one_precise_message(cohort_dir, sheet, row, column, cell, expected):
    _, cfg = cohort_dir
    edit(cfg[sheet], lambda df: df.loc.__setitem__((row, column), cell))
    with pytest.raises(CohortError) as err:
        load_cohort("c", cfg)
    ids = {"patients": ("patient_id", ["001", "P2"]), "slides": ("slide_id", ["S1.a", "S1.b", "S2"])}[sheet]
    head = f"{sheet} sheet {cfg[sheet]}: 1 problem(s):\n  line {row + 2} ({ids[0]}={ids[1][row]}), column '{column}' "
    assert str(err.value).startswith(head + expected)


def test_good_numeric_cells_keep_their_types(cohort_dir):
    _, cfg = cohort_dir
    edit(cfg["patients"], lambda df: df.loc.__setitem__((1, "censorship"), "1.0"))
    cohort = load_cohort("c", cfg)
    assert cohort.patients["censorship"].dtype == "int64" and cohort.patients["censorship"].tolist() == [0, 1]
    assert cohort.slides["mpp"].isna().tolist() == [True, False, True]


def test_the_same_slide_file_twice_is_refused(cohort_dir):
    tmp_path, cfg = cohort_dir
    a = str(tmp_path / "a.svs")
    edit(cfg["slides"], lambda df: df.loc.__setitem__((2, "path"), a))
    with pytest.raises(CohortError) as err:
        load_cohort("c", cfg)
    assert str(err.value) == (
        f"slides sheet {cfg['slides']}: the same file is listed twice: line 2 (slide_id=S1.a, {a}) and line 4 "
        f"(slide_id=S2, {a}). One image in two rows could sit in training and in test; keep one row per slide file."
    )
    for name, link in (("sym.svs", Path.symlink_to), ("hard.svs", Path.hardlink_to)):
        link(tmp_path / name, tmp_path / "c.svs")
        edit(cfg["slides"], lambda df, name=name: df.loc.__setitem__((2, "path"), str(tmp_path / name)))
        edit(cfg["slides"], lambda df: df.loc.__setitem__((1, "path"), str(tmp_path / "c.svs")))
        with pytest.raises(
            CohortError, match=rf"line 3 \(slide_id=S1.b, .*c\.svs\) and line 4 \(slide_id=S2, .*{name}\)"
        ):
            load_cohort("c", cfg)


def test_the_same_mri_file_for_two_patients_is_refused(cohort_dir):
    tmp_path, cfg = cohort_dir
    del cfg["genomics"]
    rows = mri_rows(tmp_path, ("001", "P2"), ("t1w", "t2w"))
    rows[3]["image"] = rows[0]["image"]
    cfg = cfg | {
        "modalities": ["wsi", "mri"],
        "mri": {"sheet": write(tmp_path / "mri.tsv", rows), "sequences": ["t1w", "t2w"]},
    }
    with pytest.raises(CohortError) as err:
        load_cohort("c", cfg)
    image = rows[0]["image"]
    assert str(err.value) == (
        f"mri sheet {cfg['mri']['sheet']}: the same file is listed twice: line 2 (patient_id=001, image {image}) and "
        f"line 5 (patient_id=P2, image {image}). One image for two patients could sit in training and in test; "
        "give each patient their own files."
    )
    rows[3]["image"] = rows[1]["mask"]  # 001's mask as P2's image
    write(tmp_path / "mri.tsv", rows)
    with pytest.raises(CohortError, match=r"line 2 \(patient_id=001, mask .*\) and line 5 \(patient_id=P2, image"):
        load_cohort("c", cfg)


def test_identical_content_in_two_files_is_warned(cohort_dir, caplog):
    tmp_path, cfg = cohort_dir
    (tmp_path / "c.svs").write_text("a.svs")  # a copy of a.svs, another file
    with caplog.at_level(logging.WARNING, logger="workflow.cohort"):
        load_cohort("c", cfg)
    assert [r.getMessage() for r in caplog.records] == [
        f"slides sheet {cfg['slides']}: line 2 (slide_id=S1.a, {tmp_path / 'a.svs'}) and line 4 (slide_id=S2, "
        f"{tmp_path / 'c.svs'}) are different files with identical content: if they are one image, keep one row "
        "for it, so that it cannot sit in training and in test"
    ]


def test_large_files_are_compared_by_their_ends(tmp_path, monkeypatch):
    monkeypatch.setattr("workflow.cohort.WHOLE_HASH", 16)
    monkeypatch.setattr("workflow.cohort.END_HASH", 4)
    for name, middle in (("x", b"1" * 20), ("y", b"2" * 20)):
        (tmp_path / name).write_bytes(b"head" + middle + b"tail")
    assert content_digest(str(tmp_path / "x"), 28) == content_digest(str(tmp_path / "y"), 28)
    monkeypatch.setattr("workflow.cohort.WHOLE_HASH", 64)
    assert content_digest(str(tmp_path / "x"), 28) != content_digest(str(tmp_path / "y"), 28)


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


def mri_rows(folder, patients, sequences):
    """MRI sheet rows with an image per (patient, sequence) and a mask per patient, each its own file."""
    for p in patients:
        for name in (*sequences, "mask"):
            (folder / f"{p}_{name}.nii.gz").write_text(f"{p} {name}")
    return [
        {
            "patient_id": p,
            "sequence": s,
            "image": str(folder / f"{p}_{s}.nii.gz"),
            "mask": str(folder / f"{p}_mask.nii.gz"),
        }
        for p in patients
        for s in sequences
    ]


def test_mri_sheet_checks(cohort_dir):
    tmp_path, cfg = cohort_dir
    rows = mri_rows(tmp_path, ("001", "P2"), ("t1w", "t2w"))
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
        Path(path).write_text(path)
    for path, sheet in demo.sheets.items():
        write_tsv(sheet, path)
    if "genomics" in demo.spec.modalities:  # read at parse time: its patient IDs
        write_genomics(demo.spec, demo.truth, demo.slides, demo.genomics["table"], demo.genomics["signatures"])
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


def test_a_patients_sheet_wins_over_the_table(genomics_only):
    tmp_path, cfg = genomics_only
    rows = [
        {"patient_id": "P3", "survival_months": 7.0, "censorship": 1},
        {"patient_id": "P1", "survival_months": 9.0, "censorship": 0},
    ]
    cohort = load_cohort("g", cfg | {"patients": write(tmp_path / "patients.tsv", rows)})
    assert cohort.patient_ids == ["P3", "P1"] and cohort.patients["survival_months"].tolist() == [7.0, 9.0]


def test_patients_the_genomics_table_lacks_are_refused_at_parse_time(genomics_only):
    tmp_path, cfg = genomics_only
    rows = [{"patient_id": p, "survival_months": 7.0, "censorship": 0} for p in ("P1", "GHOST-1", "P2", "GHOST-2")]
    sheet = write(tmp_path / "patients.tsv", rows)
    with pytest.raises(CohortError) as err:
        load_cohort("g", cfg | {"patients": sheet})
    assert str(err.value) == (
        f"genomics table {cfg['genomics']['table']}: no row (column 'case_id') for patient(s) of patients sheet "
        f"{sheet}: line 3 (GHOST-1), line 5 (GHOST-2). Add their genomics to the table, or remove them from "
        f"patients sheet {sheet}."
    )
    with pytest.raises(
        CohortError, match=r"table\.csv: no column 'patient' with patient IDs; set genomics: patient_column:"
    ):
        load_cohort("g", cfg | {"patients": sheet, "genomics": cfg["genomics"] | {"patient_column": "patient"}})


@pytest.mark.parametrize("modalities", [["wsi"], ["genomics"], ["mri"], ["genomics", "mri"]])
def test_single_modality_and_slide_free_cohorts_load(cohort_dir, modalities):
    tmp_path, cfg = cohort_dir
    rows = mri_rows(tmp_path, ("001", "P2"), ("t1w",))
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
    return Cohort("c", ("genomics",), patients.set_index("patient_id", drop=False), patients_source="patients.tsv")


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
        ([5, 5, 5, 6, 7], [0, 0, 0, 0, 1], {"n_bins": 4}, r"tied event times .* no number of bins works"),
        (
            [1, 2, 3],
            [1, 1, 1],
            {},
            r"all 3 patients are censored \(column 'censorship' of patients\.tsv is 1 everywhere\): no event "
            r"to learn from .*check the convention \(1 = censored/alive, 0 = event/death",
        ),
        (
            [5, 5, 5, 6],
            [0, 0, 0, 1],
            {},
            r"all 3 event times \(column 'survival_months' of patients\.tsv, rows with censorship 0\) are 5 "
            r"months: time bins need events at different times",
        ),
        (
            [1, 2, 3, 4],
            [0, 0, 0, 1],
            {"n_bins": 3, "bins": "fold"},
            r"a fold's training patients hold as few as 1 event\(s\), fewer than training: n_bins: 3 .*"
            r"training: bins: cohort, fewer folds, or add patients with events",
        ),
    ],
)
def test_folds_and_bins_the_outcomes_cannot_fill_are_refused(times, censorship, training, expected):
    with pytest.raises(CohortError, match=r"cohort 'c': " + expected):
        check_folds(outcomes_cohort(times, censorship), replace(TRAINING, **training), None)


def test_mcat_folds_are_checked_at_parse_time(tmp_path, caplog):
    cohort = outcomes_cohort([1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 1, 1])
    write_mcat_split(tmp_path / "splits_0.csv", ["P0", "P1", "P2"], ["P3", "P4", "P5"])
    write_mcat_split(tmp_path / "splits_1.csv", ["P3", "P4", "P5"], ["P0", "P1", "P2"])
    with pytest.raises(CohortError, match=r"a fold's training patients hold as few as 0 event\(s\).*add patients"):
        check_folds(cohort, TRAINING, str(tmp_path))  # fold 1 trains on P3-P5, all censored
    with caplog.at_level(logging.WARNING, logger="workflow.cohort"):
        check_folds(cohort, replace(TRAINING, bins="cohort"), str(tmp_path))
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
    write_mcat_split(tmp_path / "splits_1.csv", ["P3", "P4", "P5", "P9"], ["P0", "P1", "P2"])
    with pytest.raises(CohortError, match=r"splits_1\.csv: patients \['P9'\] are not in the cohort and \[\]"):
        check_folds(cohort, TRAINING, str(tmp_path))
    write_mcat_split(tmp_path / "splits_1.csv", ["P3", "P4", "P5", "P0"], ["P0", "P1", "P2"])
    with pytest.raises(CohortError) as err:
        check_folds(cohort, TRAINING, str(tmp_path))
    assert str(err.value) == (
        f"cohort 'c': {tmp_path / 'splits_1.csv'}: patient(s) ['P0'] are in both train and val. Fix the files in "
        f"splits: {tmp_path}, or remove splits: to draw stratified folds"
    )


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
