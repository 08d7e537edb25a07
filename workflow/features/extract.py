"""Patch features of one slide: read blocks in DataLoader workers, encode, write one HDF5.

GPU: AMP (bf16 where supported, else fp16), channels_last, inference_mode, pinned memory and
non-blocking copies. CPU: fp32 channels_last (bf16 autocast is several times slower on CPUs
without AMX). The output carries the encoder, the weights' source and checksum, the
preprocessing, and the tiling attributes, so features are never mistaken for other ones.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from workflow.features.encoders import LoadedEncoder
from workflow.features.reading import PatchBlocks, PatchGeometry, plan_blocks
from workflow.features.store import read_features
from workflow.io import atomic_path

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


def read_coords(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Coordinates and their attributes from a tiling output."""
    with h5py.File(path, "r") as h5:
        return h5["coords"][:], dict(h5["coords"].attrs)


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


def write_features(
    path: str | os.PathLike[str],
    features: np.ndarray,
    coords: np.ndarray,
    coords_attrs: dict[str, Any],
    attrs: dict[str, Any],
    failed: np.ndarray | None = None,
) -> None:
    """Write ``features`` (N x D) and ``coords`` (N x 2, with the tiling attributes) atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=features)
        dataset = h5.create_dataset("coords", data=coords.astype(np.int64).reshape(-1, 2))
        for key, value in coords_attrs.items():
            dataset.attrs[key] = value
        h5.create_dataset(
            "failed_coords", data=(np.empty((0, 2), np.int64) if failed is None else failed.astype(np.int64))
        )
        for key, value in attrs.items():
            h5.attrs[key] = "" if value is None else value


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
    coords, coords_attrs = read_coords(coords_path)
    spec = encoder.spec
    attrs: dict[str, Any] = {
        "slide_id": slide_id,
        "encoder": spec.name,
        "timm_name": spec.timm_name,
        "weights_source": encoder.weights_source,
        "weights_sha256": encoder.weights_sha256,
        "input_size": spec.input_size,
        "mean": np.asarray(spec.mean),
        "std": np.asarray(spec.std),
        "resize": "bilinear, antialias (torch)",
        "dtype": settings.dtype,
        "device": str(device),
        **{f"setting_{k}": v for k, v in asdict(settings).items()},
    }
    if coords_attrs.get("status") == "excluded":
        log.warning(
            "slide %s was excluded at tiling (%s): writing an empty features file", slide_id, coords_attrs.get("reason")
        )
        attrs |= {"status": "excluded", "reason": coords_attrs.get("reason", ""), "n_patches": 0, "n_failed": 0}
        write_features(out_path, np.empty((0, encoder.dim), DTYPES[settings.dtype]), coords[:0], coords_attrs, attrs)
        return attrs

    if device.type == "cpu":
        torch.set_num_threads(max(1, threads))
    model = encoder.model.to(device, memory_format=torch.channels_last)
    geometry = PatchGeometry(
        int(coords_attrs["read_level"]),
        int(coords_attrs["read_size"]),
        float(np.asarray(coords_attrs["downsample"]).ravel()[0]),
    )
    blocks = plan_blocks(coords, int(coords_attrs["patch_size_level0"]), settings.block)
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
        "status": "ok",
        "reason": "",
        "n_patches": int(done.sum()),
        "n_failed": int(failed.sum()),
        "seconds": round(seconds, 3),
        "patches_per_second": round(done.sum() / max(seconds, 1e-9), 2),
    }
    if device.type == "cuda":
        attrs["gpu_max_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    write_features(
        out_path, features[done].astype(DTYPES[settings.dtype]), coords[done], coords_attrs, attrs, coords[failed]
    )
    log.info(
        "slide %s: %d patches in %.1f s (%.1f patches/s) on %s",
        slide_id,
        done.sum(),
        seconds,
        attrs["patches_per_second"],
        device,
    )
    return attrs


def write_clam_pt(features_path: str | os.PathLike[str], pt_path: str | os.PathLike[str]) -> None:
    """CLAM's ``pt_files/<slide>.pt`` (a float32 N x D tensor) for MCAT/CMTA/DeReF-style loaders."""
    features, _, _ = read_features(features_path)
    with atomic_path(pt_path) as tmp:
        torch.save(torch.from_numpy(features.astype(np.float32)), tmp)
