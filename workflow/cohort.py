"""Cohort sheets: read, validate against the JSON schemas, cross-check, and explain every problem.

Every error names the sheet, the line (as a spreadsheet shows it: the header is line 1), the ID
and the column, and says what is expected, so a user can fix the sheet without reading code.
A demo cohort's sheets come from its seed (``workflow.demo.design``) instead of files, and go
through the same checks except for file existence: the demo_cohort rule makes those files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from workflow.demo.design import (
    LIVER_SEQUENCES,
    DemoSpec,
    genomics_files,
    mri_sheet,
    patients_sheet,
    slides_sheet,
    slides_table,
    truth_table,
)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "config" / "schemas"
SHEETS = {"patients": "patient_id", "slides": "slide_id", "mri": "patient_id"}
ID_COLUMNS = ("patient_id", "slide_id", "sequence")
MODALITY_PAIRS = ({"wsi", "genomics"}, {"wsi", "mri"})


class CohortError(ValueError):
    """A problem in a cohort's configuration or sheets, worded for the person who wrote them."""


@cache
def sheet_schema(kind: str) -> dict[str, Any]:
    """The JSON schema (config/schemas/<kind>.schema.yaml) of one sheet kind."""
    with open(SCHEMA_DIR / f"{kind}.schema.yaml") as fh:
        return yaml.safe_load(fh)


