"""Writing the demo cohorts: tables, sheets, slides, MRI and genomics, each item from its own seeded stream.

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
from workflow.demo.design import DemoSpec, item_rng
from workflow.demo.sheets import SLIDE_TABLE, TRUTH, DemoCohort
from workflow.io import write_tsv

log = logging.getLogger(__name__)

_SLIDE_STREAM, _MRI_STREAM = 3, 4


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


def write_cohorts(specs: Mapping[str, DemoSpec], workers: int = 1) -> None:
    """Write ``DemoCohort(name, spec).files`` for each demo cohort, where its sheets point.

    Tables, sheets and genomics are written here; slides and MRI volumes are rendered in
    ``workers`` processes, since each costs about a second and there are dozens per cohort.
    """
    items: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
    for name, spec in specs.items():
        demo = DemoCohort(name, spec)
        write_tsv(demo.truth, demo.path(TRUTH))
        for path, sheet in demo.sheets.items():
            write_tsv(sheet, path)
        if "wsi" in spec.modalities:
            write_tsv(demo.slides, demo.path(SLIDE_TABLE))
            slides = demo.sheets[demo.sheet_path("slides")]
            items += [
                (make_slide, (spec, demo.truth, demo.slides, s, p))
                for s, p in zip(slides["slide_id"], slides["path"], strict=True)
            ]
        if "genomics" in spec.modalities:
            # MCAT tables hold one row per slide, rendered or not
            genomics.write_genomics(spec, demo.truth, demo.slides, demo.genomics["table"], demo.genomics["signatures"])
        if "mri" in spec.modalities:
            masks = demo.sheets[demo.sheet_path("mri")].drop_duplicates("patient_id")
            items += [
                (make_mri, (spec, demo.truth, p, Path(m).parent))
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
