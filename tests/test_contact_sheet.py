"""Tiling contact sheet: one figure of the cohort's grid pictures, clear errors for missing ones."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from workflow.tiling.contact_sheet import contact_sheet


def cohort(tmp_path, n: int = 3):
    """n grid pictures (the last one an excluded slide's) and their tiling summary."""
    pictures, rows = {}, []
    for i in range(n):
        slide = f"DT-{i:04d}-01Z-00-DX1"
        picture = np.full((300, 400, 3), 240, np.uint8)
        cv2.ellipse(picture, (200, 150), (120, 80), 0, 0, 360, (170, 110, 200), -1)
        for x in range(90, 310, 20):
            cv2.line(picture, (x, 70), (x, 230), (20, 20, 20), 1)
        pictures[slide] = tmp_path / f"{slide}.grid.jpg"
        cv2.imwrite(str(pictures[slide]), picture)
        excluded = i == n - 1
        rows.append(
            {
                "slide_id": slide,
                "status": "excluded" if excluded else "ok",
                "patches": 0 if excluded else 30 + i,
                "reason": "no tissue found at the segmentation level; check the slide" if excluded else np.nan,
            }
        )
    return pictures, pd.DataFrame(rows)


def test_contact_sheet_writes_png_and_pdf(tmp_path):
    pictures, summary = cohort(tmp_path)
    paths = [tmp_path / "sheet.png", tmp_path / "sheet.pdf"]
    contact_sheet(pictures, summary, "demo_tcga: tiling", paths)
    assert all(p.stat().st_size > 5_000 for p in paths)
    image = cv2.imread(str(paths[0]))
    assert image is not None and image.std() > 10


def test_many_slides_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr("workflow.tiling.contact_sheet.MAX_PANELS", 2)
    pictures, summary = cohort(tmp_path, 3)
    contact_sheet(pictures, summary, "capped", [tmp_path / "sheet.png"])
    assert (tmp_path / "sheet.png").stat().st_size > 5_000


def test_missing_picture_names_the_slide(tmp_path):
    pictures, summary = cohort(tmp_path)
    pictures["DT-0001-01Z-00-DX1"].unlink()
    with pytest.raises(ValueError, match=r"slide DT-0001-01Z-00-DX1: grid picture .* is missing"):
        contact_sheet(pictures, summary, "t", [tmp_path / "sheet.png"])
    with pytest.raises(ValueError, match="not in the tiling summary"):
        contact_sheet(pictures, summary.iloc[:1], "t", [tmp_path / "sheet.png"])


def test_no_slides_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no slides"):
        contact_sheet({}, pd.DataFrame(columns=["slide_id", "status", "patches", "reason"]), "t", [tmp_path / "s.png"])
    assert not (tmp_path / "s.png").exists()
