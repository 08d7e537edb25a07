"""Slide inventory: one row per slide with vendor, pyramid and resolution, or what is wrong with it.

Run before tiling so that a missing mpp or an unopenable file is fixed in the sheet first,
instead of surfacing as a failed job hours into a run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from workflow.io import write_tsv
from workflow.slides import SlideError, describe, open_slide

COLUMNS = [
    "slide_id",
    "path",
    "vendor",
    "width",
    "height",
    "levels",
    "downsamples",
    "objective_power",
    "mpp",
    "mpp_source",
    "problem",
]


def inventory(slides: Iterable[Mapping[str, Any]], from_objective_power: bool = False) -> pd.DataFrame:
    """Describe each slide (records with slide_id, path and optional mpp override)."""
    rows = []
    for record in slides:
        slide_id, path = record["slide_id"], record["path"]
        try:
            with open_slide(path, slide_id) as slide:
                row = describe(slide, slide_id, record.get("mpp"), from_objective_power)
        except SlideError as exc:
            row = {"slide_id": slide_id, "problem": str(exc)}
        rows.append({"path": path} | row)
    return pd.DataFrame(rows, columns=COLUMNS).fillna({"problem": "", "vendor": "", "mpp_source": ""})


def write_inventory(
    slides: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], from_objective_power: bool = False
) -> pd.DataFrame:
    """Write the inventory TSV atomically and return it."""
    table = inventory(slides, from_objective_power)
    write_tsv(table, path)
    return table
