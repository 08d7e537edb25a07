"""Cohort sheets: read, validate against the JSON schemas, cross-check, and explain every problem.

Every error names the sheet, the line (as a spreadsheet shows it: the header is line 1), the ID
and the column, and says what is expected, so a user can fix the sheet without reading code.
A demo cohort is read as the real cohort its files make (``workflow.demo.sheets``): its sheets
are known from its seed before the demo_cohort rule writes them, and its files are not required yet.
A cohort with genomics and no patients sheet takes its patients and outcomes from the genomics
table. ``check_folds`` refuses, at parse time, folds and time bins its outcomes cannot fill.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import yaml

from model.bins import time_bin_edges
from model.config import TrainingConfig
from model.registry import MODALITIES
from workflow.demo.sheets import DemoCohort

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "config" / "schemas"
SHEETS = {"patients": "patient_id", "slides": "slide_id", "mri": "patient_id"}
ID_COLUMNS = ("patient_id", "slide_id", "sequence")
OUTCOME_COLUMNS = ("survival_months", "censorship")
# Config keys that describe one modality's data, and that modality.
MODALITY_KEYS = {"slides": "wsi", "genomics": "genomics", "mri": "mri"}

log = logging.getLogger(__name__)


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


def _unknown_patients(df: pd.DataFrame, patients: pd.DataFrame, source: str, patients_source: str) -> None:
    unknown = df[~df["patient_id"].isin(patients["patient_id"])]
    if not unknown.empty:
        listing = ", ".join(f"line {i + 2} ({p})" for i, p in zip(unknown.index, unknown["patient_id"], strict=True))
        raise CohortError(
            f"{source}: patient_id not found in {patients_source}: {listing}. Add the patients there or fix the IDs."
        )


def _without(patients: pd.DataFrame, df: pd.DataFrame, what: str, source: str, patients_source: str) -> None:
    lacking = sorted(set(patients["patient_id"]) - set(df["patient_id"]))
    if lacking:
        raise CohortError(
            f"{source}: patient(s) with no {what}: {', '.join(lacking)}. Add rows for them or remove them from {patients_source}."
        )


def _sheet(path: str, kind: str, made: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """A sheet from its file or, for a sheet a rule makes, from the content it will have."""
    if path not in made:
        return read_sheet(path, kind)
    validate_sheet(made[path], kind, f"{kind} sheet {path}")
    return made[path]


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
    demo: DemoCohort | None = None

    @property
    def patient_ids(self) -> list[str]:
        return list(self.patients.index)

    @property
    def slide_ids(self) -> list[str]:
        return [] if self.slides is None else list(self.slides.index)


def genomics_outcomes(path: str | os.PathLike[str], patient_column: str) -> pd.DataFrame:
    """The patients of a cohort with no patients sheet, from its MCAT table: one row per patient.

    MCAT tables hold one row per slide, so the rows of a patient must agree on the outcome. Rows
    are checked as a patients sheet's, with the table's line numbers.
    """
    source = f"genomics table {path}"
    if not Path(path).is_file():
        raise CohortError(f"{source} does not exist; check genomics: table: in the config")
    wanted = [patient_column, *OUTCOME_COLUMNS]
    table = pd.read_csv(path, usecols=lambda c: c in wanted, dtype={patient_column: str})
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise CohortError(
            f"{source}: no column(s) {missing}, where a cohort without a patients: sheet finds its "
            "outcomes; give the cohort a patients: sheet, or set genomics: patient_column: to the "
            "column holding patient IDs"
        )
    table = table[wanted].rename(columns={patient_column: "patient_id"})
    validate_sheet(table, "patients", source)
    distinct = table.groupby("patient_id", sort=False)[list(OUTCOME_COLUMNS)].nunique()
    disagree = distinct.index[(distinct > 1).any(axis=1)]
    if len(disagree):
        listing = "; ".join(
            f"{p} (lines {', '.join(str(i + 2) for i in table.index[table['patient_id'] == p])})" for p in disagree
        )
        raise CohortError(
            f"{source}: the rows of a patient disagree on survival_months or censorship: {listing}. "
            "Correct the table, or give the cohort a patients: sheet (one row per patient)."
        )
    return table.drop_duplicates("patient_id", ignore_index=True)


def load_cohort(name: str, cfg: Mapping[str, Any]) -> Cohort:
    """Validate one cohort's config block and sheets; raise CohortError naming what to fix."""
    where = f"cohort '{name}'"
    modalities = tuple(cfg.get("modalities", ()))
    if not 1 <= len(set(modalities)) == len(modalities) <= 2 or not set(modalities) <= set(MODALITIES):
        raise CohortError(
            f"{where}: modalities {list(modalities)}: use one or two of {', '.join(MODALITIES)}, e.g. "
            "[wsi, genomics] (TCGA-like), [wsi, mri] (liver-like) or [genomics] (an MCAT table alone)"
        )
    stray = [key for key, modality in MODALITY_KEYS.items() if cfg.get(key) and modality not in modalities]
    if stray:
        raise CohortError(
            f"{where}: {', '.join(f'{k}:' for k in stray)} given, but its modalities {list(modalities)} lack "
            f"{', '.join(MODALITY_KEYS[k] for k in stray)}; add the modality or remove the key"
        )
    # Sheets and files a rule makes (the demo_cohort rule): sheet content by path, and file paths.
    demo, made, pending = None, {}, ()
    if cfg.get("demo"):
        try:
            demo = DemoCohort.from_config(name, cfg)
        except ValueError as err:
            raise CohortError(f"{where}: {err}") from None
        cfg, made, pending = demo.config(cfg), demo.sheets, demo.files
    gcfg = dict(cfg.get("genomics", {}))
    if "genomics" in modalities:
        absent = [k for k in ("table", "signatures") if not gcfg.get(k)]
        if absent:
            raise CohortError(
                f"{where}: genomics: lacks {', '.join(absent)} (paths of the MCAT table and signatures.csv)"
            )
    needed = {}
    if cfg.get("patients") or "genomics" not in modalities:
        needed["patients"] = cfg.get("patients")
    if "wsi" in modalities:
        needed["slides"] = cfg.get("slides")
    if "mri" in modalities:
        needed["mri"] = cfg.get("mri", {}).get("sheet")
    absent = [k for k, v in needed.items() if not v]
    if absent:
        keys = ", ".join("mri: sheet:" if k == "mri" else f"{k}:" for k in absent)
        raise CohortError(f"{where}: config lacks {keys} (path of the sheet); see config/README.md")
    sheets = {kind: _sheet(path, kind, made) for kind, path in needed.items()}
    sources = {kind: f"{kind} sheet {path}" for kind, path in needed.items()}
    if "patients" not in sheets:
        sheets["patients"] = genomics_outcomes(gcfg["table"], gcfg.get("patient_column", "case_id"))
        sources["patients"] = f"genomics table {gcfg['table']}"

    patients = sheets["patients"]
    _duplicates(patients, ["patient_id"], sources["patients"])
    cohort = Cohort(name, modalities, patients.set_index("patient_id", drop=False), demo=demo)
    files = {}
    if "wsi" in modalities:
        slides = sheets["slides"]
        _duplicates(slides, ["slide_id"], sources["slides"])
        _unknown_patients(slides, patients, sources["slides"], sources["patients"])
        _without(patients, slides, "slide", sources["slides"], sources["patients"])
        files |= {f"slide {s}": p for s, p in zip(slides["slide_id"], slides["path"], strict=True)}
        cohort.slides = slides.set_index("slide_id", drop=False)
    if "mri" in modalities:
        mri = sheets["mri"]
        sequences = cfg.get("mri", {}).get("sequences")
        if not sequences:
            raise CohortError(f"{where}: config lacks mri: sequences: (the sequence names, in channel order)")
        cohort.sequences = tuple(sequences)
        _duplicates(mri, ["patient_id", "sequence"], sources["mri"])
        _unknown_patients(mri, patients, sources["mri"], sources["patients"])
        _without(patients, mri, "MRI", sources["mri"], sources["patients"])
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
        files |= {"genomics table": gcfg["table"], "signatures": gcfg["signatures"]}
        cohort.genomics = gcfg
    _missing_files({label: p for label, p in files.items() if p not in pending}, where)
    return cohort


