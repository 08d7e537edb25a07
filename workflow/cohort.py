"""Cohort sheets: read, validate against the JSON schemas, cross-check, and explain every problem.

Every error names the sheet, the line (as a spreadsheet shows it: the header is line 1), the ID
and the column, and says what is expected, so a user can fix the sheet without reading code.
A demo cohort is read as the real cohort its files make (``workflow.demo.sheets``): its sheets
are known from its seed before the demo_cohort rule writes them, and its files are not required yet.
A cohort with genomics and no patients sheet takes its patients and outcomes from the genomics
table. ``check_folds`` refuses, at parse time, folds and time bins its outcomes cannot fill.
Numeric columns (schema type number or integer) are read cell by cell, so one bad cell is reported
alone rather than turning its whole column into text, and must hold finite numbers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
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
SHEETS = {"patients": "patient_id", "new_patients": "patient_id", "slides": "slide_id", "mri": "patient_id"}
ID_COLUMNS = ("patient_id", "slide_id", "sequence")
OUTCOME_COLUMNS = ("survival_months", "censorship")
# Config keys that describe one modality's data, and that modality.
MODALITY_KEYS = {"slides": "wsi", "genomics": "genomics", "mri": "mri"}
COMMA_DECIMAL = re.compile(r"[+-]?\d+,\d+")
# What to do when one image file is listed twice, per sheet kind.
SAME_FILE_FIX = {
    "slides": "One image in two rows could sit in training and in test; keep one row per slide file.",
    "mri": "One image for two patients could sit in training and in test; give each patient their own files.",
}
# Files compared for identical content are hashed whole up to WHOLE_HASH bytes, else at both ends.
WHOLE_HASH, END_HASH = 64 << 20, 8 << 20

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


def numeric_columns(kind: str) -> list[str]:
    """Columns of a sheet kind whose schema type is number or integer: read cell by cell."""
    return [c for c, p in sheet_schema(kind)["properties"].items() if p.get("type") in ("number", "integer")]


def _number(cell: Any, expected: str) -> tuple[float, str | None]:
    """A numeric cell as a float (NaN when empty) and, when it holds no finite number, what is wrong."""
    if pd.isna(cell):
        return math.nan, None
    try:
        value = float(cell)
    except ValueError:
        if COMMA_DECIMAL.fullmatch(str(cell).strip()):
            return math.nan, f"has {cell!r}; use a point as decimal separator: {str(cell).strip().replace(',', '.')}"
        return math.nan, f"has {cell!r}, not a number; expected {expected}"
    if not math.isfinite(value):
        return math.nan, f"has {_plain(cell)!r}, not a finite number; expected {expected}"
    return value, None


def _numbers(df: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, dict[tuple[int, str], str]]:
    """The sheet with its numeric columns as floats, and the problem of each cell that is no finite number."""
    schema, converted, problems = sheet_schema(kind), {}, {}
    for column in [c for c in numeric_columns(kind) if c in df.columns]:
        values = []
        for pos, cell in enumerate(df[column]):
            value, wrong = _number(cell, _expected(schema, column))
            values.append(value)
            if wrong:
                problems[pos, column] = wrong
        converted[column] = np.array(values, dtype=float)
    return df.assign(**converted), problems


def validate_sheet(df: pd.DataFrame, kind: str, source: str) -> pd.DataFrame:
    """Check columns and every cell of a sheet against its schema; raise one error listing every bad cell.

    Returns the sheet with its numeric columns converted (integer ones to int64).
    """
    schema = sheet_schema(kind)
    missing = [c for c in schema["required"] if c not in df.columns]
    if missing:
        needs = "; ".join(f"'{c}': {_expected(schema, c)}" for c in missing)
        raise CohortError(f"{source}: missing column(s) {needs}. Columns found: {list(df.columns)}")
    df, problems = _numbers(df.reset_index(drop=True), kind)
    validator = jsonschema.Draft202012Validator(schema)
    for pos, row in df.iterrows():
        record = {k: _plain(v) for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for err in validator.iter_errors(record):
            if err.validator == "required":
                column, what = err.message.split("'")[1], "is empty (or NA)"
            else:
                column, what = (str(err.path[0]) if err.path else "?"), f"has {err.instance!r}"
            problems.setdefault((pos, column), f"{what}; expected {_expected(schema, column)}")
    if problems:
        id_col, order = SHEETS[kind], {c: i for i, c in enumerate(df.columns)}
        listing = [
            f"line {pos + 2} ({id_col}={df[id_col].iloc[pos] if id_col in df else '?'}), column '{column}' {what}"
            for (pos, column), what in sorted(problems.items(), key=lambda p: (p[0][0], order.get(p[0][1], -1)))
        ]
        raise CohortError(f"{source}: {len(listing)} problem(s):\n  " + "\n  ".join(listing))
    integers = [c for c, p in schema["properties"].items() if p.get("type") == "integer" and c in df.columns]
    return df.astype({c: np.int64 for c in integers if df[c].notna().all()})


def read_sheet(path: str | os.PathLike[str], kind: str) -> pd.DataFrame:
    """Read a TSV sheet with ID columns as strings (so '001' stays '001') and validate it.

    Numeric columns are read as text and converted cell by cell by ``validate_sheet``.
    """
    if not Path(path).is_file():
        raise CohortError(f"{kind} sheet {path} does not exist; check the path in config.yaml")
    df = pd.read_csv(path, sep="\t", dtype={c: str for c in (*ID_COLUMNS, *numeric_columns(kind))})
    df.columns = [c.strip() for c in df.columns]
    return validate_sheet(df, kind, f"{kind} sheet {path}")


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
    return validate_sheet(made[path], kind, f"{kind} sheet {path}")


def _missing_files(paths: Mapping[str, str], source: str) -> None:
    missing = [f"{label}: {p}" for label, p in paths.items() if not Path(p).exists()]
    if missing:
        raise CohortError(
            f"{source}: file(s) not found (paths are relative to the directory Snakemake runs in):\n  "
            + "\n  ".join(missing)
        )


@dataclass(frozen=True)
class Listed:
    """One image file as a sheet lists it: where (line, ID, column), its path, and whose it is."""

    label: str
    path: str
    owner: str  # rows of one owner may share a file (a patient's MRI mask, one per sequence row)


def _slide_files(slides: pd.DataFrame) -> list[Listed]:
    return [
        Listed(f"line {i + 2} (slide_id={s}, {p})", p, s)
        for i, s, p in zip(slides.index, slides["slide_id"], slides["path"], strict=True)
    ]


def _mri_files(mri: pd.DataFrame) -> list[Listed]:
    return [
        Listed(
            f"line {r.Index + 2} (patient_id={r.patient_id}, {column} {getattr(r, column)})",
            getattr(r, column),
            r.patient_id,
        )
        for r in mri.itertuples()
        for column in ("image", "mask")
    ]


def content_digest(path: str, size: int) -> str:
    """sha256 of a file up to WHOLE_HASH (64 MB), else of its first and last END_HASH (8 MB) bytes.

    Slides of gigabytes are so compared in a fraction of a second at each parse, at the cost of calling
    identical two files that differ only in their middle: a warning, never an error.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= WHOLE_HASH:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(fh.read(END_HASH))
            fh.seek(-END_HASH, os.SEEK_END)
            digest.update(fh.read(END_HASH))
    return digest.hexdigest()


