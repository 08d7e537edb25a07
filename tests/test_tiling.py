"""Tiling: segmentation against known geometry, the physical grid, CLAM semantics, bad slides, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import h5py
import numpy as np
import openslide
import pytest
import tifffile

from workflow.demo import tissue
from workflow.demo.design import item_rng
from workflow.demo.svs import write_aperio_svs
from workflow.slides import SlideError
from workflow.tiling import qc
from workflow.tiling.coords import CoordsError, PatchGeometry, read_coords
from workflow.tiling.grid import choose_patch_spec, clam_grid, global_grid, keeps
from workflow.tiling.params import CLAM_REF_PATCH_MM2, preset, tiling_params
from workflow.tiling.segment import Tissue, area_thresholds, choose_seg_level, read_seg_image
from workflow.tiling.summary import summary
from workflow.tiling.tile import TileOutputs, tile_slide

# The test tissue is the demo layout enlarged 2x (about 1.3 mm² of tissue): still small enough to
# render quickly, large enough that CLAM's segmentation at 16x is accurate to a few per cent.
SCALE = 2
# Keep every tissue piece and hole of the layout, drop debris and the pen stroke.
KEEP_ALL = {"seg": {"a_t": 0.05 * SCALE**2, "a_h": 0.004 * SCALE**2}}


def outputs(tmp_path, name="s"):
    return TileOutputs(*(str(tmp_path / f"{name}.{ext}") for ext in ("h5", "geojson", "mask.jpg", "grid.jpg")))


def synthetic_slide(tmp_path, mpp, name="slide", scale=1.0):
    """A demo-style slide with known geometry, scanned at ``mpp``; returns (path, layout)."""
    rng = item_rng(77, 0)
    layout = tissue.random_layout(rng, scale)
    path = tmp_path / f"{name}.svs"
    tissue.write_slide(path, layout, tissue.appearance(layout, 0.0, rng), mpp, round(10 / mpp))
    return path, layout


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same tissue scanned at 40x (0.25 µm/px) and 20x (0.5 µm/px)."""
    tmp = tmp_path_factory.mktemp("pair")
    return {mpp: synthetic_slide(tmp, mpp, f"s{mpp}", SCALE) for mpp in (0.25, 0.5)}


def in_truth(layout, x_um, y_um, tolerance_um):
    """Point in tissue (blob minus holes) of the truth layout, allowing the segmentation pixel size."""
    point = (float(x_um), float(y_um))
    blob = max(cv2.pointPolygonTest(b.astype(np.float32), point, True) for b in layout.blobs)
    hole = max((cv2.pointPolygonTest(h.astype(np.float32), point, True) for h in layout.holes), default=-math.inf)
    return blob >= -tolerance_um and hole <= tolerance_um


@pytest.mark.parametrize(("mpp", "scale"), [(0.25, SCALE), (0.5, 2 * SCALE)])
def test_segmented_area_matches_truth(pair, mpp, scale, tmp_path):
    """Within 5% once tissue pieces span more than ~300 segmentation pixels (here 4 µm/px at 40x, 8 at 20x)."""
    path, layout = pair[mpp] if scale == SCALE else synthetic_slide(tmp_path, mpp, "large", scale)
    seg = {"a_t": 0.05 * scale**2, "a_h": 0.004 * scale**2}
    attrs = tile_slide("s", path, tiling_params({"seg": seg}), outputs(tmp_path))
    assert attrs["seg_downsample"][0] == pytest.approx(16, rel=0.01)
    assert attrs["tissue_mm2"] == pytest.approx(layout.tissue_area_mm2(), rel=0.05)
    assert attrs["n_contours"] == len(layout.blobs) and attrs["n_holes"] == len(layout.holes)


