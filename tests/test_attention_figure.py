"""Attention figure: heat lands exactly on the scored patches, on synthetic pictures and through a real slide file."""

from __future__ import annotations

import numpy as np
import openslide
import pandas as pd
import pytest
from matplotlib import colormaps

from model.figures import FigureInputError
from model.figures.attention import PatientAttention, attention_figure, attention_overlay, top_k
from workflow.demo.svs import write_aperio_svs
from workflow.plots import SEQUENTIAL_CMAP
from workflow.slide_images import read_patch_images, read_thumbnail
from workflow.slides import SlideError
from workflow.tiling.coords import PatchGeometry

FEATURES = ("shared", "explore", "pathology-specific")
FAMILIES = ("tumour suppressors", "oncogenes", "protein kinases", "differentiation", "transcription", "cytokines")


def grid(width: int, height: int, size0: int) -> np.ndarray:
    """Level-0 top-left corners of a full patch grid."""
    xs, ys = np.meshgrid(np.arange(0, width - size0 + 1, size0), np.arange(0, height - size0 + 1, size0))
    return np.column_stack([xs.ravel(), ys.ravel()])


def planted(xy: np.ndarray, size0: int, rect: tuple[int, int, int, int]) -> np.ndarray:
    """Scores 1 on the patches inside the level-0 rectangle (x0, y0, x1, y1), 0 elsewhere."""
    x0, y0, x1, y1 = rect
    inside = (xy[:, 0] >= x0) & (xy[:, 0] + size0 <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] + size0 <= y1)
    return inside.astype(float)


