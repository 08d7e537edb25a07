"""Entry points the demo rules call: cohort tables, one slide, one patient's MRI, genomics."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from workflow.demo import genomics, mri, tissue
from workflow.demo.design import DemoSpec, item_rng, slides_table, truth_table
from workflow.io import write_tsv

# Scan resolutions as Aperio reports them for 40x and 20x scans.
MPP_BY_MAGNIFICATION = {40: 0.252, 20: 0.499}
_SLIDE_STREAM, _MRI_STREAM = 3, 4


def spec_from_config(demo: Mapping[str, Any]) -> DemoSpec:
    """Build a DemoSpec from a cohort's validated ``demo:`` config block."""
    return DemoSpec(**dict(demo))


def write_tables(spec: DemoSpec, truth_path: str | os.PathLike[str], slides_path: str | os.PathLike[str]) -> None:
    """Write the hidden truth (one row per patient) and the demo slide table."""
    truth = truth_table(spec)
    write_tsv(truth, truth_path)
    slides = slides_table(spec, truth)
    slides["mpp"] = slides["magnification"].map(MPP_BY_MAGNIFICATION)
    write_tsv(slides, slides_path)


def read_tables(
    truth_path: str | os.PathLike[str], slides_path: str | os.PathLike[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read back what write_tables wrote, IDs as strings."""
    truth = pd.read_csv(truth_path, sep="\t", dtype={"patient_id": str})
    slides = pd.read_csv(slides_path, sep="\t", dtype={"patient_id": str, "slide_id": str})
    return truth, slides


def make_slide(
    spec: DemoSpec, truth: pd.DataFrame, slides: pd.DataFrame, slide_id: str, path: str | os.PathLike[str]
) -> None:
    """Render one slide of the cohort and write it as an Aperio SVS."""
    slide = slides.set_index("slide_id").loc[slide_id]
    view = float(truth.set_index("patient_id").loc[slide["patient_id"], "wsi_view"])
    rng = item_rng(spec.seed, _SLIDE_STREAM, int(slide["slide_index"]))
    layout = tissue.random_layout(rng)
    mpp = float(slide["mpp"])
    tissue.write_slide(path, layout, tissue.appearance(layout, view, rng), mpp, int(slide["magnification"]))


def make_mri(spec: DemoSpec, truth: pd.DataFrame, patient_id: str, out_dir: str | os.PathLike[str]) -> None:
    """Write the five sequences and the tumour mask of one patient."""
    rows = truth.reset_index(drop=True)
    index = int(rows.index[rows["patient_id"] == patient_id][0])
    rng = item_rng(spec.seed, _MRI_STREAM, index)
    mri.write_patient(float(rows.loc[index, "other_view"]), rng, out_dir)


def make_genomics(
    spec: DemoSpec,
    truth: pd.DataFrame,
    slides: pd.DataFrame,
    table_path: str | os.PathLike[str],
    signatures_path: str | os.PathLike[str],
) -> None:
    """Write the MCAT-style genomics table and the signatures file."""
    genomics.write_genomics(spec, truth, slides, table_path, signatures_path)
