"""Patch pixels from the tiling stage's coordinates, read so that reading never limits the encoder.

Neighbouring patches are grouped into blocks (up to ``block`` x ``block`` patches of one grid
cell) and each block is read with one ``read_region`` and cut, which costs far fewer OpenSlide
calls and JPEG tile decodes than one read per patch. ``block=1`` is CLAM's per-patch reading.
At level 0 (and levels with an integer downsample) both give identical pixels; elsewhere
OpenSlide interpolates each read at its fractional level position, so they differ slightly.
Each DataLoader worker opens its own OpenSlide handle. A region that fails to read (a corrupt
JPEG tile) is retried patch by patch on a fresh handle, since OpenSlide refuses every call on a
handle once it has failed; patches that still fail are dropped, and the first one's coordinate and
OpenSlide's error travel back with the block, since a worker's log is no place to look for them.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import openslide
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from workflow.tiling.coords import PatchGeometry

log = logging.getLogger(__name__)


class PatchReadError(RuntimeError):
    """A block that failed to read in an unforeseen way, naming the slide, its file and the patches.

    Raised in a DataLoader worker; the loader re-raises it in the main process with this message.
    """


def plan_blocks(coords: np.ndarray, size0: int, block: int) -> list[np.ndarray]:
    """Indices of ``coords`` grouped by (block x block)-patch cells of the level-0 grid, row-major."""
    if block <= 1:
        return [np.array([i]) for i in range(len(coords))]
    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    span = size0 * block
    for i, (x, y) in enumerate(coords):
        cells[(int(y) // span, int(x) // span)].append(i)
    return [np.asarray(cells[key]) for key in sorted(cells)]


def preprocess(pixels: torch.Tensor, input_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, S, S) float32: antialiased bilinear resize, [0, 1], normalised.

    The resize runs on uint8, as PIL does for CLAM and torchvision does for uint8 tensors: it is
    five times cheaper than in float, which keeps reading ahead of the encoder on a 2-core CPU.
    """
    x = pixels.permute(0, 3, 1, 2)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
    x = x.float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).contiguous()


class SlideReader:
    """One OpenSlide handle per process, reopened after a failed read."""

    def __init__(self, path: str, geometry: PatchGeometry) -> None:
        self.path = path
        self.geometry = geometry
        self._slide: openslide.OpenSlide | None = None
        self._pid = -1

    @property
    def slide(self) -> openslide.OpenSlide:
        if self._slide is None or self._pid != os.getpid():
            self._slide = openslide.OpenSlide(self.path)
            self._pid = os.getpid()
        return self._slide

    def _reopen(self) -> None:
        self._slide = None

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 pixels of a region at the read level; (x, y) in level-0 pixels."""
        region = self.slide.read_region((int(x), int(y)), self.geometry.read_level, (width, height))
        return np.asarray(region)[..., :3]

    def read_block(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Patches (K, S, S, 3) of the block, a mask of those read, and the first failure ("" if none).

        One region read if possible; else patch by patch, a failure described as
        "level-0 (x, y): <OpenSlide's error>".
        """
        size, ds = self.geometry.read_size, self.geometry.downsample[0]
        x0, y0 = coords.min(axis=0)
        offsets = np.round((coords - [x0, y0]) / ds).astype(int)
        extent = offsets.max(axis=0) + size
        patches = np.zeros((len(coords), size, size, 3), np.uint8)
        try:
            region = self.read(x0, y0, int(extent[0]), int(extent[1]))
            for k, (ox, oy) in enumerate(offsets):
                patches[k] = region[oy : oy + size, ox : ox + size]
            return patches, np.ones(len(coords), bool), ""
        except openslide.OpenSlideError:
            self._reopen()
        ok = np.ones(len(coords), bool)
        failures = []
        for k, (x, y) in enumerate(coords):
            try:
                patches[k] = self.read(x, y, size, size)
            except openslide.OpenSlideError as exc:
                failures.append(f"level-0 ({x}, {y}): {exc}")
                log.warning("%s: unreadable patch at %s", self.path, failures[-1])
                ok[k] = False
                self._reopen()
        return patches, ok, failures[0] if failures else ""


class PatchBlocks(Dataset):
    """One item per block: (indices into coords, preprocessed patches, mask of patches read, first failure)."""

    def __init__(
        self,
        path: str,
        coords: np.ndarray,
        geometry: PatchGeometry,
        blocks: list[np.ndarray],
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        slide_id: str | None = None,
    ) -> None:
        self.reader = SlideReader(path, geometry)
        self.slide_id = slide_id or Path(path).stem
        self.coords = coords
        self.blocks = blocks
        self.input_size, self.mean, self.std = input_size, mean, std

    def __len__(self) -> int:
        return len(self.blocks)

    def _read(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        try:
            return self.reader.read_block(coords)
        except Exception as exc:  # the worker's traceback alone would not say which slide and patches
            x, y = coords.min(axis=0)
            raise PatchReadError(
                f"slide {self.slide_id} ({self.reader.path}): reading {len(coords)} patches from level-0 ({x}, {y}) "
                f"failed: {type(exc).__name__}: {exc}"
            ) from exc

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
        index = self.blocks[i]
        patches, ok, failure = self._read(self.coords[index])
        if not ok.any():
            pixels = torch.empty(0, 3, self.input_size, self.input_size)
        else:
            pixels = preprocess(torch.from_numpy(patches[ok]), self.input_size, self.mean, self.std)
        return torch.from_numpy(index), pixels, torch.from_numpy(ok), failure