def hot(overlay: np.ndarray, thumbnail: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Pixels painted with the colour map's top colour."""
    top = np.rint((1 - alpha) * thumbnail + alpha * np.asarray(colormaps[SEQUENTIAL_CMAP](1.0)[:3]) * 255)
    return np.all(overlay == top.astype(np.uint8), axis=2)


def test_planted_block_is_hot_exactly_in_its_rectangle():
    thumbnail = np.full((300, 400, 3), 128, np.uint8)
    scale, size0 = 0.1, 250  # patches are 25 thumbnail pixels
    xy = grid(3000, 2500, size0)  # covers thumbnail [0, 300) x [0, 250)
    rect = (750, 500, 1500, 1250)
    overlay = attention_overlay(thumbnail, scale, xy, size0, planted(xy, size0, rect))
    expected = np.zeros(thumbnail.shape[:2], bool)
    expected[50:125, 75:150] = True
    assert np.array_equal(hot(overlay, thumbnail), expected)
    # Other patches are painted cold; pixels outside every patch are untouched.
    changed = np.any(overlay != thumbnail, axis=2)
    assert changed[:250, :300].all()
    assert not changed[250:].any() and not changed[:, 300:].any()


def test_overlapping_patches_average_and_constant_scores_are_mid_scale():
    thumbnail = np.zeros((10, 10, 3), np.uint8)
    overlay = attention_overlay(thumbnail, 1.0, np.array([[0, 0], [2, 0]]), 4, np.array([0.0, 1.0]), alpha=1.0)
    colour = (np.asarray(colormaps[SEQUENTIAL_CMAP]([0.0, 0.5, 1.0])[:, :3]) * 255).round().astype(np.uint8)
    assert np.array_equal(overlay[0, [0, 2, 5]], colour)
    flat = attention_overlay(thumbnail, 1.0, np.array([[0, 0]]), 4, np.array([3.0]), alpha=1.0)
    assert np.array_equal(flat[0, 0], colour[1])
    with pytest.raises(FigureInputError, match="2 patch scores for 1 patches"):
        attention_overlay(thumbnail, 1.0, np.array([[0, 0]]), 4, np.array([1.0, 2.0]))


def synthetic_svs(path, width: int, height: int, rect: tuple[int, int, int, int]) -> None:
    """A pale slide with a dark purple rectangle at ``rect`` (level-0 x0, y0, x1, y1), 20x, pyramid 1-4-16."""
    level0 = np.full((height, width, 3), 238, np.uint8)
    x0, y0, x1, y1 = rect
    level0[y0:y1, x0:x1] = (90, 30, 120)
    write_aperio_svs(path, level0, mpp=0.5, app_mag=20)


@pytest.mark.parametrize(("width", "height"), [(3000, 2000), (2000, 3000)])
def test_heat_lands_on_the_slide_region_through_a_real_slide(tmp_path, width, height):
    rect, size0 = (1000, 600, 1600, 1200), 200
    path = tmp_path / "s.svs"
    synthetic_svs(path, width, height, rect)
    thumbnail, scale = read_thumbnail(path, "s", max_side=700)
    assert max(thumbnail.shape[:2]) == 700
    assert thumbnail.shape[:2] == (round(height * scale), round(width * scale))
    xy = grid(width, height, size0)
    heat = hot(attention_overlay(thumbnail, scale, xy, size0, planted(xy, size0, rect)), thumbnail)
    dark = thumbnail.mean(axis=2) < (238 + 80) / 2
    expected = np.array(rect) * scale
    for mask in (heat, dark):  # the heat, and the region itself in the slide's pixels
        rows, cols = np.nonzero(mask)
        box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        assert np.abs(box - expected).max() <= 1, (box, expected)
    assert heat.sum() >= 0.95 * dark.sum()


def test_patch_images_are_the_slide_pixels(tmp_path):
    path = tmp_path / "s.svs"
    synthetic_svs(path, 2048, 1536, (512, 512, 1024, 1024))
    xy = np.array([[256, 384], [1024, 768]])
    with openslide.OpenSlide(path) as slide:
        for level, size0 in ((0, 256), (1, 1024)):
            geometry = PatchGeometry(level, 256, size0, (4.0**level, 4.0**level))
            images = read_patch_images(path, "s", xy, geometry, out_size=256)
            for (x, y), image in zip(xy, images, strict=True):
                expected = np.asarray(slide.read_region((int(x), int(y)), level, (256, 256)))[..., :3]
                assert np.array_equal(image, expected)
    small = read_patch_images(path, "s", xy[:1], PatchGeometry(0, 256, 256, (1.0, 1.0)), out_size=64)
    assert small[0].shape == (64, 64, 3) and small[0].dtype == np.uint8
    with pytest.raises(SlideError, match="slide gone"):
        read_patch_images(tmp_path / "gone.svs", "gone", xy, geometry)
    with pytest.raises(SlideError, match="slide gone"):
        read_thumbnail(tmp_path / "gone.svs", "gone")


def test_top_k_is_highest_first():
    assert top_k(np.array([0.1, 0.9, 0.5, 0.9, 0.0]), 3).tolist() == [1, 3, 2]
    assert top_k(np.array([0.2, 0.1]), 5).tolist() == [0, 1]


def patient(i: int, rng: np.random.Generator) -> PatientAttention:
    thumbnail = np.full((120, 160, 3), 235, np.uint8)
    thumbnail[20:100, 30:130] = (200, 120, 170)
    xy = grid(1600, 1200, 100)
    scores = {f: rng.random(len(xy)) for f in FEATURES}
    patches = {f: [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)] for f in FEATURES}
    shares = pd.DataFrame(rng.dirichlet(np.ones(len(FAMILIES)), len(FEATURES)), index=FEATURES, columns=FAMILIES)
    shares.loc["pathology-specific"] = 0.0
    group = "highest risk" if i == 0 else "lowest risk"
    return PatientAttention(f"P{i}", "demo", 1.5 - i, group, f"S{i}", thumbnail, 0.1, xy, 100, scores, patches, shares)


def test_attention_figure_writes_png_and_pdf(tmp_path):
    rng = np.random.default_rng(0)
    paths = [tmp_path / "attention.png", tmp_path / "attention.pdf"]
    attention_figure([patient(0, rng), patient(1, rng)], "demo: attention of the decoupled features", paths)
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_attention_figure_refuses_empty_input(tmp_path):
    paths = [tmp_path / "a.png"]
    with pytest.raises(FigureInputError, match="no patients"):
        attention_figure([], "t", paths)
    empty = patient(0, np.random.default_rng(0))
    empty = PatientAttention(**{**empty.__dict__, "patch_scores": {}})
    with pytest.raises(FigureInputError, match="patient P0"):
        attention_figure([empty], "t", paths)
    assert not paths[0].exists()
