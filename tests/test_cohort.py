"""Sheet validation: every bad input names the sheet, line, ID and column and says what to do."""

from __future__ import annotations

import pandas as pd
import pytest

from workflow.cohort import CohortError, load_cohort, read_sheet
from workflow.demo.design import DemoSpec, mri_sheet, patients_sheet, slides_sheet, slides_table, truth_table


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
            r"patient_id not found in the patients sheet: line 4 \(P9\)",
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


@pytest.mark.parametrize("modalities", [["wsi", "xray"], ["genomics", "mri"], ["wsi"]])
def test_unknown_modality_or_pair(cohort_dir, modalities):
    _, cfg = cohort_dir
    cfg["modalities"] = modalities
    with pytest.raises(
        CohortError, match=r"cohort 'c': modalities .* use \[wsi, genomics\] \(TCGA-like\) or \[wsi, mri\]"
    ):
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


def test_demo_sheets_round_trip_through_tsv(tmp_path):
    """The sheets a demo cohort is made of are valid user sheets too (same loader, same checks)."""
    spec = DemoSpec(kind="liver", seed=5, n_patients=6)
    truth = truth_table(spec)
    patients = patients_sheet(truth)
    slides = slides_sheet("d", slides_table(spec, truth))
    mri = mri_sheet("d", truth)
    paths = {}
    for name, df in {"patients": patients, "slides": slides, "mri": mri}.items():
        paths[name] = tmp_path / f"{name}.tsv"
        df.to_csv(paths[name], sep="\t", index=False)
        pd.testing.assert_frame_equal(read_sheet(paths[name], name), df, check_dtype=False)


@pytest.mark.parametrize("kind", ["patients", "slides", "mri"])
def test_example_sheets_are_valid(kind):
    """config/examples/ shows users the sheet format; it must pass the same schema checks."""
    from tests.conftest import ROOT

    read_sheet(ROOT / "config" / "examples" / f"{kind}.tsv", kind)
