"""Genomic pathway tensors from TCGA/MCAT tables: six signature families, one matrix each.

Metadata columns are chosen by name, never by position (MCAT's loader drops the table's last
column by accident). Genomic columns are ``<GENE>_rnaseq``, ``<GENE>_cnv`` and ``<GENE>_mut``;
un-suffixed 0/1 columns (TCGA-UCEC's mutation calls) count as ``_mut`` only when configured. For
each family of signatures.csv, the columns ``<gene>_<kind>`` present for the configured kinds are
taken, sorted by name, as MCAT does. Standardisation belongs to training (fit on a fold's training
patients only, ``model.data.Standardizer``).

pathways.h5, written and read here only: dataset ``PATIENTS`` at the root, attribute ``FAMILIES``
(names in order), and per family a group ``FAMILY_GROUP.format(i)`` with attribute ``NAME`` and
datasets ``VALUES`` (patients x features) and ``COLUMNS``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd

from workflow.io import atomic_path

KINDS = ("rnaseq", "cnv", "mut")
METADATA = (
    "case_id",
    "slide_id",
    "site",
    "is_female",
    "oncotree_code",
    "age",
    "survival_months",
    "censorship",
    "train",
)
_SUFFIX = re.compile(r"^(?P<gene>.+)_(?P<kind>rnaseq|cnv|mut)$")

PATIENTS = "patients"
FAMILIES = "families"
FAMILY_GROUP = "family_{}"
NAME = "name"
VALUES = "values"
COLUMNS = "columns"


class GenomicsError(ValueError):
    """A problem in the genomics inputs, naming the column, patient or family."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Checksum of an input file, recorded so results can be traced to their data."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_signatures(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Family -> sorted unique genes, from signatures.csv (one column per family, padded with blanks)."""
    table = pd.read_csv(path, dtype=str)
    families = {}
    for family in table.columns:
        genes = sorted({g.strip() for g in table[family].dropna() if g.strip()})
        if not genes:
            raise GenomicsError(f"{path}: family '{family}' lists no genes")
        families[family.strip()] = genes
    return families


def read_table(
    path: str | os.PathLike[str], patient_column: str = "case_id", bare_as_mutations: bool = False
) -> pd.DataFrame:
    """The genomic columns of an MCAT/TCGA table with the patient ID column, all else dropped."""
    table = pd.read_csv(path, low_memory=False, dtype={patient_column: str})
    table = table.loc[:, [c for c in table.columns if not str(c).startswith("Unnamed:")]]
    if patient_column not in table.columns:
        raise GenomicsError(
            f"{path}: no patient column '{patient_column}'; set genomics: patient_column: in config.yaml"
        )
    rename = {}
    for column in table.columns:
        if column == patient_column or column in METADATA or _SUFFIX.match(str(column)):
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        if bare_as_mutations and values.dropna().isin([0, 1]).all() and values.notna().any():
            rename[column] = f"{column}_mut"
    table = table.rename(columns=rename)
    genomic = [c for c in table.columns if _SUFFIX.match(str(c))]
    if not genomic:
        raise GenomicsError(f"{path}: no <GENE>_rnaseq, _cnv or _mut columns found")
    out = table[[patient_column, *genomic]].rename(columns={patient_column: "patient_id"})
    out["patient_id"] = out["patient_id"].astype(str)
    return out


def _float(cell: object) -> float:
    """One cell as a float, NaN for text; '1e999' becomes inf, which pandas' parsers call text."""
    try:
        return float(cell)
    except ValueError:
        return np.nan


def _check_numeric(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Genomic values as floats, or an error naming the line, column and patient of the first bad cell.

    A bad cell is text, or infinite: inf passes as a number but turns a fold's standardised values into NaN.
    """
    raw = table.drop(columns="patient_id")
    values = raw.apply(lambda col: col if pd.api.types.is_numeric_dtype(col) else col.map(_float)).astype(np.float64)
    infinite = np.isinf(values.to_numpy())
    rows, cols = np.nonzero((values.isna() & raw.notna()).to_numpy() | infinite)
    if len(rows):
        row, col = rows[0], cols[0]
        what = "is not a finite number" if infinite[row, col] else "is not a number"
        more = f" ({len(rows) - 1} more such cell(s))" if len(rows) > 1 else ""
        raise GenomicsError(
            f"{source}: line {row + 2}, column '{values.columns[col]}', patient {table['patient_id'].iloc[row]}: "
            f"'{raw.iat[row, col]}' {what}{more}; write a finite number (a point as decimal separator), or "
            "leave the cell empty and set pathways: impute: median"
        )
    return values.assign(patient_id=table["patient_id"].to_numpy())


def per_patient(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """One row per patient; a patient's rows (one per slide) must carry the same genomics."""
    for patient, rows in table.groupby("patient_id"):
        if len(rows) > 1:
            values = rows.drop(columns="patient_id").to_numpy()
            differs = ~np.isclose(values, values[0], equal_nan=True).all(axis=0)
            if differs.any():
                columns = list(rows.drop(columns="patient_id").columns[differs][:5])
                raise GenomicsError(
                    f"{source}: patient {patient} has {len(rows)} rows with different genomics (e.g. {columns}); one patient must have one profile"
                )
    return table.drop_duplicates("patient_id").set_index("patient_id")


@dataclass(frozen=True)
class Family:
    """One signature family: its matched columns and the signature genes with no column."""

    name: str
    columns: list[str]
    n_genes: int
    matched_genes: list[str]
    missing_genes: list[str]


def match_families(columns: Sequence[str], signatures: Mapping[str, list[str]], kinds: Sequence[str]) -> list[Family]:
    """Columns <gene>_<kind> present for each family, sorted by name (MCAT's order)."""
    present = set(columns)
    families = []
    for name, genes in signatures.items():
        cols = sorted(f"{g}_{k}" for g in genes for k in kinds if f"{g}_{k}" in present)
        matched = sorted({c.rsplit("_", 1)[0] for c in cols})
        families.append(Family(name, cols, len(genes), matched, sorted(set(genes) - set(matched))))
    return families


def build_pathways(
    table_path: str | os.PathLike[str],
    signatures_path: str | os.PathLike[str],
    patients: Sequence[str],
    kinds: Sequence[str] = ("rnaseq", "cnv"),
    patient_column: str = "case_id",
    bare_as_mutations: bool = False,
    impute: str = "none",
    min_gene_fraction: float = 0.1,
) -> tuple[dict[str, np.ndarray], list[Family]]:
    """Per family a patients x features matrix (rows in ``patients`` order), and the family report."""
    source = str(table_path)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise GenomicsError(f"unknown genomic kinds {sorted(unknown)}; use some of {KINDS}")
    table = per_patient(_check_numeric(read_table(table_path, patient_column, bare_as_mutations), source), source)
    missing = [p for p in patients if p not in table.index]
    if missing:
        raise GenomicsError(
            f"{source}: no genomics for patient(s) {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; add them or drop them from the cohort"
        )
    table = table.loc[list(patients)]
    families = match_families(list(table.columns), read_signatures(signatures_path), kinds)
    matrices = {}
    for family in families:
        if not family.columns:
            raise GenomicsError(
                f"{source}: family '{family.name}' matched no column for kinds {list(kinds)}; check the table's suffixes and genomics kinds"
            )
        if len(family.matched_genes) < min_gene_fraction * family.n_genes:
            raise GenomicsError(
                f"{source}: family '{family.name}' matched {len(family.matched_genes)} of {family.n_genes} signature genes, "
                f"fewer than min_gene_fraction = {min_gene_fraction}; is this the right table for these signatures?"
            )
        values = table[family.columns]
        if values.isna().to_numpy().any():
            if impute != "median":
                row, col = np.argwhere(values.isna().to_numpy())[0]
                raise GenomicsError(
                    f"{source}: missing value in column '{family.columns[col]}' for patient {values.index[row]}; "
                    "fill it, or set pathways: impute: median"
                )
            values = values.fillna(values.median()).fillna(0.0)
        matrices[family.name] = values.to_numpy(np.float32)
    return matrices, families


IMPUTE_FOR_PACKAGE = ("none", "training_mean")


def package_pathways(
    table_path: str | os.PathLike[str],
    patients: Sequence[str],
    columns: Mapping[str, Sequence[str]],
    patient_column: str = "case_id",
    bare_as_mutations: bool = False,
    impute: str = "none",
) -> tuple[dict[str, np.ndarray], list[Family]]:
    """New patients' family matrices with exactly the columns a model package was trained on.

    ``columns``: family -> column names, in the package's order. A column or cell the new table
    lacks is refused, naming it; with ``impute: training_mean`` it is left NaN, which scoring sets to
    each member's training mean (0 after scaling), and the family report counts it.
    """
    source = str(table_path)
    if impute not in IMPUTE_FOR_PACKAGE:
        raise GenomicsError(f"predict: impute: {impute!r}; choose one of {IMPUTE_FOR_PACKAGE}")
    table = per_patient(_check_numeric(read_table(table_path, patient_column, bare_as_mutations), source), source)
    missing_patients = [p for p in patients if p not in table.index]
    if missing_patients:
        raise GenomicsError(
            f"{source}: no genomics for new patient(s) {', '.join(missing_patients[:20])}; add their rows or drop them from the predict sheets"
        )
    table = table.loc[list(patients)]
    wanted = list(dict.fromkeys(c for family in columns.values() for c in family))  # a gene may sit in two families
    absent = [c for c in wanted if c not in table.columns]
    if absent and impute == "none":
        raise GenomicsError(
            f"{source}: {len(absent)} of the package's {len(wanted)} genomic columns are missing: "
            f"{', '.join(absent[:20])}{' ...' if len(absent) > 20 else ''}; add them to the table (the package "
            "scores exactly the columns it was trained on), or set predict: impute: training_mean to fill them "
            "with the training patients' mean"
        )
    table = table.reindex(columns=wanted)
    if impute == "none" and table.isna().to_numpy().any():
        row, col = np.argwhere(table.isna().to_numpy())[0]
        raise GenomicsError(
            f"{source}: missing value in column '{table.columns[col]}' for patient {table.index[row]}; fill it, "
            "or set predict: impute: training_mean"
        )
    matrices, families = {}, []
    for name, family_columns in columns.items():
        matrices[name] = table[list(family_columns)].to_numpy(np.float32)
        lacking = [c for c in family_columns if c in absent]
        present = [c for c in family_columns if c not in absent]
        families.append(Family(name, list(family_columns), len(family_columns), present, lacking))
    return matrices, families


def write_pathways(
    path: str | os.PathLike[str],
    matrices: Mapping[str, np.ndarray],
    families: Sequence[Family],
    patients: Sequence[str],
    attrs: Mapping[str, object],
) -> None:
    """pathways.h5: the patients, then per family its matrix (rows in ``patients`` order) and column names."""
    strings = h5py.string_dtype()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset(PATIENTS, data=np.asarray(patients, dtype=object), dtype=strings)
        h5.attrs[FAMILIES] = [f.name for f in families]
        for key, value in attrs.items():
            h5.attrs[key] = value
        for i, family in enumerate(families):
            group = h5.create_group(FAMILY_GROUP.format(i))
            group.attrs[NAME] = family.name
            group.create_dataset(VALUES, data=matrices[family.name])
            group.create_dataset(COLUMNS, data=np.asarray(family.columns, dtype=object), dtype=strings)


def read_pathways(path: str | os.PathLike[str]) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[str]]]:
    """Patients, matrices and column names per family, in the file's family order."""
    with h5py.File(path, "r") as h5:
        patients = [p.decode() if isinstance(p, bytes) else p for p in h5[PATIENTS][:]]
        matrices, columns = {}, {}
        for i in range(len(h5.attrs[FAMILIES])):
            group = h5[FAMILY_GROUP.format(i)]
            matrices[group.attrs[NAME]] = group[VALUES][:]
            columns[group.attrs[NAME]] = [c.decode() if isinstance(c, bytes) else c for c in group[COLUMNS][:]]
    return patients, matrices, columns


def family_report(families: Sequence[Family]) -> pd.DataFrame:
    """Family sizes and missing genes, for the summary TSV."""
    return pd.DataFrame(
        {
            "family": [f.name for f in families],
            "signature_genes": [f.n_genes for f in families],
            "matched_genes": [len(f.matched_genes) for f in families],
            "columns": [len(f.columns) for f in families],
            "missing_genes": [",".join(f.missing_genes) for f in families],
        }
    )
