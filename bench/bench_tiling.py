"""Benchmark tiling: seconds and peak memory per slide, on the demo slides and a large synthetic slide.

Each slide is tiled in a fresh process so its peak RSS is its own. The large slide (a 40x scan,
0.25 µm/px, 60,000 x 52,000 level-0 pixels with levels 1, 4, 16, written band by band) is made
once under bench/data/ (git-ignored).

    .venv/bin/python bench/bench_tiling.py [--demo-slides 'resources/demo/*/slides/*.svs'] [--out bench/results/tiling.tsv]
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LARGE = ROOT / "bench" / "data" / "large_40x.svs"


def make_large_slide(path: Path) -> float:
    """Write the large synthetic slide (demo layout enlarged 10x: 15 x 13 mm at 0.25 µm/px)."""
    from workflow.demo import tissue
    from workflow.demo.design import item_rng

    start = time.perf_counter()
    rng = item_rng(2026, 0)
    layout = tissue.random_layout(rng, scale=10.0)
    tissue.write_slide(path, layout, tissue.appearance(layout, 0.0, rng), mpp=0.25, app_mag=40)
    return time.perf_counter() - start


def tile_in_child(slide: str, tiling: dict | None = None) -> dict:
    """Tile one slide in a child process; return its attributes, wall seconds and peak RSS (MiB)."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(ROOT / "bench")!r})
from bench_tiling import peak_rss_mib
from workflow.tiling.params import tiling_params
from workflow.tiling.tile import TileOutputs, tile_slide
out = {tempfile.mkdtemp()!r}
start = time.perf_counter()
attrs = tile_slide("s", {slide!r}, tiling_params({tiling or {}!r}), TileOutputs(out + "/c.h5", out + "/c.geojson", out + "/m.jpg", out + "/g.jpg"))
wall = time.perf_counter() - start
from workflow.tiling.coords import read_coords
n = len(read_coords(out + "/c.h5").xy)
print(json.dumps({{"wall_s": wall, "patches": n, "peak_rss_mib": peak_rss_mib(),
                  "level0": [int(v) for v in attrs["level0_dim"]], "seg_level": int(attrs["seg_level"]), "read_size": int(attrs["read_size"])}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not carry over an exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def baseline_rss() -> float:
    """Peak RSS of a child that only imports the tiling stack (the floor under every number)."""
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'bench')!r}]; import workflow.tiling.tile; "
        "from bench_tiling import peak_rss_mib; print(peak_rss_mib())"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-slides", default="resources/demo/*/slides/*.svs")
    parser.add_argument("--max-demo", type=int, default=10)
    parser.add_argument("--out", default="bench/results/tiling.tsv")
    args = parser.parse_args()

    if not LARGE.exists():
        LARGE.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {LARGE} ...", flush=True)
        print(f"  {make_large_slide(LARGE):.0f} s", flush=True)
    rows = [{"slide": "(imports only)", "peak_rss_mib": baseline_rss()}]
    for slide in [*sorted(glob.glob(args.demo_slides))[: args.max_demo], str(LARGE)]:
        result = tile_in_child(slide)
        rows.append({"slide": Path(slide).name} | result)
        print(rows[-1], flush=True)
    # The same large slide with a segmentation budget below its 16x level: read in chunks and shrunk.
    small_budget = {"max_seg_pixels": 4_000_000}
    rows.append({"slide": f"{LARGE.name} max_seg_pixels=4e6"} | tile_in_child(str(LARGE), small_budget))
    print(rows[-1], flush=True)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, sep="\t", index=False, float_format="%.3f")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
