"""Patch features of a job's slides: read blocks in DataLoader workers, encode, one HDF5 per slide.

One job encodes several slides so that importing torch and building the encoder (seconds on a
CPU, longer than a whole slide on a GPU) is paid once, and one reader pool streams every slide's
blocks. Each finished slide is written at once, atomically, with a provenance key, so a job
killed half-way redoes only the slides it had not finished.

GPU: AMP (bf16 where supported, else fp16), channels_last, inference_mode, pinned memory and
non-blocking copies. CPU: fp32 channels_last (bf16 autocast is several times slower on CPUs
without AMX). The output carries the encoder, the weights' source and checksum, the
preprocessing, and the tiling attributes, so features are never mistaken for other ones.
Coordinates from ``clam_compatible`` tiling or from CLAM itself are read as CLAM reads them:
patch by patch wherever block reads would not give the same pixels.

A slide with more unreadable patches than ``max_failed_fraction`` (corrupt tiles, a file
truncated after tiling) stops the job (``on_error="fail"``) or is written as excluded, as a slide
excluded at tiling is, and the job goes on (``"exclude"``). ``on_error`` is ``tiling: on_error``:
it decides what a failure does, not what features are, so it is no part of the provenance key.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from workflow.features import features_file as ff
from workflow.features.encoders import LoadedEncoder
from workflow.features.reading import PatchBlocks, plan_blocks
from workflow.io import RECOPY
from workflow.slides import damage
from workflow.tiling.coords import EXCLUDED, read_coords

log = logging.getLogger(__name__)
DTYPES = {"float32": np.float32, "float16": np.float16}
ON_ERROR = ("fail", "exclude")  # tiling: on_error


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


def _loader(dataset: Dataset, device: torch.device, threads: int) -> DataLoader:
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


@dataclass(frozen=True)
class SlideTask:
    """One slide of a job: where its pixels and coordinates are, and where its features go."""

    slide_id: str
    slide_path: str
    coords_path: str
    out_path: str


class SlideResult(NamedTuple):
    """A slide's features-file attributes, and whether an earlier run's file was kept."""

    attrs: dict[str, Any]
    reused: bool


def provenance(task: SlideTask, encoder: LoadedEncoder, settings: FeatureSettings) -> str:
    """A key over everything that shapes a slide's features: a finished file with it is reused.

    The coordinates count by their values and tiling attributes (not the file's bytes, which hold
    tiling's timing); the slide by size and modification time (hashing gigabytes of pixels would
    cost more than the resume saves). No absolute path: a moved results folder keeps its features.
    """
    digest = hashlib.sha256()
    tiles = read_coords(task.coords_path)
    digest.update(np.ascontiguousarray(tiles.xy, dtype=np.int64).tobytes())
    digest.update(repr(sorted((k, repr(v)) for k, v in tiles.attrs.items() if k != "seconds")).encode())
    slide = Path(task.slide_path)
    stat = slide.stat() if slide.exists() else None  # a slide excluded at tiling may be gone
    spec = encoder.spec
    for part in (
        task.slide_id,
        stat and stat.st_size,
        stat and stat.st_mtime_ns,
        spec.name,
        spec.timm_name,
        spec.input_size,
        spec.mean,
        spec.std,
        encoder.weights_sha256,
        sorted(asdict(settings).items()),
    ):
        digest.update(repr(part).encode())
    return digest.hexdigest()


def finished(task: SlideTask, key: str) -> dict[str, Any] | None:
    """The attributes of a features file already written for exactly this task, else None."""
    if not Path(task.out_path).is_file():
        return None
    try:
        attrs = ff.read_features_attrs(task.out_path)
    except OSError:  # not HDF5 (a stray file): encode again
        return None
    return attrs if attrs.get(ff.PROVENANCE) == key else None


class SlidesBlocks(Dataset):
    """The blocks of several slides in one stream, so one reader pool serves a whole job.

    Items are (slide number, patch indices, pixels, read mask, first failure), slide by slide in order, so the
    consumer sees each slide's blocks contiguously and can write it as soon as its last block ends.
    """

    def __init__(self, slides: list[PatchBlocks]) -> None:
        self.slides = slides
        self.items = [(k, j) for k, slide in enumerate(slides) for j in range(len(slide))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, str]:
        k, j = self.items[i]
        return (k, *self.slides[k][j])


class _SlideEncoding:
    """Features of one slide as its blocks arrive: fixed-shape batches, then the file."""

    def __init__(
        self, number: int, task: SlideTask, tiles: Any, attrs: dict[str, Any], dim: int, n_blocks: int
    ) -> None:
        self.number, self.task, self.tiles, self.attrs = number, task, tiles, attrs
        n = len(tiles.xy)
        self.features = np.zeros((n, dim), np.float32)
        self.done = np.zeros(n, bool)
        self.blocks_left = n_blocks
        self.pending_index: list[torch.Tensor] = []
        self.pending_pixels: list[torch.Tensor] = []
        self.buffered = 0
        self.first_failure = ""

    def add(self, index: torch.Tensor, pixels: torch.Tensor, ok: torch.Tensor, failure: str) -> None:
        self.blocks_left -= 1
        self.first_failure = self.first_failure or failure
        if ok.any():
            self.pending_index.append(index[ok])
            self.pending_pixels.append(pixels)
            self.buffered += int(ok.sum())

    def flush(self, count: int, model: torch.nn.Module, device: torch.device) -> int:
        """Encode the first ``count`` buffered patches; fixed batch shapes keep oneDNN/cuDNN kernels cached."""
        index, pixels = torch.cat(self.pending_index), torch.cat(self.pending_pixels)
        batch = index[:count].numpy()
        self.features[batch] = encode(model, pixels[:count], device)
        self.done[batch] = True
        self.pending_index[:] = [index[count:]]
        self.pending_pixels[:] = [pixels[count:]]
        self.buffered -= len(batch)
        return len(batch)


def _write_excluded(
    task: SlideTask, tiles: Any, attrs: dict[str, Any], dim: int, dtype: str, reason: str, n_failed: int = 0
) -> dict[str, Any]:
    """An empty features file marked excluded, with the reason: later stages skip the slide."""
    attrs |= {ff.STATUS: EXCLUDED, ff.REASON: reason, ff.N_PATCHES: 0, ff.N_FAILED: n_failed}
    ff.write_features(task.out_path, np.empty((0, dim), DTYPES[dtype]), tiles.xy[:0], tiles.attrs, attrs)
    return attrs


def _unreadable(slide: _SlideEncoding, n_failed: int) -> str:
    """Which slide and file, how many patches failed, the first one's coordinate and error, and what the file is."""
    task = slide.task
    what = damage(task.slide_path)
    return (
        f"slide {task.slide_id}: {n_failed} of {len(slide.tiles.xy)} patches could not be read from {task.slide_path}"
        + (f"; the first at {slide.first_failure}" if slide.first_failure else "")
        + (f"; the file is {what}" if what else "")
    )


