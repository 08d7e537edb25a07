"""Whole-slide access through OpenSlide: opening with clear errors, and physical resolution.

Resolution decides which pyramid level gives 20x, so it is never guessed. Order of trust:
the sheet's per-slide ``mpp`` override, OpenSlide's ``openslide.mpp-x/y``, vendor properties
(``aperio.MPP``, TIFF resolution tags), and only when configured, 10 µm/px divided by the
objective power. With none of these the slide is refused with a message saying how to fix it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openslide
import tifffile

from workflow.io import RECOPY, not_data

_TIFF_UNIT_UM = {"centimeter": 1e4, "inch": 25400.0}


class SlideError(ValueError):
    """A slide that cannot be used as it is, with the slide named and the fix stated."""


@dataclass(frozen=True)
class Resolution:
    """Microns per level-0 pixel and where that number came from."""

    mpp: float
    source: str


_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


class _Records(logging.Handler):
    """Collects the messages tifffile logs (it logs a damaged directory instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(re.sub(r"^<[^>]*> ", "", record.getMessage()))  # without the object's repr


def _tiff_damage(path: Path, strict: bool) -> str | None:
    """Why a TIFF-based file is truncated or damaged, found from its directories alone; None if it looks whole.

    Tile data past the end of the file is certain truncation. ``strict`` also counts the errors
    tifffile meets reading the directories: only for files OpenSlide refused, since some vendors'
    valid files make tifffile complain too.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(4) not in _TIFF_MAGIC:
            return None
    records, logger = _Records(), logging.getLogger("tifffile")
    logger.addHandler(records)
    propagate, logger.propagate = logger.propagate, False
    end = 0
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True) if n]
                end = max([end, *ends])
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        records.messages.append(str(exc))
    finally:
        logger.removeHandler(records)
        logger.propagate = propagate
    if end > size:
        return f"truncated: the file ends at byte {size:,}, before the end of its image data (byte {end:,}); {RECOPY}"
    if strict and records.messages:
        return f"truncated or damaged: its TIFF directory cannot be read in full (tifffile: {records.messages[0]}); {RECOPY}"
    return None


def damage(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with a slide file that reads badly: not a slide at all, or a truncated TIFF."""
    path = Path(path)
    return not_data(path, "slide") or _tiff_damage(path, strict=True)


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as fh:
        return path.suffix.lower() == ".dcm" or fh.read(132)[128:] == b"DICM"


def _why_unsupported(path: Path) -> str:
    """Best explanation of why OpenSlide did not recognise a file."""
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages[0].is_tiled:
                return "it is a plain (stripped, non-pyramidal) TIFF; write it as a tiled pyramidal TIFF, e.g. `vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg`"
    except (tifffile.TiffFileError, OSError, IndexError):
        pass
    return "OpenSlide does not recognise its format; supported: Aperio SVS, Hamamatsu, Leica, MIRAX, Philips, Sakura, Ventana, tiled TIFF"


def _why_unopened(path: Path, exc: openslide.OpenSlideError) -> str:
    """Why OpenSlide refused a file: what the file really is where that can be told, else OpenSlide's reason."""
    if problem := damage(path):
        return f"it is {problem}"
    if _is_dicom(path):
        return f"it is a DICOM file, which this OpenSlide build cannot read ({exc}); convert it to a pyramidal TIFF or SVS (e.g. with bfconvert or wsidicomizer's export)"
    if isinstance(exc, openslide.OpenSlideUnsupportedFormatError):
        return _why_unsupported(path)
    return f"unreadable or corrupt ({exc}); re-export or re-scan it, or remove it from slides.tsv"


def open_slide(path: str | os.PathLike[str], slide_id: str) -> openslide.OpenSlide:
    """Open a slide or raise SlideError naming it and saying what to do.

    A TIFF-based slide whose tile data runs past the end of the file is refused here, although
    OpenSlide opens it, so that a truncated copy is named at inventory and tiling, not hours later.
    """
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"slide {slide_id}: file {path} not found; fix its path in slides.tsv")
    try:
        slide = openslide.OpenSlide(path)
    except openslide.OpenSlideError as exc:
        raise SlideError(f"slide {slide_id} ({path}): cannot be opened: {_why_unopened(path, exc)}") from None
    if problem := _tiff_damage(path, strict=False):
        slide.close()
        raise SlideError(f"slide {slide_id} ({path}): cannot be used: it is {problem}")
    return slide


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def resolve_mpp(
    properties: dict[str, str], slide_id: str, override: float | None = None, from_objective_power: bool = False
) -> Resolution:
    """Microns per level-0 pixel, trying each source in order of trust."""
    if _positive(override):
        return Resolution(float(override), "sheet override")
    mpp_x, mpp_y = _positive(properties.get("openslide.mpp-x")), _positive(properties.get("openslide.mpp-y"))
    if mpp_x:
        return Resolution((mpp_x + (mpp_y or mpp_x)) / 2, "openslide.mpp")
    if mpp := _positive(properties.get("aperio.MPP")):
        return Resolution(mpp, "aperio.MPP")
    unit = _TIFF_UNIT_UM.get(properties.get("tiff.ResolutionUnit", ""))
    if unit and (res := _positive(properties.get("tiff.XResolution"))):
        return Resolution(unit / res, "tiff.XResolution")
    power = _positive(properties.get("openslide.objective-power")) or _positive(properties.get("aperio.AppMag"))
    if from_objective_power and power:
        return Resolution(10.0 / power, "objective power (assumed 10/power)")
    hint = (
        f" The file reports objective power {power:g}x; set wsi: mpp_from_objective_power: true to use 10/{power:g} µm/px."
        if power
        else ""
    )
    raise SlideError(
        f"slide {slide_id}: no resolution (mpp) in its metadata. Add its microns per pixel in the mpp column of slides.tsv (0.25 for a typical 40x scan, 0.5 for 20x).{hint}"
    )


def describe(
    slide: openslide.OpenSlide, slide_id: str, override: float | None = None, from_objective_power: bool = False
) -> dict[str, Any]:
    """One inventory row: vendor, geometry, pyramid and resolution (or why it is missing)."""
    props = dict(slide.properties)
    row: dict[str, Any] = {
        "slide_id": slide_id,
        "vendor": props.get("openslide.vendor", ""),
        "width": slide.dimensions[0],
        "height": slide.dimensions[1],
        "levels": slide.level_count,
        "downsamples": ",".join(f"{d:.4g}" for d in slide.level_downsamples),
        "objective_power": _positive(props.get("openslide.objective-power")),
    }
    try:
        res = resolve_mpp(props, slide_id, override, from_objective_power)
        row |= {"mpp": round(res.mpp, 5), "mpp_source": res.source, "problem": ""}
    except SlideError as exc:
        row |= {"mpp": None, "mpp_source": "", "problem": str(exc)}
    return row