def _fills_bins(times: np.ndarray, censorship: np.ndarray, n_bins: int) -> bool:
    try:
        time_bin_edges(times, censorship, n_bins)
    except ValueError:
        return False
    return True


def check_folds(cohort: Cohort, training: TrainingConfig, splits: str | os.PathLike[str] | None) -> None:
    """Refuse at parse time what would stop a job minutes later, and warn of folds with no C-index.

    Errors: fewer patients or events than training.folds, or event times that cannot fill
    training.n_bins time bins (too few events, or ties that make duplicate quantile edges).
    Warning: an MCAT split whose held-out patients hold no event. Stratified folds spread the
    events over the folds, so with at least one event per fold every held-out part holds one.
    """
    where = f"cohort '{cohort.name}'"
    folds, n_bins = training.folds, training.n_bins
    times = cohort.patients["survival_months"].to_numpy(float)
    censorship = cohort.patients["censorship"].to_numpy(int)
    n_patients, n_events = len(times), int((censorship == 0).sum())
    if folds > n_patients:
        raise CohortError(
            f"{where}: {n_patients} patient(s) cannot fill training: folds: {folds} held-out folds; "
            f"set training: folds: to at most {n_patients}, or add patients"
        )
    if folds > n_events:
        fix = f"set training: folds: to at most {n_events}" if n_events >= 2 else "cross-validation needs two"
        raise CohortError(
            f"{where}: {n_events} patient(s) with an event (censorship 0) for training: folds: {folds}: a "
            f"held-out fold would hold no event, hence no C-index; {fix}, or add patients with events"
        )
    if n_events < n_bins:
        raise CohortError(
            f"{where}: {n_events} patient(s) with an event (censorship 0) cannot define training: n_bins: "
            f"{n_bins} time bins (quantiles of the event times); set training: n_bins: to at most {n_events}"
        )
    if not _fills_bins(times, censorship, n_bins):
        fewer = next((k for k in range(n_bins - 1, 1, -1) if _fills_bins(times, censorship, k)), None)
        fix = f"set training: n_bins: to {fewer}" if fewer else "no number of bins works; add patients with events"
        raise CohortError(
            f"{where}: tied event times give duplicate quantile edges for training: n_bins: {n_bins} time bins; {fix}"
        )
    if splits is None:
        return
    # Imported here: scikit-learn (stratified folds) costs a second, which only MCAT folders pay.
    from model.splits import cohort_splits

    try:
        given = cohort_splits(cohort.patients, folds, training.seed, n_bins, splits)
    except ValueError as err:
        raise CohortError(f"{where}: {err}") from None
    for fold, (_, held_out) in enumerate(given):
        if (cohort.patients.loc[held_out, "censorship"] != 0).all():
            log.warning(
                "%s: fold %d (%s) holds no event among its %d held-out patients: its C-index is undefined",
                where,
                fold,
                Path(splits) / f"splits_{fold}.csv",
                len(held_out),
            )


def load_cohorts(config: Mapping[str, Any], training: TrainingConfig) -> dict[str, Cohort]:
    """All cohorts of a validated ``cohorts:`` block, each checked by load_cohort and check_folds."""
    cohorts = {}
    for name, cfg in config.items():
        cohorts[name] = load_cohort(name, cfg)
        check_folds(cohorts[name], training, cfg.get("splits"))
    return cohorts