def _finish(
    slide: _SlideEncoding, settings: FeatureSettings, seconds: float, device: torch.device, on_error: str
) -> dict[str, Any]:
    """Check the failure budget and write the slide's features file (or, over budget, exclude it or stop)."""
    task, coords, done = slide.task, slide.tiles.xy, slide.done
    failed = ~done
    if failed.sum() > settings.max_failed_fraction * len(coords):
        reason = _unreadable(slide, int(failed.sum()))
        if on_error == "fail":
            raise FeatureError(
                f"{reason}. That is more than features: max_failed_fraction = {settings.max_failed_fraction}: the "
                f"slide file is damaged; {RECOPY} (or re-export or re-scan it). To go on without this slide set "
                "tiling: on_error: exclude; to keep its readable patches raise features: max_failed_fraction"
            )
        log.warning("slide %s excluded: %s", task.slide_id, reason)
        return _write_excluded(
            task, slide.tiles, slide.attrs, slide.features.shape[1], settings.dtype, reason, int(failed.sum())
        )
    if failed.any():
        log.warning(
            "slide %s: dropped %d unreadable patches, the first at %s",
            task.slide_id,
            int(failed.sum()),
            slide.first_failure,
        )
    attrs = slide.attrs | {
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
        task.out_path,
        slide.features[done].astype(DTYPES[settings.dtype]),
        coords[done],
        slide.tiles.attrs,
        attrs,
        coords[failed],
    )
    log.info(
        "slide %s: %d patches in %.1f s (%.1f patches/s) on %s",
        task.slide_id,
        done.sum(),
        seconds,
        attrs[ff.PATCHES_PER_SECOND],
        device,
    )
    return attrs


