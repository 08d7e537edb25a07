"""Slide opening and resolution: the order of trust, and a clear message for every bad slide."""

from __future__ import annotations

import numpy as np
import openslide
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


RECOPY = "re-copy it and compare checksums (sha256sum) with the source"


@pytest.fixture(scope="module")
def svs(tmp_path_factory):
    """A small two-level SVS, its bytes, where level 0's tile data ends and where level 1's directory starts."""
    path = tmp_path_factory.mktemp("svs") / "good.svs"
    write_aperio_svs(path, np.full((600, 700, 3), 230, np.uint8), mpp=0.5, app_mag=20, downsamples=(1, 4))
    with tifffile.TiffFile(path) as tif:
        level0 = tif.pages[0]
        end0 = max(o + n for o, n in zip(level0.dataoffsets, level0.databytecounts, strict=True))
        second_ifd = tif.pages[1].offset
    return path.read_bytes(), end0, second_ifd


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"", f"an empty file (0 bytes); {RECOPY}"),
        (
            b"\n<!DOCTYPE html><html><body>Sign in</body></html>",
            "an HTML page, not a slide: a failed download saved a web (error or login) page instead; download it again",
        ),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 1337\n",
            "a git-lfs pointer file, not the slide itself; run `git lfs pull` in the repository it comes from, "
            "or download the file itself",
        ),
        (b"404: Not Found", "a text file (it begins '404: Not Found'), not a slide; copy or download the slide itself"),
    ],
)
def test_a_file_that_is_no_slide_is_named_for_what_it_is(tmp_path, content, what):
    path = tmp_path / "B1.svs"
    path.write_bytes(content)
    with pytest.raises(SlideError) as refused:
        open_slide(path, "B1")
    assert str(refused.value) == f"slide B1 ({path}): cannot be opened: it is {what}"


def test_truncated_slide_says_where_the_file_ends(tmp_path, svs):
    data, end0, second_ifd = svs
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[:2000])  # inside level 0's tile data
    with pytest.raises(SlideError) as refused:
        open_slide(cut, "B1")
    assert str(refused.value) == (
        f"slide B1 ({cut}): cannot be opened: it is truncated: the file ends at byte 2,000, before the end of its "
        f"image data (byte {end0:,}); {RECOPY}"
    )
    cut.write_bytes(data[:second_ifd])  # level 0 whole, the next directory gone
    with pytest.raises(SlideError) as refused:
        open_slide(cut, "B1")
    assert str(refused.value) == (
        f"slide B1 ({cut}): cannot be opened: it is truncated or damaged: its TIFF directory cannot be read in full "
        f"(tifffile: invalid page offset {second_ifd}); {RECOPY}"
    )


def test_slide_that_opens_but_misses_image_data_is_refused(tmp_path, svs):
    """Cut inside a last page after the pyramid (a label image): OpenSlide opens the file and reads the pyramid."""
    cut = tmp_path / "cut.svs"
    cut.write_bytes(svs[0])
    with tifffile.TiffWriter(cut, append=True) as tif:
        tif.write(np.full((64, 64, 3), 90, np.uint8), photometric="rgb", description="label 64x64", metadata=None)
    size = cut.stat().st_size
    cut.write_bytes(cut.read_bytes()[:-100])
    with openslide.OpenSlide(cut) as slide:
        slide.read_region((0, 0), 0, (700, 600))
    with pytest.raises(SlideError) as refused:
        open_slide(cut, "B1")
    assert str(refused.value) == (
        f"slide B1 ({cut}): cannot be used: it is truncated: the file ends at byte {size - 100:,}, before the "
        f"end of its image data (byte {size:,}); {RECOPY}"
    )
    table = inventory([{"slide_id": "B1", "path": str(cut)}])
    assert table.loc[0, "problem"] == str(refused.value)


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
