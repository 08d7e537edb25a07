"""Writing the demo cohorts: tables, slides, MRI and genomics, each item from its own seeded stream.

Every slide and MRI volume is a pure function of the spec and the item's index, so items can be
rendered in any order and in parallel processes and the files are the same.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from workflow.demo import genomics, mri, tissue
from workflow.demo.design import (
    DemoSpec,
    demo_root,
    genomics_files,
    item_rng,
    mri_sheet,
    slides_sheet,
    slides_table,
    truth_table,
)
from workflow.io import write_tsv

log = logging.getLogger(__name__)

# Scan resolutions as Aperio reports them for 40x and 20x scans.
MPP_BY_MAGNIFICATION = {40: 0.252, 20: 0.499}
_SLIDE_STREAM, _MRI_STREAM = 3, 4


def spec_from_config(demo: Mapping[str, Any]) -> DemoSpec:
    """Build a DemoSpec from a cohort's ``demo:`` block with its ``modalities`` (the demo_cohort params)."""
    return DemoSpec(**dict(demo))


def write_tables(spec: DemoSpec, truth_path: str | os.PathLike[str], slides_path: str | os.PathLike[str]) -> None:
    """Write the hidden truth (one row per patient) and, for a demo with slides, its slide table."""
    truth = truth_table(spec)
    write_tsv(truth, truth_path)
    if "wsi" in spec.modalities:
        slides = slides_table(spec, truth)
        slides["mpp"] = slides["magnification"].map(MPP_BY_MAGNIFICATION)
        write_tsv(slides, slides_path)


def read_truth(truth_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read back the truth write_tables wrote, IDs as strings."""
    return pd.read_csv(truth_path, sep="\t", dtype={"patient_id": str})


def read_tables(
    truth_path: str | os.PathLike[str], slides_path: str | os.PathLike[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read back what write_tables wrote for a demo with slides, IDs as strings."""
    slides = pd.read_csv(slides_path, sep="\t", dtype={"patient_id": str, "slide_id": str})
    return read_truth(truth_path), slides


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


def write_cohorts(specs: Mapping[str, DemoSpec], workers: int = 1) -> None:
    """Write every file of each demo cohort under ``demo_root(name)``, where its sheets point.

    Tables and genomics are written here; slides and MRI volumes are rendered in ``workers``
    processes, since each costs about a second and there are dozens per cohort.
    """
    items: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
    for name, spec in specs.items():
        root = Path(demo_root(name))
        write_tables(spec, root / "truth.tsv", root / "slides.tsv")
        if "wsi" in spec.modalities:
            truth, slides = read_tables(root / "truth.tsv", root / "slides.tsv")
            for slide_id, path in slides_sheet(name, slides)[["slide_id", "path"]].itertuples(index=False):
                items.append((make_slide, (spec, truth, slides, slide_id, path)))
        else:  # no slide is rendered, but the genomics table keeps MCAT's one row per slide
            truth = read_truth(root / "truth.tsv")
            slides = slides_table(spec, truth)
        if "genomics" in spec.modalities:
            files = genomics_files(name)
            make_genomics(spec, truth, slides, files["table"], files["signatures"])
        if "mri" in spec.modalities:
            masks = mri_sheet(name, truth).drop_duplicates("patient_id")
            items += [
                (make_mri, (spec, truth, p, Path(m).parent))
                for p, m in zip(masks["patient_id"], masks["mask"], strict=True)
            ]
    if workers <= 1:
        for function, args in items:
            function(*args)
    else:
        # fork: the script runs as __main__, which spawn and forkserver would import again
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for future in [pool.submit(function, *args) for function, args in items]:
                future.result()
    log.info("wrote %d slides and MRI patients with %d worker(s)", len(items), workers)
