"""The checks a GPU machine runs in a few minutes, whenever one is available; writes one TSV.

    .venv/bin/python bench/gpu_check.py [--patches 4000] [--threads N] [--out bench/results/gpu.tsv]

1. Features on a synthetic 40x slide (bench/data/large_40x.svs if present, else a smaller one
   written here in about a minute): the encoder's own ceiling on in-memory tensors, then whole
   ``extract_slides`` runs end to end (reading, decoding, resizing, AMP encoding, writing) with
   ``threads - 1`` reader processes, and the fraction of the ceiling (the goal is 80% or more).
2. AMP against fp32 on the same patches: the largest per-patch relative L2 difference must stay
   under 2%.
3. Exclusive claims: as many concurrent processes as GPUs + 1 claim a GPU through
   ``workflow.device.claim_device``; each GPU is held by one process at a time, the last waits.
4. One fold of DeReF (reference preset, bench_training's synthetic 2000-patch bags) on the GPU:
   seconds per epoch and peak GPU memory.

Exits non-zero when a check fails; with no GPU visible it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_features import ceiling, tile  # noqa: E402
from bench_tiling import LARGE  # noqa: E402

from workflow.device import claim_device  # noqa: E402
from workflow.features.encoders import encoder_spec, load_encoder  # noqa: E402
from workflow.features.extract import FeatureSettings, SlideTask, encode, extract_slides  # noqa: E402
from workflow.features.features_file import read_features  # noqa: E402
from workflow.features.reading import PatchBlocks, plan_blocks  # noqa: E402
from workflow.io import write_tsv  # noqa: E402
from workflow.tiling.coords import read_coords  # noqa: E402


def synthetic_slide(folder: str) -> str:
    """The large bench slide when it exists, else a 40x slide a quarter of its side, written here."""
    if LARGE.exists():
        return str(LARGE)
    from workflow.demo import tissue
    from workflow.demo.design import item_rng

    path = os.path.join(folder, "gpu_40x.svs")
    rng = item_rng(2026, 0)
    layout = tissue.random_layout(rng, scale=4.0)
    tissue.write_slide(path, layout, tissue.appearance(layout, 0.0, rng), mpp=0.25, app_mag=40)
    return path


def amp_vs_fp32(encoder, slide: str, coords: str, device: torch.device, n: int = 256) -> float:
    """Largest per-patch relative L2 difference between AMP and fp32 features of the first ``n`` patches."""
    tiles = read_coords(coords)
    xy = tiles.xy[:n]
    spec = encoder.spec
    data = PatchBlocks(
        slide, xy, tiles.geometry, plan_blocks(xy, tiles.geometry.size_level0, 1), spec.input_size, spec.mean, spec.std
    )
    pixels = torch.cat([data[i][1] for i in range(len(data))])
    model = encoder.model.to(device, memory_format=torch.channels_last)
    amp = encode(model, pixels, device)
    with torch.inference_mode():
        fp32 = model(pixels.to(device).contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
    return float((np.linalg.norm(amp - fp32, axis=1) / np.linalg.norm(fp32, axis=1)).max())


CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from workflow.device import claim_device
    start = time.monotonic()
    with claim_device(poll_seconds=0.5) as device:
        got = time.monotonic()
        time.sleep(float(sys.argv[2]))
    print(json.dumps({"device": str(device), "waited": got - start, "start": got, "end": time.monotonic()}))
    """
)


def exclusive_claims(hold: float = 4.0) -> tuple[bool, str]:
    """GPUs + 1 concurrent claimers: no two hold the same GPU at overlapping times."""
    n = torch.cuda.device_count() + 1
    children = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, str(ROOT), str(hold)], stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    claims = [json.loads(c.communicate(timeout=120)[0]) for c in children]
    overlaps = [
        (a["device"], b["device"])
        for i, a in enumerate(claims)
        for b in claims[i + 1 :]
        if a["device"] == b["device"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    waited = max(c["waited"] for c in claims)
    ok = not overlaps and waited >= hold * 0.9
    return (
        ok,
        f"{n} claimers on {n - 1} GPU(s): devices {sorted(c['device'] for c in claims)}, longest wait {waited:.1f} s",
    )


def deref_fold(device: torch.device, epochs: int) -> tuple[float, float]:
    """Seconds per epoch and peak GPU MiB of one DeReF fold (reference preset) on synthetic bags."""
    from bench_training import BLCA_SIZES, cohort

    from model.bins import time_bin_edges
    from model.deref import DeReF, DeReFOptions
    from model.train import TrainSettings, train_network

    patients = cohort()
    train, held = patients[:48], patients[48:]
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    settings = TrainSettings(epochs=epochs, scheduler="poly", weighted_sampling=True, seed=1, device=str(device))
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    train_network(lambda _: DeReF(BLCA_SIZES, options=DeReFOptions.reference(), seed=1), train, held, edges, settings)
    return (time.perf_counter() - start) / epochs, torch.cuda.max_memory_allocated(device) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.tsv")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no GPU visible: these checks need one", file=sys.stderr)
        sys.exit(2)
    rows, failed = [], []

    def record(check: str, value: float, unit: str, ok: bool | None = None, note: str = "") -> None:
        rows.append({"check": check, "value": round(value, 4), "unit": unit, "ok": ok, "note": note})
        print(rows[-1], flush=True)
        if ok is False:
            failed.append(check)

    encoder = load_encoder(encoder_spec("resnet50_trunc"), "random")
    readers = max(1, args.threads - 1)
    with tempfile.TemporaryDirectory() as tmp, claim_device() as device:
        name = torch.cuda.get_device_name(device)
        start = time.perf_counter()
        slide = synthetic_slide(tmp)
        record("synthetic slide ready", time.perf_counter() - start, "s", note=slide)
        coords = tile(slide, tmp, args.patches)
        top = ceiling(encoder, device, args.batch_size, batches=20)
        record("encoder ceiling (in-memory tensors, AMP)", top, "patches/s", note=f"{name}, batch {args.batch_size}")
        for block in (4, 1):
            task = SlideTask("s", slide, coords, os.path.join(tmp, f"b{block}.h5"))
            settings = FeatureSettings(batch_size=args.batch_size, block=block)
            result = extract_slides([task], encoder, settings, device, threads=args.threads)[0].attrs
            rate = result["patches_per_second"]
            record(
                f"end to end, {'block' if block > 1 else 'per-patch'} reads",
                rate,
                "patches/s",
                ok=(rate >= 0.8 * top) if block > 1 else None,
                note=f"{result['n_patches']} patches, {readers} readers, {rate / top:.0%} of the ceiling",
            )
        assert len(read_features(os.path.join(tmp, "b4.h5")).features) == result["n_patches"]
        error = amp_vs_fp32(encoder, slide, coords, device)
        record("AMP vs fp32, max per-patch relative L2", error, "fraction", ok=error < 0.02)
    ok, note = exclusive_claims()
    record("exclusive GPU claims", float(ok), "bool", ok=ok, note=note)
    with claim_device() as device:
        seconds, memory = deref_fold(device, args.epochs)
    record("DeReF fold (reference preset), 48 train patients", seconds, "s/epoch", note=f"peak {memory:.0f} MiB")
    write_tsv(pd.DataFrame(rows), args.out)
    print(f"wrote {args.out}")
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main()