@pytest.mark.parametrize("keep", ["center", "four_pt", "four_pt_hard"])
def test_kept_patches_respect_tissue_and_holes(pair, keep, tmp_path):
    mpp = 0.25
    path, layout = pair[mpp]
    attrs = tile_slide("s", path, tiling_params(KEEP_ALL | {"keep": keep}), outputs(tmp_path))
    coords = read_coords(tmp_path / "s.h5").xy
    size_um = attrs["patch_size_level0"] * mpp
    # Median blur and closing move the contour locally by a few segmentation pixels (4 µm here).
    seg_px_um = 5 * attrs["seg_downsample"][0] * mpp
    for x, y in coords * mpp:
        cx, cy = x + size_um / 2, y + size_um / 2
        quarter = [(cx + dx, cy + dy) for dx in (-size_um / 4, size_um / 4) for dy in (-size_um / 4, size_um / 4)]
        hole_free = all(cv2.pointPolygonTest(h.astype(np.float32), (cx, cy), True) <= seg_px_um for h in layout.holes)
        assert hole_free, f"patch centre {(cx, cy)} inside a hole"
        if keep == "center":
            assert in_truth(layout, cx, cy, seg_px_um)
        else:
            inside = [in_blob(layout, px, py, seg_px_um) for px, py in quarter]
            assert any(inside) if keep == "four_pt" else all(inside)


def in_blob(layout, x, y, tolerance_um):
    """CLAM's four-point test looks at the contour alone; holes are judged by the centre."""
    return (
        max(cv2.pointPolygonTest(b.astype(np.float32), (float(x), float(y)), True) for b in layout.blobs)
        >= -tolerance_um
    )


def test_40x_and_20x_give_the_same_physical_grid(pair, tmp_path):
    grids = {}
    for mpp, (path, _) in pair.items():
        tile_slide("s", path, tiling_params(KEEP_ALL), outputs(tmp_path, f"s{mpp}"))
        coords_um = read_coords(tmp_path / f"s{mpp}.h5").xy * mpp
        assert np.all(coords_um % 128 == 0)  # one lattice of 128 µm patches
        grids[mpp] = {tuple(c) for c in coords_um.astype(int)}
    a, b = grids[0.25], grids[0.5]
    assert len(a & b) / len(a | b) >= 0.95


def test_40x_without_a_20x_level_reads_512_at_level_0(pair, tmp_path):
    path, _ = pair[0.25]
    attrs = tile_slide("s", path, tiling_params(KEEP_ALL), outputs(tmp_path))
    assert (attrs["read_level"], attrs["read_size"], attrs["patch_size_level0"]) == (0, 512, 512)
    assert attrs["patch_mpp"] == pytest.approx(0.5)
    with openslide.OpenSlide(path) as slide:
        assert [round(d) for d in slide.level_downsamples] == [1, 4, 16]


@pytest.mark.parametrize(
    ("mpp", "downsamples", "expected"),
    [
        (0.25, (1, 4, 16), (0, 512, 512)),
        (0.2527, (1, 4, 16), (0, 512, 512)),  # a real 40x scan still reads exactly 2x
        (0.25, (1, 2, 8), (1, 256, 512)),  # a 20x level exists
        (0.499, (1, 4, 16), (0, 256, 256)),
        (0.5, (1.0, 4.0008), (0, 256, 256)),
        (0.3, (1, 4), (0, 427, 427)),  # 60% of the way: proportional read
        (0.121, (1, 4, 16), (1, 256, 1024)),  # 80x scan, level 1 at 0.484
    ],
)
def test_patch_spec_from_resolution(mpp, downsamples, expected):
    spec = choose_patch_spec(mpp, downsamples, 0.5, 256, 0.1, "s")
    assert (spec.read_level, spec.read_size, spec.size_level0) == expected


@pytest.mark.parametrize(
    ("mpp", "downsamples", "expected"),
    [
        (0.25, (1, 2, 8), (0, 512, 512)),  # CLAM's recipe reads level 0 even where a 20x level exists
        (0.2527, (1, 2.0005, 8), (0, 512, 512)),
        (0.5, (1, 4), (0, 256, 256)),
        (0.121, (1, 4, 16), (0, 1024, 1024)),
    ],
)
def test_clam_compatible_patch_spec_reads_level_0(mpp, downsamples, expected):
    spec = choose_patch_spec(mpp, downsamples, 0.5, 256, 0.1, "s", level0_only=True)
    assert (spec.read_level, spec.read_size, spec.size_level0) == expected


def test_slide_coarser_than_target_is_refused():
    with pytest.raises(SlideError, match=r"slide s: its finest level is 1.000 µm/px, coarser than the target 0.5"):
        choose_patch_spec(1.0, (1, 4), 0.5, 256, 0.1, "s")


