"""Patch features of one slide: read blocks in DataLoader workers, encode, write one HDF5.

GPU: AMP (bf16 where supported, else fp16), channels_last, inference_mode, pinned memory and
non-blocking copies. CPU: fp32 channels_last (bf16 autocast is several times slower on CPUs
without AMX). The output carries the encoder, the weights' source and checksum, the
preprocessing, and the tiling attributes, so features are never mistaken for other ones.
Coordinates from ``clam_compatible`` tiling or from CLAM itself are read as CLAM reads them:
patch by patch wherever block reads would not give the same pixels.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from workflow.features import features_file as ff
from workflow.features.encoders import LoadedEncoder
from workflow.features.reading import PatchBlocks, plan_blocks
from workflow.tiling.coords import EXCLUDED, read_coords

log = logging.getLogger(__name__)
DTYPES = {"float32": np.float32, "float16": np.float16}


class FeatureError(RuntimeError):
    """A slide whose features cannot be trusted, with the slide named and the way forward."""


@dataclass(frozen=True)
class FeatureSettings:
    """The ``features:`` settings that shape computation and output."""

    batch_size: int = 32
    dtype: str = "float32"
    block: int = 4
    max_failed_fraction: float = 0.05


def encode(model: torch.nn.Module, pixels: torch.Tensor, device: torch.device) -> np.ndarray:
    """Features of a preprocessed batch as float32 numpy."""
    x = pixels.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=device.type == "cuda"):
        return model(x).float().cpu().numpy()


def _loader(dataset: PatchBlocks, device: torch.device, threads: int) -> DataLoader:
    # CPU: the encoder needs the cores; decoding a block costs a few per cent of its compute, so
    # one worker keeps ahead. GPU: reading is the bottleneck, so every spare core reads.
    workers = max(1, threads - 1) if device.type == "cuda" else (1 if threads > 1 else 0)
    return DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )


def extract_slide(
    slide_id: str,
    slide_path: str,
    coords_path: str,
    out_path: str,
    encoder: LoadedEncoder,
    settings: FeatureSettings,
    device: torch.device,
    threads: int = 1,
) -> dict[str, Any]:
    """Encode every patch of one slide and write the features file; return its attributes."""
    tiles = read_coords(coords_path)
    coords = tiles.xy
    spec = encoder.spec
    attrs: dict[str, Any] = {
        ff.SLIDE_ID: slide_id,
        ff.ENCODER: spec.name,
        "timm_name": spec.timm_name,
        ff.WEIGHTS_SOURCE: encoder.weights_source,
        ff.WEIGHTS_SHA256: encoder.weights_sha256,
        "input_size": spec.input_size,
        "mean": np.asarray(spec.mean),
        "std": np.asarray(spec.std),
        "resize": "bilinear, antialias (torch)",
        "dtype": settings.dtype,
        ff.DEVICE: str(device),
        **{f"setting_{k}": v for k, v in asdict(settings).items()},
    }
    if tiles.geometry is None:
        log.warning("slide %s was excluded at tiling (%s): writing an empty features file", slide_id, tiles.reason)
        attrs |= {ff.STATUS: EXCLUDED, ff.REASON: tiles.reason, ff.N_PATCHES: 0, ff.N_FAILED: 0}
        empty = np.empty((0, encoder.dim), DTYPES[settings.dtype])
        ff.write_features(out_path, empty, coords[:0], tiles.attrs, attrs)
        return attrs

    if device.type == "cpu":
        torch.set_num_threads(max(1, threads))
    model = encoder.model.to(device, memory_format=torch.channels_last)
    geometry = tiles.geometry
    block = settings.block
    if tiles.clam_compatible and not geometry.integer_downsample:
        # CLAM reads patch by patch, and a region read cut into patches differs here by sub-pixel shifts.
        block = 1
        log.info(
            "slide %s: level %d has a fractional downsample: reading patch by patch", slide_id, geometry.read_level
        )
    blocks = plan_blocks(coords, geometry.size_level0, block)
    dataset = PatchBlocks(slide_path, coords, geometry, blocks, spec.input_size, spec.mean, spec.std)

    features = np.zeros((len(coords), encoder.dim), np.float32)
    done = np.zeros(len(coords), bool)
    pending_index: list[torch.Tensor] = []
    pending_pixels: list[torch.Tensor] = []
    start = time.perf_counter()
    progress = tqdm(total=len(coords), desc=slide_id, unit="patch", file=sys.stderr, mininterval=15, ascii=True)

    def flush(count: int) -> None:
        """Encode the first ``count`` buffered patches; fixed batch shapes keep oneDNN/cuDNN kernels cached."""
        index, pixels = torch.cat(pending_index), torch.cat(pending_pixels)
        batch = index[:count].numpy()
        features[batch] = encode(model, pixels[:count], device)
        done[batch] = True
        progress.update(len(batch))
        pending_index[:] = [index[count:]]
        pending_pixels[:] = [pixels[count:]]

    buffered = 0
    for index, pixels, ok in _loader(dataset, device, threads):
        if ok.any():
            pending_index.append(index[ok])
            pending_pixels.append(pixels)
            buffered += int(ok.sum())
        while buffered >= settings.batch_size:
            flush(settings.batch_size)
            buffered -= settings.batch_size
    if buffered:
        flush(buffered)
    progress.close()
    seconds = time.perf_counter() - start

    failed = ~done
    if failed.sum() > settings.max_failed_fraction * len(coords):
        raise FeatureError(
            f"slide {slide_id}: {int(failed.sum())} of {len(coords)} patches could not be read (corrupt tiles?), more than "
            f"features: max_failed_fraction = {settings.max_failed_fraction}; re-export the slide, or raise the limit to keep it"
        )
    if failed.any():
        log.warning("slide %s: dropped %d unreadable patches", slide_id, int(failed.sum()))
    attrs |= {
        ff.STATUS: "ok",
        ff.REASON: "",
        ff.N_PATCHES: int(done.sum()),
        ff.N_FAILED: int(failed.sum()),
        ff.SECONDS: round(seconds, 3),
        ff.PATCHES_PER_SECOND: round(done.sum() / max(seconds, 1e-9), 2),
    }
    if device.type == "cuda":
        attrs["gpu_max_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    ff.write_features(
        out_path, features[done].astype(DTYPES[settings.dtype]), coords[done], tiles.attrs, attrs, coords[failed]
    )
    log.info(
        "slide %s: %d patches in %.1f s (%.1f patches/s) on %s",
        slide_id,
        done.sum(),
        seconds,
        attrs[ff.PATCHES_PER_SECOND],
        device,
    )
    return attrs