def sampled_digest(path: str, size: int, blocks: int = 16, block: int = 64 << 10) -> str:
    """sha256 of ``blocks`` blocks of ``block`` bytes spread evenly over the file: a cheap first look.

    Volumes of one shape all have one size, so most MRI files share a size; sampling the middle
    too tells apart scans whose first and last bytes are the same background.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for offset in np.linspace(0, max(size - block, 0), blocks).astype(np.int64):
            fh.seek(int(offset))
            digest.update(fh.read(block))
    return digest.hexdigest()


def _grouped(items: Iterable[Listed], key: Callable[[Listed], Any]) -> list[list[Listed]]:
    groups = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return [group for group in groups.values() if len(group) > 1]


def _warn_same_content(files: Iterable[Listed], source: str) -> None:
    """Warn of different files with identical content, perhaps one image copied.

    Compared among equal sizes only, first by ``sampled_digest``, then by ``content_digest``.
    """
    for group in _grouped(files, lambda item: os.path.getsize(item.path)):
        size = os.path.getsize(group[0].path)
        for alike in _grouped(group, lambda item, size=size: sampled_digest(item.path, size)):
            for same in _grouped(alike, lambda item, size=size: content_digest(item.path, size)):
                log.warning(
                    "%s: %s are different files with identical content: if they are one image, keep one row for "
                    "it, so that it cannot sit in training and in test",
                    source,
                    " and ".join(item.label for item in same),
                )


def _same_files(files: list[Listed], source: str, fix: str) -> None:
    """Refuse one file listed for two owners, by device and inode (the same path, a symlink or a hard link).

    One image under two slide IDs or two patients could sit in a training fold and its held-out fold.
    """
    by_file: dict[tuple[int, int], dict[str, Listed]] = defaultdict(dict)
    for item in files:
        stat = os.stat(item.path)
        by_file[stat.st_dev, stat.st_ino].setdefault(item.owner, item)
    clashes = [" and ".join(i.label for i in owners.values()) for owners in by_file.values() if len(owners) > 1]
    if clashes:
        raise CohortError(f"{source}: the same file is listed twice: {'; '.join(clashes)}. {fix}")
    _warn_same_content((next(iter(owners.values())) for owners in by_file.values()), source)


def _genomics_covers(table: str, patient_column: str, patients: pd.DataFrame, patients_source: str) -> None:
    """Refuse at parse time the patients the genomics table lacks, which build_pathways would refuse later."""
    source = f"genomics table {table}"
    ids = pd.read_csv(table, usecols=lambda c: c == patient_column, dtype=str)
    if patient_column not in ids.columns:
        raise CohortError(
            f"{source}: no column '{patient_column}' with patient IDs; set genomics: patient_column: in the config"
        )
    lacking = patients[~patients["patient_id"].isin(ids[patient_column])]
    if not lacking.empty:
        listing = ", ".join(f"line {i + 2} ({p})" for i, p in zip(lacking.index, lacking["patient_id"], strict=True))
        raise CohortError(
            f"{source}: no row (column '{patient_column}') for patient(s) of {patients_source}: {listing}. "
            f"Add their genomics to the table, or remove them from {patients_source}."
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
    patients_source: str = "the patients sheet"  # where the outcomes come from, for check_folds' messages

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
    table = pd.read_csv(path, usecols=lambda c: c in wanted, dtype=dict.fromkeys(wanted, str))
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise CohortError(
            f"{source}: no column(s) {missing}, where a cohort without a patients: sheet finds its "
            "outcomes; give the cohort a patients: sheet, or set genomics: patient_column: to the "
            "column holding patient IDs"
        )
    table = validate_sheet(table[wanted].rename(columns={patient_column: "patient_id"}), "patients", source)
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


def load_cohort(name: str, cfg: Mapping[str, Any], scoring: bool = False) -> Cohort:
    """Validate one cohort's config block and sheets; raise CohortError naming what to fix.

    ``scoring``: new patients for a model package (``load_new_patients``): outcomes optional,
    no signatures (the package names its gene columns).
    """
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
        absent = [k for k in ("table",) if not gcfg.get(k)] + [
            k for k in ("signatures",) if not (scoring or gcfg.get(k))
        ]
        if absent:
            raise CohortError(
                f"{where}: genomics: lacks {', '.join(absent)} (paths of the MCAT table and signatures.csv)"
            )
    needed = {}
    if cfg.get("patients") or "genomics" not in modalities or scoring:
        needed["patients"] = cfg.get("patients")
    if "wsi" in modalities:
        needed["slides"] = cfg.get("slides")
    if "mri" in modalities:
        needed["mri"] = cfg.get("mri", {}).get("sheet")
    absent = [k for k, v in needed.items() if not v]
    if absent:
        keys = ", ".join("mri: sheet:" if k == "mri" else f"{k}:" for k in absent)
        raise CohortError(f"{where}: config lacks {keys} (path of the sheet); see config/README.md")
    sheets = {kind: _sheet(path, kind, made) for kind, path in needed.items() if not (scoring and kind == "patients")}
    if scoring:
        sheets["patients"] = _new_patients(needed["patients"])
    sources = {kind: f"{kind} sheet {path}" for kind, path in needed.items()}
    if "patients" not in sheets:
        sheets["patients"] = genomics_outcomes(gcfg["table"], gcfg.get("patient_column", "case_id"))
        sources["patients"] = f"genomics table {gcfg['table']}"

    patients = sheets["patients"]
    _duplicates(patients, ["patient_id"], sources["patients"])
    cohort = Cohort(
        name, modalities, patients.set_index("patient_id", drop=False), demo=demo, patients_source=sources["patients"]
    )
    files, listed = {}, {}
    if "wsi" in modalities:
        slides = sheets["slides"]
        _duplicates(slides, ["slide_id"], sources["slides"])
        _unknown_patients(slides, patients, sources["slides"], sources["patients"])
        _without(patients, slides, "slide", sources["slides"], sources["patients"])
        files |= {f"slide {s}": p for s, p in zip(slides["slide_id"], slides["path"], strict=True)}
        listed["slides"] = _slide_files(slides)
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
        if scoring:  # a sequence the package does not read is not read
            mri = mri[mri["sequence"].isin(cohort.sequences)]
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
        listed["mri"] = _mri_files(mri)
        cohort.mri = mri
    if "genomics" in modalities:
        files |= {"genomics table": gcfg["table"]} | ({} if scoring else {"signatures": gcfg["signatures"]})
        cohort.genomics = gcfg
    _missing_files({label: p for label, p in files.items() if p not in pending}, where)
    for kind, items in listed.items():
        _same_files([i for i in items if i.path not in pending], sources[kind], SAME_FILE_FIX[kind])
    if "genomics" in modalities and "patients" in needed and gcfg["table"] not in pending:
        _genomics_covers(gcfg["table"], gcfg.get("patient_column", "case_id"), patients, sources["patients"])
    return cohort


def _new_patients(path: str) -> pd.DataFrame:
    """The patients sheet of new patients: survival_months and censorship optional, but both or neither."""
    if not Path(path).is_file():
        raise CohortError(f"patients sheet {path} does not exist; check predict: patients: in the config")
    columns = set(pd.read_csv(path, sep="\t", nrows=0).columns.str.strip())
    given = [c for c in OUTCOME_COLUMNS if c in columns]
    if len(given) == 1:
        raise CohortError(
            f"patients sheet {path} has '{given[0]}' but not '{(set(OUTCOME_COLUMNS) - set(given)).pop()}': give both "
            "survival columns (an external validation) or neither (scoring only)"
        )
    return read_sheet(path, "patients" if given else "new_patients")


def load_new_patients(name: str, cfg: Mapping[str, Any], sequences: Sequence[str] = ()) -> Cohort:
    """New patients to score with a model package (``predict:``): a cohort whose outcomes are optional.

    ``sequences``: the package's MRI sequences; every patient must have each one (a model never
    saw a zero channel where it learnt an image).
    """
    cohort = load_cohort(name, cfg, scoring=True)
    if cohort.mri is not None:
        have = cohort.mri.groupby("patient_id")["sequence"].agg(set)
        lacking = {p: sorted(set(sequences) - seqs) for p, seqs in have.items() if set(sequences) - seqs}
        if lacking:
            listing = "; ".join(f"{p}: {', '.join(s)}" for p, s in lacking.items())
            raise CohortError(
                f"{cfg['mri']['sheet']}: MRI sequence(s) the package reads are missing: {listing}. The package "
                f"was trained on {list(sequences)}; add the images, or leave these patients out"
            )
    return cohort


def has_outcomes(cohort: Cohort) -> bool:
    """Whether a cohort's patients sheet carries survival_months and censorship (new patients may not)."""
    return all(c in cohort.patients.columns for c in OUTCOME_COLUMNS)


