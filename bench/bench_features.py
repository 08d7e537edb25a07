"""Benchmark feature extraction: patches/s of (a) the encoder alone on in-memory tensors (the
ceiling), (b) CLAM-style per-patch reading, (c) block reading, on demo slides and the large
synthetic slide of bench_tiling.py (its first --large-patches patches).

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
from workflow.features.extract import FeatureSettings, encode, extract_slide  # noqa: E402
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
                "slide": "(in-memory tensors)",
                "path": "a: encoder only",
                "patches": None,
                "patches_per_s": top,
            }
        )
        print(rows[-1], flush=True)
        slides = [(s, None) for s in sorted(glob.glob(args.slides))[: args.max_slides]]
        if LARGE.exists():
            slides.append((str(LARGE), args.large_patches))
        for slide, limit in slides:
            with tempfile.TemporaryDirectory() as tmp:
                coords = tile(slide, tmp, limit)
                for label, block in (("b: per-patch reads", 1), ("c: block reads", 4)):
                    attrs = extract_slide(
                        "s",
                        slide,
                        coords,
                        os.path.join(tmp, "f.h5"),
                        encoder,
                        FeatureSettings(batch_size=args.batch_size, block=block),
                        device,
                        args.threads,
                    )
                    rows.append(
                        {
                            "device": name,
                            "slide": Path(slide).name,
                            "path": label,
                            "patches": attrs["n_patches"],
                            "patches_per_s": attrs["patches_per_second"],
                        }
                    )
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["fraction_of_ceiling"] = table["patches_per_s"] / top
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False, float_format="%.3f")
    print(table.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
