"""Benchmark feature extraction: patches/s of (a) the encoder alone on in-memory tensors (the
ceiling), (b) CLAM-style per-patch reading, (c) block reading, on demo slides and the large
synthetic slide of bench_tiling.py (its first --large-patches patches); (d) one job encoding all
the demo slides with one reader pool against one run per slide; (e) decode + resize throughput of
one reader core, in patches per CPU-second, which says how many reader cores a GPU needs.

    .venv/bin/python bench/bench_features.py [--slides 'resources/demo/demo_tcga/slides/*.svs'] [--out bench/results/features.tsv]

Run on an otherwise idle machine; a GPU is used when one is visible (AMP there, fp32 on the CPU).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workflow.device import claim_device  # noqa: E402
from workflow.features.encoders import encoder_spec, load_encoder  # noqa: E402
from workflow.features.extract import FeatureSettings, SlideTask, encode, extract_slides  # noqa: E402
from workflow.features.reading import PatchBlocks, plan_blocks  # noqa: E402
from workflow.tiling.coords import read_coords, write_coords  # noqa: E402
from workflow.tiling.params import tiling_params  # noqa: E402
from workflow.tiling.tile import TileOutputs, tile_slide  # noqa: E402

LARGE = ROOT / "bench" / "data" / "large_40x.svs"


def ceiling(encoder, device, batch: int, batches: int = 6) -> float:
    """Patches/s of the encoder alone on preprocessed in-memory tensors (after one warm-up batch)."""
    x = torch.randn(batch, 3, encoder.spec.input_size, encoder.spec.input_size)
    if device.type == "cuda":
        x = x.pin_memory()
    model = encoder.model.to(device, memory_format=torch.channels_last)
    encode(model, x, device)
    start = time.perf_counter()
    for _ in range(batches):
        encode(model, x, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - start)


def tile(slide: str, out_dir: str, max_patches: int | None) -> str:
    """Coordinates of a slide (all, or the first max_patches) as a tiling output."""
    out = TileOutputs(*(os.path.join(out_dir, f"t.{e}") for e in ("h5", "geojson", "m.jpg", "g.jpg")))
    tile_slide("s", slide, tiling_params({}), out)
    if max_patches:
        tiles = read_coords(out.coords)
        write_coords(out.coords, tiles.xy[:max_patches], tiles.attrs)
    return out.coords


def reader_throughput(slide: str, coords: str, input_size: int, block: int) -> tuple[int, float, float]:
    """(read size, patches, patches per CPU-second) of reading + decoding + resizing on one core."""
    tiles = read_coords(coords)
    geometry = tiles.geometry
    blocks = plan_blocks(tiles.xy, geometry.size_level0, block)
    dataset = PatchBlocks(slide, tiles.xy, geometry, blocks, input_size, (0.5,) * 3, (0.5,) * 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        n = sum(int(dataset[i][2].sum()) for i in range(len(dataset)))
        seconds = time.process_time() - start
    finally:
        torch.set_num_threads(threads)
    return geometry.read_size, n, n / seconds


def one_job(tasks: list[SlideTask], encoder, settings: FeatureSettings, device, threads: int) -> tuple[int, float]:
    """(patches, seconds) of one extract_slides call, reader pool start-up included."""
    start = time.perf_counter()
    results = extract_slides(tasks, encoder, settings, device, threads)
    return sum(r.attrs["n_patches"] for r in results), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", default="resources/demo/demo_tcga/slides/*.svs")
    parser.add_argument("--max-slides", type=int, default=4)
    parser.add_argument("--large-patches", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="bench/results/features.tsv")
    args = parser.parse_args()

    encoder = load_encoder(encoder_spec("resnet50_trunc"), "random")
    rows = []
    with claim_device() as device:
        if device.type == "cpu":
            torch.set_num_threads(args.threads)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{args.threads}"
        top = ceiling(encoder, device, args.batch_size)
        rows.append(
            {
                "device": name,
                "readers": 0,
                "slide": "(in-memory tensors)",
                "path": "a: encoder only",
                "patches": None,
                "patches_per_s": top,
            }
        )
        print(rows[-1], flush=True)
        readers = max(1, args.threads - 1) if device.type == "cuda" else (1 if args.threads > 1 else 0)
        settings = {"batch_size": args.batch_size}
        demo = sorted(glob.glob(args.slides))[: args.max_slides]
        slides = [(s, None) for s in demo]
        if LARGE.exists():
            slides.append((str(LARGE), args.large_patches))
        with tempfile.TemporaryDirectory() as tmp:
            tiled = {}
            for k, (slide, limit) in enumerate(slides):
                os.makedirs(os.path.join(tmp, str(k)))
                tiled[slide] = tile(slide, os.path.join(tmp, str(k)), limit)
            for slide, _ in slides:
                for label, block in (("b: per-patch reads", 1), ("c: block reads", 4)):
                    task = SlideTask("s", slide, tiled[slide], os.path.join(tmp, f"f{block}.h5"))
                    attrs = extract_slides(
                        [task], encoder, FeatureSettings(block=block, **settings), device, args.threads
                    )
                    row = {
                        "patches": attrs[0].attrs["n_patches"],
                        "patches_per_s": attrs[0].attrs["patches_per_second"],
                    }
                    rows.append({"device": name, "readers": readers, "slide": Path(slide).name, "path": label, **row})
                    print(rows[-1], flush=True)
            # (d) the demo slides: one job with one reader pool, against one job per slide (encoder built once in both)
            per_slide = [
                one_job(
                    [SlideTask(Path(s).stem, s, tiled[s], os.path.join(tmp, f"one_{k}.h5"))],
                    encoder,
                    FeatureSettings(**settings),
                    device,
                    args.threads,
                )
                for k, s in enumerate(demo)
            ]
            tasks = [SlideTask(Path(s).stem, s, tiled[s], os.path.join(tmp, f"all_{k}.h5")) for k, s in enumerate(demo)]
            together = one_job(tasks, encoder, FeatureSettings(**settings), device, args.threads)
            for label, (n, seconds) in (
                (f"d: {len(demo)} slides, one run each", (sum(n for n, _ in per_slide), sum(t for _, t in per_slide))),
                (f"d: {len(demo)} slides, one job", together),
            ):
                rows.append(
                    {
                        "device": name,
                        "readers": readers,
                        "slide": "demo slides",
                        "path": label,
                        "patches": n,
                        "patches_per_s": n / seconds,
                    }
                )
                print(rows[-1], flush=True)
            # (e) one reader core: read, decode and resize to the encoder's input, per CPU-second
            for slide, _ in slides:
                size, n, rate = reader_throughput(slide, tiled[slide], encoder.spec.input_size, 4)
                rows.append(
                    {
                        "device": "1 CPU core",
                        "readers": 1,
                        "slide": Path(slide).name,
                        "path": f"e: read {size} px + resize to {encoder.spec.input_size}, per CPU-s",
                        "patches": n,
                        "patches_per_s": rate,
                    }
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["fraction_of_ceiling"] = (table["patches_per_s"] / top).where(~table["path"].str.startswith("e:"))
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False, float_format="%.3f")
    print(table.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