def _fills_bins(times: np.ndarray, censorship: np.ndarray, n_bins: int) -> bool:
    try:
        time_bin_edges(times, censorship, n_bins)
    except ValueError:
        return False
    return True


def check_folds(cohort: Cohort, training: TrainingConfig, splits: str | os.PathLike[str] | None) -> None:
    """Refuse at parse time what would stop a job minutes later, and warn of folds with no C-index.

    Errors: fewer patients or events than training.folds (all patients censored: no event at all),
    event times that cannot fill training.n_bins time bins (too few events, all at one time, or ties
    that make duplicate quantile edges), and MCAT split files that do not partition the cohort.
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
    if n_events == 0:
        raise CohortError(
            f"{where}: all {n_patients} patients are censored (column 'censorship' of {cohort.patients_source} "
            "is 1 everywhere): no event to learn from or to score a C-index on; check the convention "
            "(1 = censored/alive, 0 = event/death, as in TCGA/MCAT), or add patients with events"
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
    event_times = np.unique(times[censorship == 0])
    if len(event_times) == 1:
        raise CohortError(
            f"{where}: all {n_events} event times (column 'survival_months' of {cohort.patients_source}, rows with "
            f"censorship 0) are {event_times[0]:g} months: time bins need events at different times; check "
            "the times, or add patients with events at other times"
        )
    if not _fills_bins(times, censorship, n_bins):
        fewer = next((k for k in range(n_bins - 1, 1, -1) if _fills_bins(times, censorship, k)), None)
        fix = f"set training: n_bins: to {fewer}" if fewer else "no number of bins works; add patients with events"
        raise CohortError(
            f"{where}: tied event times give duplicate quantile edges for training: n_bins: {n_bins} time bins; {fix}"
        )
    training_events = n_events - -(-n_events // folds)  # the fewest a stratified training part holds
    if splits is None:
        _training_parts_fill_bins(where, training, training_events)
        return
    # Imported here: scikit-learn (stratified folds) costs a second, which only MCAT folders pay.
    from model.splits import cohort_splits

    try:
        given = cohort_splits(cohort.patients, folds, training.seed, n_bins, splits)
    except ValueError as err:
        raise CohortError(
            f"{where}: {err}. Fix the files in splits: {splits}, or remove splits: to draw stratified folds"
        ) from None
    training_events = min(int((cohort.patients.loc[train, "censorship"] == 0).sum()) for train, _ in given)
    _training_parts_fill_bins(where, training, training_events)
    for fold, (_, held_out) in enumerate(given):
        if (cohort.patients.loc[held_out, "censorship"] != 0).all():
            log.warning(
                "%s: fold %d (%s) holds no event among its %d held-out patients: its C-index is undefined",
                where,
                fold,
                Path(splits) / f"splits_{fold}.csv",
                len(held_out),
            )


def _training_parts_fill_bins(where: str, training: TrainingConfig, training_events: int) -> None:
    """With bins from each fold's training patients (training: bins: fold), each part must fill them."""
    if training.resolved().bins != "fold" or training_events >= training.n_bins:
        return
    fix = f"set training: n_bins: to at most {training_events}, " if training_events >= 2 else ""
    raise CohortError(
        f"{where}: a fold's training patients hold as few as {training_events} event(s), fewer than training: "
        f"n_bins: {training.n_bins} (time bins are quantiles of each fold's training event times, training: "
        f"bins: fold); {fix}training: bins: cohort, fewer folds, or add patients with events"
    )


def load_cohorts(config: Mapping[str, Any], training: TrainingConfig) -> dict[str, Cohort]:
    """All cohorts of a validated ``cohorts:`` block, each checked by load_cohort and check_folds."""
    cohorts = {}
    for name, cfg in config.items():
        cohorts[name] = load_cohort(name, cfg)
        check_folds(cohorts[name], training, cfg.get("splits"))
    return cohorts
