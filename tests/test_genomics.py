"""Genomic pathway tensors: MCAT tables read by column name, six families, errors that name the cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow.demo import genomics as demo
from workflow.demo.design import DemoSpec, slides_table, truth_table
from workflow.genomics import GenomicsError, build_pathways, family_report, read_pathways, write_pathways


@pytest.fixture
def demo_files(tmp_path):
    spec = DemoSpec(kind="tcga", seed=4, n_patients=12, frac_two_slides=0.5)
    truth = truth_table(spec)
    demo.write_genomics(spec, truth, slides_table(spec, truth), tmp_path / "g.csv", tmp_path / "sig.csv")
    return tmp_path / "g.csv", tmp_path / "sig.csv", list(truth["patient_id"])


def test_families_match_the_signatures(demo_files):
    table, signatures, patients = demo_files
    matrices, families = build_pathways(table, signatures, patients, kinds=("rnaseq", "cnv"))
    for family in families:
        genes = sorted(set(demo.DEMO_SIGNATURES[family.name]) - set(demo.MISSING_GENES))
        assert family.columns == sorted(f"{g}_{k}" for g in genes for k in ("rnaseq", "cnv"))
        assert family.missing_genes == sorted(set(demo.DEMO_SIGNATURES[family.name]) & set(demo.MISSING_GENES))
        assert matrices[family.name].shape == (len(patients), len(family.columns))
    report = family_report(families)
    assert list(report["family"]) == list(demo.DEMO_SIGNATURES)
    assert report.loc[report["family"] == "Tumor Suppressor Genes", "missing_genes"].item() == "CDKN2A"


def test_rows_follow_the_cohort_order_and_values(demo_files):
    table, signatures, patients = demo_files
    order = patients[::-1]
    matrices, families = build_pathways(table, signatures, order, kinds=("mut",))
    raw = pd.read_csv(table).drop_duplicates("case_id").set_index("case_id")
    first = families[0]
    assert np.array_equal(matrices[first.name], raw.loc[order, first.columns].to_numpy(np.float32))


def test_metadata_by_name_keeps_the_last_column_and_drops_index_columns(demo_files, tmp_path):
    table, signatures, patients = demo_files
    df = pd.read_csv(table)
    assert df.columns[0] == "Unnamed: 0"
    last = df.columns[-1]
    _, families = build_pathways(table, signatures, patients, kinds=("rnaseq", "cnv", "mut"))
    assert any(last in f.columns for f in families)  # MCAT's loader would have dropped it
    assert not any(c.startswith("Unnamed") for f in families for c in f.columns)


def test_bare_mutation_columns_only_when_configured(demo_files, tmp_path):
    table, signatures, patients = demo_files
    df = pd.read_csv(table, index_col=0)
    df = df.rename(columns={c: c[: -len("_mut")] for c in df.columns if c.endswith("_mut")})
    df.to_csv(tmp_path / "ucec.csv")
    with pytest.raises(GenomicsError, match="matched no column for kinds \\['mut'\\]"):
        build_pathways(tmp_path / "ucec.csv", signatures, patients, kinds=("mut",))
    _, families = build_pathways(tmp_path / "ucec.csv", signatures, patients, kinds=("mut",), bare_as_mutations=True)
    assert "TP53_mut" in families[0].columns


def edit(table, tmp_path, change):
    df = pd.read_csv(table, index_col=0)
    change(df)
    df.to_csv(tmp_path / "bad.csv")
    return tmp_path / "bad.csv"


def test_conflicting_slides_of_a_patient(demo_files, tmp_path):
    table, signatures, patients = demo_files
    df = pd.read_csv(table, index_col=0)
    patient = df["case_id"][df["case_id"].duplicated()].iloc[0]
    row = df.index[df["case_id"] == patient][-1]
    bad = edit(table, tmp_path, lambda d: d.__setitem__("TP53_rnaseq", d["TP53_rnaseq"].where(d.index != row, 99.0)))
    with pytest.raises(
        GenomicsError, match=f"patient {patient} has 2 rows with different genomics \\(e.g. \\['TP53_rnaseq'\\]\\)"
    ):
        build_pathways(bad, signatures, patients)


def test_non_numeric_and_missing_values(demo_files, tmp_path):
    table, signatures, patients = demo_files
    bad = edit(
        table,
        tmp_path,
        lambda d: d.__setitem__("MYC_cnv", d["MYC_cnv"].astype(object).where(d["case_id"] != patients[3], "amp")),
    )
    with pytest.raises(GenomicsError, match=f"column 'MYC_cnv', patient {patients[3]}: 'amp' is not a number"):
        build_pathways(bad, signatures, patients)
    bad = edit(table, tmp_path, lambda d: d.__setitem__("MYC_cnv", d["MYC_cnv"].where(d["case_id"] != patients[2])))
    with pytest.raises(
        GenomicsError, match=f"missing value in column 'MYC_cnv' for patient {patients[2]}.*impute: median"
    ):
        build_pathways(bad, signatures, patients)
    matrices, families = build_pathways(bad, signatures, patients, impute="median")
    oncogenes = next(f for f in families if f.name == "Oncogenes")
    column = matrices["Oncogenes"][:, oncogenes.columns.index("MYC_cnv")]
    assert np.isfinite(column).all()


@pytest.mark.parametrize(
    ("cell", "what"), [(np.inf, "inf"), (-np.inf, "-inf"), ("1e999", "1e999"), ("Infinity", "inf")]
)
def test_infinite_values_are_refused_naming_file_line_column_and_patient(demo_files, tmp_path, cell, what):
    """inf would pass as a number and turn a fold's standardised genomics into NaN inside training."""
    table, signatures, patients = demo_files
    df = pd.read_csv(table, index_col=0)
    rows = np.flatnonzero(df["case_id"] == patients[3])
    bad = edit(
        table,
        tmp_path,
        lambda d: d.__setitem__("MYC_cnv", d["MYC_cnv"].astype(object).where(d["case_id"] != patients[3], cell)),
    )
    with pytest.raises(GenomicsError) as err:
        build_pathways(bad, signatures, patients)
    more = f" ({len(rows) - 1} more such cell(s))" if len(rows) > 1 else ""
    assert str(err.value) == (
        f"{bad}: line {rows[0] + 2}, column 'MYC_cnv', patient {patients[3]}: '{what}' is not a finite number{more}; "
        "write a finite number (a point as decimal separator), or leave the cell empty and set pathways: impute: median"
    )


