"""Slide opening and resolution: the order of trust, and a clear message for every bad slide."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from workflow.demo.svs import write_aperio_svs
from workflow.inventory import inventory
from workflow.slides import SlideError, describe, open_slide, resolve_mpp


def test_resolution_order_of_trust():
    props = {
        "openslide.mpp-x": "0.2527",
        "openslide.mpp-y": "0.2529",
        "aperio.MPP": "0.3",
        "openslide.objective-power": "40",
    }
    assert resolve_mpp(props, "s", override=0.5).source == "sheet override"
    res = resolve_mpp(props, "s")
    assert res.source == "openslide.mpp" and res.mpp == pytest.approx(0.2528)
    assert resolve_mpp({"aperio.MPP": "0.3"}, "s").mpp == 0.3
    tiff = resolve_mpp({"tiff.ResolutionUnit": "centimeter", "tiff.XResolution": "20000"}, "s")
    assert (tiff.mpp, tiff.source) == (0.5, "tiff.XResolution")
    assert resolve_mpp({"tiff.ResolutionUnit": "inch", "tiff.XResolution": "50800"}, "s").mpp == 0.5
    assert resolve_mpp({"openslide.objective-power": "40"}, "s", from_objective_power=True).mpp == 0.25


def test_no_resolution_is_refused_with_the_fix():
    with pytest.raises(
        SlideError,
        match=r"slide S9: no resolution \(mpp\).*mpp column of slides.tsv.*objective power 20x.*mpp_from_objective_power",
    ):
        resolve_mpp({"openslide.objective-power": "20", "tiff.ResolutionUnit": "none"}, "S9")
    with pytest.raises(SlideError, match="slide S9: no resolution"):
        resolve_mpp({"openslide.mpp-x": "0", "aperio.MPP": "abc"}, "S9", override=float("nan"))


def test_missing_file(tmp_path):
    with pytest.raises(SlideError, match=r"slide S1: file .*nope.svs not found; fix its path in slides.tsv"):
        open_slide(tmp_path / "nope.svs", "S1")


def test_stripped_tiff_is_called_non_pyramidal(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.full((300, 400, 3), 200, np.uint8), photometric="rgb")
    with pytest.raises(SlideError, match=r"slide P1 .*plain \(stripped, non-pyramidal\) TIFF.*--tile --pyramid"):
        open_slide(tmp_path / "plain.tif", "P1")


def test_dicom_is_named(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    with pytest.raises(SlideError, match=r"slide D1 .*DICOM file, which this OpenSlide build cannot read"):
        open_slide(path, "D1")


def test_corrupt_file(tmp_path):
    good = tmp_path / "good.svs"
    write_aperio_svs(good, np.full((600, 700, 3), 230, np.uint8), mpp=0.5, app_mag=20, downsamples=(1, 4))
    bad = tmp_path / "bad.svs"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(SlideError, match="slide B1"):
        open_slide(bad, "B1")


def test_inventory_records_problems_instead_of_failing(tmp_path):
    write_aperio_svs(tmp_path / "ok.svs", np.full((600, 700, 3), 230, np.uint8), mpp=0.25, app_mag=40)
    tifffile.imwrite(tmp_path / "nompp.tif", np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    table = inventory(
        [
            {"slide_id": "ok", "path": str(tmp_path / "ok.svs"), "mpp": None},
            {"slide_id": "nompp", "path": str(tmp_path / "nompp.tif"), "mpp": None},
            {"slide_id": "fixed", "path": str(tmp_path / "nompp.tif"), "mpp": 0.5},
            {"slide_id": "gone", "path": str(tmp_path / "gone.svs")},
        ]
    ).set_index("slide_id")
    assert table.loc["ok", "mpp"] == 0.25 and table.loc["ok", "levels"] == 3 and table.loc["ok", "problem"] == ""
    assert "no resolution" in table.loc["nompp", "problem"]
    assert table.loc["fixed", "mpp"] == 0.5 and table.loc["fixed", "mpp_source"] == "sheet override"
    assert "not found" in table.loc["gone", "problem"]


def test_real_cmu_small_region(cmu_small_region):
    with open_slide(cmu_small_region, "CMU-1-Small-Region") as slide:
        row = describe(slide, "CMU-1-Small-Region")
    assert row["vendor"] == "aperio" and row["objective_power"] == 20
    assert row["mpp"] == pytest.approx(0.499) and row["mpp_source"] == "openslide.mpp"
    assert (row["width"], row["height"], row["levels"]) == (2220, 2967, 1)


@pytest.mark.realdata
def test_real_bad_slides_are_explained(shared_data):
    wsi = shared_data / "wsi"
    with pytest.raises(SlideError, match="DICOM"):
        open_slide(wsi / "small_dicom_wsi.dcm", "dicom")
    with pytest.raises(SlideError, match="non-pyramidal"):
        open_slide(wsi / "kidney-48-5-nonpyramidal.tif", "kidney")
    with open_slide(wsi / "TCGA-CR-7395-01A-01-TS1.svs", "TCGA-CR-7395") as slide:
        with pytest.raises(SlideError, match="slide TCGA-CR-7395: no resolution"):
            resolve_mpp(dict(slide.properties), "TCGA-CR-7395")
        row = describe(slide, "TCGA-CR-7395", override=0.5)
    assert (row["mpp"], row["mpp_source"], row["levels"]) == (0.5, "sheet override", 2)