def _plain(value: Any) -> Any:
    """Cell value as JSON would see it: integral floats become ints, numpy scalars Python ones."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _expected(schema: dict[str, Any], column: str) -> str:
    return schema["properties"].get(column, {}).get("description", "see config/README.md").strip()


def validate_sheet(df: pd.DataFrame, kind: str, source: str) -> None:
    """Check columns and every row of a sheet against its schema; raise one error listing all problems."""
    schema = sheet_schema(kind)
    missing = [c for c in schema["required"] if c not in df.columns]
    if missing:
        needs = "; ".join(f"'{c}': {_expected(schema, c)}" for c in missing)
        raise CohortError(f"{source}: missing column(s) {needs}. Columns found: {list(df.columns)}")
    validator = jsonschema.Draft202012Validator(schema)
    id_col = SHEETS[kind]
    problems = []
    for line, (_, row) in enumerate(df.iterrows(), start=2):
        record = {k: _plain(v) for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for err in validator.iter_errors(record):
            if err.validator == "required":
                column = err.message.split("'")[1]
                what = "is empty"
            else:
                column = str(err.path[0]) if err.path else "?"
                what = f"has {err.instance!r}"
            problems.append(
                f"line {line} ({id_col}={row.get(id_col, '?')}), column '{column}' {what}; expected {_expected(schema, column)}"
            )
    if problems:
        raise CohortError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


def read_sheet(path: str | os.PathLike[str], kind: str) -> pd.DataFrame:
    """Read a TSV sheet with ID columns as strings (so '001' stays '001') and validate it."""
    if not Path(path).is_file():
        raise CohortError(f"{kind} sheet {path} does not exist; check the path in config.yaml")
    df = pd.read_csv(path, sep="\t", dtype={c: str for c in ID_COLUMNS})
    df.columns = [c.strip() for c in df.columns]
    validate_sheet(df, kind, f"{kind} sheet {path}")
    return df


def _duplicates(df: pd.DataFrame, columns: list[str], source: str) -> None:
    dup = df[df.duplicated(columns, keep=False)]
    if not dup.empty:
        listing = ", ".join(
            f"line {i + 2} ({'/'.join(str(v) for v in r)})"
            for i, r in zip(dup.index, dup[columns].itertuples(index=False), strict=True)
        )
        raise CohortError(f"{source}: duplicated {' + '.join(columns)}: {listing}. Each must appear once.")


def _unknown_patients(df: pd.DataFrame, patients: pd.DataFrame, source: str) -> None:
    unknown = df[~df["patient_id"].isin(patients["patient_id"])]
    if not unknown.empty:
        listing = ", ".join(f"line {i + 2} ({p})" for i, p in zip(unknown.index, unknown["patient_id"], strict=True))
        raise CohortError(
            f"{source}: patient_id not found in the patients sheet: {listing}. Add the patients or fix the IDs."
        )


def _without(patients: pd.DataFrame, df: pd.DataFrame, what: str, source: str) -> None:
    lacking = sorted(set(patients["patient_id"]) - set(df["patient_id"]))
    if lacking:
        raise CohortError(
            f"{source}: patient(s) with no {what}: {', '.join(lacking)}. Add rows for them or remove them from the patients sheet."
        )


def _missing_files(paths: Mapping[str, str], source: str) -> None:
    missing = [f"{label}: {p}" for label, p in paths.items() if not Path(p).exists()]
    if missing:
        raise CohortError(
            f"{source}: file(s) not found (paths are relative to the directory Snakemake runs in):\n  "
            + "\n  ".join(missing)
        )


@dataclass
class Cohort:
    """A validated cohort: sheets indexed by their IDs, plus modality settings."""

    name: str
    modalities: tuple[str, ...]
    patients: pd.DataFrame
    slides: pd.DataFrame | None = None
    mri: pd.DataFrame | None = None
    sequences: tuple[str, ...] = ()
    genomics: dict[str, str] = field(default_factory=dict)
    demo: DemoSpec | None = None

    @property
    def patient_ids(self) -> list[str]:
        return list(self.patients.index)

    @property
    def slide_ids(self) -> list[str]:
        return [] if self.slides is None else list(self.slides.index)


def _demo_sheets(name: str, spec: DemoSpec) -> dict[str, pd.DataFrame]:
    truth = truth_table(spec)
    sheets = {"patients": patients_sheet(truth), "slides": slides_sheet(name, slides_table(spec, truth))}
    if spec.kind == "liver":
        sheets["mri"] = mri_sheet(name, truth)
    return sheets


def load_cohort(name: str, cfg: Mapping[str, Any]) -> Cohort:
    """Validate one cohort's config block and sheets; raise CohortError naming what to fix."""
    where = f"cohort '{name}'"
    modalities = tuple(cfg.get("modalities", ()))
    unknown = sorted(set(modalities) - {"wsi", "genomics", "mri"})
    if unknown or set(modalities) not in MODALITY_PAIRS:
        raise CohortError(
            f"{where}: modalities {list(modalities)} unknown or not a supported pair; use [wsi, genomics] (TCGA-like) or [wsi, mri] (liver-like)"
        )
    demo = DemoSpec(**cfg["demo"]) if cfg.get("demo") else None
    if demo is not None:
        if set(demo.modalities) != set(modalities):
            raise CohortError(
                f"{where}: a demo of kind '{demo.kind}' has modalities {list(demo.modalities)}, not {list(modalities)}"
            )
        sheets = _demo_sheets(name, demo)
        for kind, df in sheets.items():
            validate_sheet(df, kind, f"{where} demo {kind}")
        sources = {kind: f"{where} demo {kind} sheet" for kind in sheets}
    else:
        needed = {"patients": cfg.get("patients"), "slides": cfg.get("slides")}
        if "mri" in modalities:
            needed["mri"] = cfg.get("mri", {}).get("sheet")
        absent = [k for k, v in needed.items() if not v]
        if absent:
            keys = ", ".join("mri: sheet:" if k == "mri" else f"{k}:" for k in absent)
            raise CohortError(f"{where}: config lacks {keys} (path of the sheet); see config/README.md")
        sheets = {kind: read_sheet(path, kind) for kind, path in needed.items()}
        sources = {kind: f"{kind} sheet {path}" for kind, path in needed.items()}

    patients = sheets["patients"]
    _duplicates(patients, ["patient_id"], sources["patients"])
    slides = sheets["slides"]
    _duplicates(slides, ["slide_id"], sources["slides"])
    _unknown_patients(slides, patients, sources["slides"])
    _without(patients, slides, "slide", sources["slides"])
    files = {f"slide {s}": p for s, p in zip(slides["slide_id"], slides["path"], strict=True)}

    cohort = Cohort(
        name,
        modalities,
        patients.set_index("patient_id", drop=False),
        slides.set_index("slide_id", drop=False),
        demo=demo,
    )
    if "mri" in modalities:
        mri = sheets["mri"]
        sequences = cfg.get("mri", {}).get("sequences") or (LIVER_SEQUENCES if demo is not None else None)
        if not sequences:
            raise CohortError(f"{where}: config lacks mri: sequences: (the sequence names, in channel order)")
        cohort.sequences = tuple(sequences)
        _duplicates(mri, ["patient_id", "sequence"], sources["mri"])
        _unknown_patients(mri, patients, sources["mri"])
        _without(patients, mri, "MRI", sources["mri"])
        bad = mri[~mri["sequence"].isin(cohort.sequences)]
        if not bad.empty:
            listing = ", ".join(f"line {i + 2} ({s})" for i, s in zip(bad.index, bad["sequence"], strict=True))
            raise CohortError(
                f"{sources['mri']}: sequence not among the configured mri: sequences: {list(cohort.sequences)}: {listing}"
            )
        masks = mri.groupby("patient_id")["mask"].nunique()
        if (masks > 1).any():
            raise CohortError(
                f"{sources['mri']}: patient(s) {', '.join(masks.index[masks > 1])} list different masks; one tumour mask per patient"
            )
        files |= {
            f"MRI {r.patient_id}/{r.sequence} {col}": getattr(r, col)
            for r in mri.itertuples()
            for col in ("image", "mask")
        }
        cohort.mri = mri
    if "genomics" in modalities:
        gcfg = dict(cfg.get("genomics", {}))
        if demo is not None:
            gcfg = {**genomics_files(name), "patient_column": "case_id"} | gcfg
        absent = [k for k in ("table", "signatures") if not gcfg.get(k)]
        if absent:
            raise CohortError(
                f"{where}: genomics: lacks {', '.join(absent)} (paths of the MCAT table and signatures.csv)"
            )
        files |= {"genomics table": gcfg["table"], "signatures": gcfg["signatures"]}
        cohort.genomics = gcfg
    if demo is None:
        _missing_files(files, where)
    return cohort


def load_cohorts(config: Mapping[str, Any]) -> dict[str, Cohort]:
    """All cohorts of a validated config, each checked by load_cohort."""
    return {name: load_cohort(name, cfg) for name, cfg in config["cohorts"].items()}