def test_patient_ids_keep_leading_zeros(demo_files, tmp_path):
    table, signatures, patients = demo_files
    ids = {p: f"{i:03d}" for i, p in enumerate(patients)}
    bad = edit(table, tmp_path, lambda d: d.__setitem__("case_id", d["case_id"].map(ids)))
    matrices, _ = build_pathways(bad, signatures, list(ids.values()))
    assert all(m.shape[0] == len(patients) for m in matrices.values())


def test_family_coverage_errors(demo_files, tmp_path):
    table, signatures, patients = demo_files
    sig = pd.read_csv(signatures)
    sig["Cytokines and Growth Factors"] = ["NOTAGENE1", "NOTAGENE2"] + [None] * (len(sig) - 2)
    sig.to_csv(tmp_path / "sig2.csv", index=False)
    with pytest.raises(GenomicsError, match="family 'Cytokines and Growth Factors' matched no column"):
        build_pathways(table, tmp_path / "sig2.csv", patients)
    with pytest.raises(
        GenomicsError,
        match=r"family .Tumor Suppressor Genes. matched 7 of 8 signature genes, fewer than min_gene_fraction = 0\.9",
    ):
        build_pathways(table, signatures, patients, min_gene_fraction=0.9)


def test_patients_without_genomics(demo_files):
    table, signatures, patients = demo_files
    with pytest.raises(GenomicsError, match="no genomics for patient\\(s\\) GHOST-1"):
        build_pathways(table, signatures, [*patients, "GHOST-1"])


def test_hdf5_round_trip(demo_files, tmp_path):
    table, signatures, patients = demo_files
    matrices, families = build_pathways(table, signatures, patients)
    write_pathways(tmp_path / "p.h5", matrices, families, patients, {"kinds": ["rnaseq", "cnv"], "table_sha256": "x"})
    read_patients, read_matrices, columns = read_pathways(tmp_path / "p.h5")
    assert read_patients == patients and list(read_matrices) == [f.name for f in families]
    for family in families:
        assert (
            np.array_equal(read_matrices[family.name], matrices[family.name]) and columns[family.name] == family.columns
        )


@pytest.mark.realdata
def test_real_tcga_blca_family_sizes(shared_data):
    tcga = shared_data / "tcga"
    patients = sorted(pd.read_csv(tcga / "tcga_blca_all_clean.csv.gz", usecols=["case_id"])["case_id"].unique())
    assert len(patients) == 373
    matrices, families = build_pathways(tcga / "tcga_blca_all_clean.csv.gz", tcga / "signatures.csv", patients)
    assert [len(f.columns) for f in families] == [94, 334, 521, 468, 1496, 479]
    assert all(m.shape[0] == 373 and np.isfinite(m).all() for m in matrices.values())