def test_presets_and_area_units():
    tcga = preset("tcga", "mm2")
    assert tcga.a_t == pytest.approx(16 * CLAM_REF_PATCH_MM2) and tcga.a_h == pytest.approx(4 * 0.016384)
    assert preset("bwh_biopsy", "clam").a_t == 1
    params = tiling_params({"preset": "bwh_resection", "seg": {"sthresh": 20}})
    assert (
        params.seg.sthresh == 20
        and params.seg.mthresh == 11
        and params.seg.a_t == pytest.approx(100 * CLAM_REF_PATCH_MM2)
    )
    clam = tiling_params({"clam_compatible": True})
    assert (clam.grid, clam.area_unit, clam.seg.a_t, clam.clam_compatible) == ("clam", "clam", 16, True)
    with pytest.raises(ValueError, match="unknown tiling preset 'tcgaa'"):
        tiling_params({"preset": "tcgaa"})
    with pytest.raises(ValueError, match="unknown tiling settings: \\['on_error'\\]"):
        tiling_params({"on_error": "exclude"})  # a job's choice, never part of what decides patches
    # CLAM's reference-patch units truncate to int at the segmentation level; mm² follow the scan resolution.
    assert area_thresholds(preset("tcga", "clam"), "clam", (16.07, 16.08), 0.5) == (16 * 1014, 4 * 1014)
    a_t_px, _ = area_thresholds(tcga, "mm2", (16.0, 16.0), 0.5)
    assert a_t_px == pytest.approx(0.262144e6 / 64)


def square(x0, y0, x1, y1):
    return np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], np.int32)


def test_keep_rules_on_a_hand_made_contour():
    contour = square(0, 0, 1000, 1000)
    hole = square(300, 300, 700, 700)
    # Patch 256 at (900, 0): points at x 964/1092 -> two inside (four_pt), not all (hard); centre 1028 outside.
    assert keeps(900, 0, 256, contour, [], "four_pt")
    assert not keeps(900, 0, 256, contour, [], "four_pt_hard")
    assert not keeps(900, 0, 256, contour, [], "center")
    # Centre (500, 500) strictly inside the hole: dropped whatever the rule.
    assert not keeps(372, 372, 256, contour, [hole], "four_pt")
    # Centre exactly on the hole's edge is not "inside" (CLAM's strict test).
    assert keeps(172, 372, 256, contour, [hole], "center")


def test_clam_grid_is_per_contour_with_its_quirks():
    # Two overlapping pieces: CLAM grids start at each bounding box, so their patches overlap.
    tissue_ = Tissue(
        contours=[square(0, 0, 1023, 511), square(600, 100, 1400, 700), square(3000, 0, 3255, 255)], holes=[[], [], []]
    )
    coords = clam_grid(tissue_, 256, (1.0, 1.0), "center")
    first = [(x, y) for x in (0, 256, 512, 768) for y in (0, 256)]  # x outer, y inner (meshgrid 'ij')
    second = [(x, y) for x in (600, 856, 1112) for y in (100, 356)]
    # The third piece has one patch: CLAM keeps it since August 2023 (`len(results) > 0`).
    assert [tuple(c) for c in coords] == [*first, *second, (3000, 0)]
    merged = global_grid(tissue_, 256, (4000, 1000), "center")
    assert len({tuple(c) for c in merged}) == len(merged)  # the global grid never duplicates
    assert all(x % 256 == 0 and y % 256 == 0 for x, y in merged)
    assert (3072, 0) in {tuple(c) for c in merged}  # the small piece keeps its one patch (centre 3200, 128)


