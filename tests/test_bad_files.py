"""Damaged input files through the workflow as a user runs it: each one named, with what it is and the fix."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
import tifffile
import yaml

from tests.conftest import ROOT
from workflow.tiling.coords import read_coords

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "1"]
FEATURES = "results/mine/features/resnet50_trunc"


def snakemake(folder, *args):
    return subprocess.run([*SNAKEMAKE, "--directory", str(folder), *args], cwd=folder, capture_output=True, text=True)


def corrupt_level0(path):
    """Garbage in the middle of every level-0 JPEG tile, as a damaged scan or copy has; lower levels stay whole."""
    with tifffile.TiffFile(path) as tif:
        tiles = list(zip(tif.pages[0].dataoffsets, tif.pages[0].databytecounts, strict=True))
    with open(path, "r+b") as fh:
        for offset, count in tiles:
            fh.seek(offset + count // 3)
            fh.write(b"\x00\xff" * (count // 3))


def corrupt_tile_cohort(folder, on_error):
    """A user cohort of a good slide and one whose level-0 tiles are corrupt (it tiles, its patches do not read)."""
    from workflow.demo import tissue
    from workflow.demo.design import item_rng

    for k, name in enumerate(("good", "bad")):
        rng = item_rng(3, k)
        layout = tissue.random_layout(rng)
        tissue.write_slide(folder / f"{name}.svs", layout, tissue.appearance(layout, 0.0, rng), 0.5, 20)
    corrupt_level0(folder / "bad.svs")
    pd.DataFrame({"patient_id": ["P1", "P2"], "survival_months": [10.0, 20.0], "censorship": [0, 0]}).to_csv(
        folder / "patients.tsv", sep="\t", index=False
    )
    pd.DataFrame({"slide_id": ["good", "bad"], "patient_id": ["P1", "P2"], "path": ["good.svs", "bad.svs"]}).to_csv(
        folder / "slides.tsv", sep="\t", index=False
    )
    pd.DataFrame({"case_id": ["P1", "P2"], "slide_id": ["good.svs", "bad.svs"], "TP53_rnaseq": [0.1, -0.2]}).to_csv(
        folder / "genomics.csv"
    )
    pd.DataFrame({"Tumor Suppressor Genes": ["TP53"]}).to_csv(folder / "signatures.csv", index=False)
    write_config(folder, on_error)


def write_config(folder, on_error):
    cohort = {
        "modalities": ["wsi", "genomics"],
        "patients": "patients.tsv",
        "slides": "slides.tsv",
        "genomics": {"table": "genomics.csv", "signatures": "signatures.csv"},
    }
    config = {
        "cohorts": {"mine": cohort},
        "tiling": {"on_error": on_error},
        "features": {"weights": "random"},
        "training": {"folds": 2, "n_bins": 2, "bins": "cohort"},
    }
    (folder / "config").mkdir(exist_ok=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.integration
def test_corrupt_tiles_stop_the_run_or_exclude_the_slide_at_features(tmp_path):
    """fail: the run stops naming slide, file, patch and fix; exclude: the summary holds the slide as excluded."""
    corrupt_tile_cohort(tmp_path, "fail")
    summary = f"{FEATURES}/features_summary.tsv"
    stopped = snakemake(tmp_path, summary)
    assert stopped.returncode != 0
    log = (tmp_path / "logs/extract_features/mine/resnet50_trunc/batch0.log").read_text()
    assert re.search(
        r"FeatureError: slide bad: (\d+) of \1 patches could not be read from bad\.svs; the first at level-0 "
        r"\(\d+, \d+\): Corrupt JPEG data.*re-copy it and compare checksums \(sha256sum\).*"
        r"set tiling: on_error: exclude",
        log,
    ), log[-3000:]
    tiles = read_coords(tmp_path / "results/mine/patches/bad.h5")
    assert tiles.status == "ok"  # the damage is in level 0's tiles only: tiling could not see it

    write_config(tmp_path, "exclude")
    done = snakemake(tmp_path, summary)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / summary, sep="\t").set_index("slide_id")
    assert table.loc["good", "status"] == "ok" and table.loc["good", "n_patches"] > 0
    assert table.loc["bad", "status"] == "excluded" and table.loc["bad", "n_patches"] == 0
    n = len(tiles.xy)
    assert table.loc["bad", "reason"].startswith(
        f"slide bad: {n} of {n} patches could not be read from bad.svs; the first at level-0 ("
    )
    log = (tmp_path / "logs/extract_features/mine/resnet50_trunc/batch0.log").read_text()
    assert "already written by an earlier run from the same inputs, kept" in log  # good, from the stopped run
    # on_error is no part of the features' inputs: switching it back re-extracts nothing
    write_config(tmp_path, "fail")
    again = snakemake(tmp_path, "-n", summary)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.integration
def test_empty_slide_is_named_at_inventory(tmp_path):
    corrupt_tile_cohort(tmp_path, "exclude")
    (tmp_path / "bad.svs").write_bytes(b"")
    inventory = "results/mine/slides/inventory.tsv"
    done = snakemake(tmp_path, inventory)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / inventory, sep="\t").set_index("slide_id")
    assert table.loc["bad", "problem"] == (
        "slide bad (bad.svs): cannot be opened: it is an empty file (0 bytes); re-copy it and "
        "compare checksums (sha256sum) with the source"
    )