def extract_slides(
    tasks: list[SlideTask],
    encoder: LoadedEncoder,
    settings: FeatureSettings,
    device: torch.device,
    threads: int = 1,
    on_error: str = "fail",
) -> list[SlideResult]:
    """Encode every patch of each slide and write one features file per slide; return their attributes.

    A slide whose file already holds features made from the same inputs (``provenance``) is kept as
    it is, so a job killed half-way redoes only the slides it had not finished. One DataLoader reads
    the blocks of all remaining slides, so its workers never idle at a slide boundary. ``on_error``
    (``tiling: on_error``) says whether a slide with too many unreadable patches stops the job or
    is written as excluded.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"tiling: on_error must be one of {ON_ERROR}, not {on_error!r}")
    spec = encoder.spec
    results: dict[int, SlideResult] = {}
    streams: list[PatchBlocks] = []
    encodings: list[_SlideEncoding] = []
    for k, task in enumerate(tasks):
        key = provenance(task, encoder, settings)
        kept = finished(task, key)
        if kept is not None:
            log.info("slide %s: features already written by an earlier run from the same inputs, kept", task.slide_id)
            results[k] = SlideResult(kept, reused=True)
            continue
        tiles = read_coords(task.coords_path)
        attrs: dict[str, Any] = {
            ff.SLIDE_ID: task.slide_id,
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
            ff.PROVENANCE: key,
            **{f"setting_{k}": v for k, v in asdict(settings).items()},
        }
        if tiles.geometry is None:
            log.warning(
                "slide %s was excluded at tiling (%s): writing an empty features file", task.slide_id, tiles.reason
            )
            excluded = _write_excluded(task, tiles, attrs, encoder.dim, settings.dtype, tiles.reason)
            results[k] = SlideResult(excluded, reused=False)
            continue
        geometry = tiles.geometry
        block = settings.block
        if tiles.clam_compatible and not geometry.integer_downsample:
            # CLAM reads patch by patch, and a region read cut into patches differs here by sub-pixel shifts.
            block = 1
            log.info(
                "slide %s: level %d has a fractional downsample: reading patch by patch",
                task.slide_id,
                geometry.read_level,
            )
        blocks = plan_blocks(tiles.xy, geometry.size_level0, block)
        streams.append(
            PatchBlocks(
                task.slide_path, tiles.xy, geometry, blocks, spec.input_size, spec.mean, spec.std, task.slide_id
            )
        )
        encodings.append(_SlideEncoding(k, task, tiles, attrs, encoder.dim, len(blocks)))

    if encodings:
        if device.type == "cpu":
            torch.set_num_threads(max(1, threads))
        model = encoder.model.to(device, memory_format=torch.channels_last)
        total = sum(len(e.tiles.xy) for e in encodings)
        progress = tqdm(total=total, desc="patches", unit="patch", file=sys.stderr, mininterval=15, ascii=True)
        ready = [e for e in encodings if e.blocks_left == 0]  # slides with no patches at all
        start = time.perf_counter()
        for slide in ready:
            results[slide.number] = SlideResult(_finish(slide, settings, 0.0, device, on_error), reused=False)
        for k, index, pixels, ok, failure in _loader(SlidesBlocks(streams), device, threads):
            slide = encodings[k]
            slide.add(index, pixels, ok, failure)
            while slide.buffered >= settings.batch_size:
                progress.update(slide.flush(settings.batch_size, model, device))
            if slide.blocks_left == 0:
                if slide.buffered:
                    progress.update(slide.flush(slide.buffered, model, device))
                now = time.perf_counter()
                results[slide.number] = SlideResult(
                    _finish(slide, settings, now - start, device, on_error), reused=False
                )
                start = now
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
        progress.close()
    return [results[k] for k in range(len(tasks))]