def test_seg_level_respects_the_pixel_budget(pair):
    path, _ = pair[0.25]
    with openslide.OpenSlide(path) as slide:
        w, h = slide.level_dimensions[2]
        assert choose_seg_level(slide, 64, 10**8) == (2, 1)
        assert choose_seg_level(slide, 4, 10**8) == (1, 1)
        assert choose_seg_level(slide, 4, w * h + 1) == (2, 1)  # level 1 is over budget: coarser one
        level, shrink = choose_seg_level(slide, 64, w * h // 4)  # nothing fits: shrink the coarsest in chunks
        assert level == 2 and shrink == 2
        small = read_seg_image(slide, 64, w * h // 4)
        assert small.rgb.shape[0] * small.rgb.shape[1] <= w * h // 4 + w
        whole = read_seg_image(slide, 64, 10**8)
        reference = cv2.resize(whole.rgb, small.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(reference.astype(int) - small.rgb.astype(int)).mean() < 3
        assert small.downsample[0] == pytest.approx(2 * whole.downsample[0], rel=0.02)


def test_outputs_and_attributes(pair, tmp_path):
    path, _ = pair[0.5]
    out = outputs(tmp_path)
    tile_slide("S.1", path, tiling_params({}), out)
    with h5py.File(out.coords) as h5:
        coords = h5["coords"]
        assert coords.dtype == np.int64 and coords.shape[1] == 2 and len(coords) > 10
        attrs = dict(coords.attrs)
    for clam_key in ("patch_size", "patch_level", "downsample", "downsampled_level_dim", "level_dim", "name"):
        assert clam_key in attrs
    assert attrs["name"] == "S.1" and attrs["mpp_source"] == "openslide.mpp" and attrs["status"] == "ok"
    assert attrs["target_mpp"] == 0.5 and attrs["slide_mpp"] == 0.5 and attrs["patch_size_level0"] == 256
    assert attrs["seg_sthresh"] == 8 and attrs["area_unit"] == "mm2"
    geo = json.loads(Path(out.contours).read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == attrs["n_contours"]
    rings = geo["features"][0]["geometry"]["coordinates"]
    assert rings[0][0] == rings[0][-1]  # closed rings, holes as inner rings
    for picture in (out.mask, out.grid):
        image = cv2.imread(picture)
        assert image is not None and max(image.shape[:2]) <= qc.MAX_SIDE
    mask = cv2.imread(out.mask)[..., ::-1]
    assert ((mask[..., 1] > 200) & (mask[..., 0] < 80) & (mask[..., 2] < 80)).sum() > 100  # green contour drawn


def test_pixel_filter_drops_background_patches(pair, tmp_path):
    path, _ = pair[0.5]
    loose = tile_slide("s", path, tiling_params(KEEP_ALL), outputs(tmp_path, "a"))
    strict = tile_slide(
        "s", path, tiling_params(KEEP_ALL | {"pixel_filter": True, "max_white_fraction": 0.3}), outputs(tmp_path, "b")
    )
    assert strict["pixel_filter_dropped"] > 0
    assert (
        len(read_coords(tmp_path / "b.h5").xy)
        == len(read_coords(tmp_path / "a.h5").xy) - strict["pixel_filter_dropped"]
    )
    assert loose["pixel_filter_dropped"] == 0


def blank_slide(tmp_path):
    path = tmp_path / "blank.svs"
    write_aperio_svs(path, np.full((1024, 1024, 3), 243, np.uint8), mpp=0.5, app_mag=20)
    return path


def test_no_tissue_is_an_error_naming_the_slide(tmp_path):
    with pytest.raises(SlideError, match=r"slide B: no tissue found \(0 patches from 0 tissue contours\).*bwh_biopsy"):
        tile_slide("B", blank_slide(tmp_path), tiling_params({}), outputs(tmp_path))
    assert list(tmp_path.glob("s.*")) == []


def test_exclude_mode_records_the_reason(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.full((300, 400, 3), 200, np.uint8), photometric="rgb")
    rows = []
    for name, path in (("blank", blank_slide(tmp_path)), ("plain", plain), ("gone", tmp_path / "gone.svs")):
        out = outputs(tmp_path, name)
        attrs = tile_slide(name, path, tiling_params({}), out, on_error="exclude")
        assert attrs["status"] == "excluded"
        assert len(read_coords(out.coords).xy) == 0 and cv2.imread(out.mask) is not None
        rows.append(out.coords)
    table = summary(rows).set_index("slide_id")
    assert list(table["status"]) == ["excluded"] * 3
    assert "no tissue found" in table.loc["blank", "reason"] and "non-pyramidal" in table.loc["plain", "reason"]
    assert "not found" in table.loc["gone", "reason"]


def test_no_mpp_stops_unless_overridden(tmp_path):
    path = tmp_path / "nompp.tif"
    rng = item_rng(5, 0)
    layout = tissue.random_layout(rng)
    tifffile.imwrite(path, tissue.render(layout, 0.5, 0.0, rng), tile=(256, 256), photometric="rgb", compression="jpeg")
    with pytest.raises(SlideError, match="slide N: no resolution"):
        tile_slide("N", path, tiling_params({}), outputs(tmp_path))
    attrs = tile_slide("N", path, tiling_params({}), outputs(tmp_path), mpp_override=0.5)
    assert attrs["mpp_source"] == "sheet override" and attrs["read_size"] == 256


def test_a_crash_leaves_no_final_file(pair, tmp_path, monkeypatch):
    path, _ = pair[0.5]
    out = outputs(tmp_path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(h5py.Dataset, "attrs", property(killed))
    with pytest.raises(KeyboardInterrupt):
        tile_slide("s", path, tiling_params({}), out)
    assert not (tmp_path / "s.h5").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_clam_compatible_reads_level_0_where_a_20x_level_exists(tmp_path):
    """CLAM's recipe on a 40x scan patches level 0 at 512 px; the default reads the 20x level at 256."""
    rng = item_rng(77, 1)
    layout = tissue.random_layout(rng)
    path = tmp_path / "s.svs"
    tissue.write_slide(path, layout, tissue.appearance(layout, 0.0, rng), 0.25, 40, (1, 2, 8))
    clam = tile_slide("s", path, tiling_params({"clam_compatible": True, "seg": {"a_t": 1}}), outputs(tmp_path, "c"))
    assert (clam["patch_level"], clam["patch_size"], clam["patch_size_level0"]) == (0, 512, 512)
    tiles = read_coords(tmp_path / "c.h5")
    assert tiles.clam_compatible and tiles.geometry == PatchGeometry(0, 512, 512, (1.0, 1.0))
    default = tile_slide("s", path, tiling_params({}), outputs(tmp_path, "d"))
    assert (default["read_level"], default["read_size"], default["patch_size_level0"]) == (1, 256, 512)
    assert not read_coords(tmp_path / "d.h5").clam_compatible


def test_coords_reader_refuses_foreign_files(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        h5["coords"] = np.zeros((3, 2), np.int64)
    with pytest.raises(CoordsError, match=r"x.h5: dataset 'coords' has neither 'read_level'.*nor 'patch_level'"):
        read_coords(tmp_path / "x.h5")


def test_summary_reads_attributes(pair, tmp_path):
    path, _ = pair[0.25]
    out = outputs(tmp_path)
    tile_slide("S", path, tiling_params({}), out)
    row = summary([out.coords]).iloc[0]
    assert row["slide_id"] == "S" and row["status"] == "ok" and row["read_size"] == 512
    assert row["patches"] == len(read_coords(out.coords).xy) and row["mpp"] == 0.25


def test_real_cmu_small_region_tiles_at_level_0(cmu_small_region, tmp_path):
    attrs = tile_slide("CMU-1-Small-Region", cmu_small_region, tiling_params({}), outputs(tmp_path))
    assert (attrs["read_level"], attrs["read_size"]) == (0, 256)
    # 2220 x 2967 px at 0.499 µm/px: at most 8 x 11 = 88 grid positions, about half of it tissue.
    assert 25 <= len(read_coords(tmp_path / "s.h5").xy) <= 88
    assert attrs["slide_mpp"] == pytest.approx(0.499)


@pytest.mark.realdata
def test_real_bad_and_unlabelled_slides(shared_data, tmp_path):
    wsi = shared_data / "wsi"
    with pytest.raises(SlideError, match="TS1: no resolution"):
        tile_slide("TS1", wsi / "TCGA-CR-7395-01A-01-TS1.svs", tiling_params({}), outputs(tmp_path))
    attrs = tile_slide(
        "TS1", wsi / "TCGA-CR-7395-01A-01-TS1.svs", tiling_params({}), outputs(tmp_path), mpp_override=0.5
    )
    assert attrs["read_size"] == 256 and len(read_coords(tmp_path / "s.h5").xy) > 20
    for name, why in (("small_dicom_wsi.dcm", "DICOM"), ("kidney-48-5-nonpyramidal.tif", "non-pyramidal")):
        with pytest.raises(SlideError, match=why):
            tile_slide(name, wsi / name, tiling_params({}), outputs(tmp_path))
