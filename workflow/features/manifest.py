"""The encoder weights manifest (config/encoders.yaml) and where a configured weights file is.

Torch-free on purpose: Snakemake imports this module to name the weights file a rule depends on,
and the preflight hashes files with it before torch loads anything.

``features: weights:`` is ``hub``, ``random``, a file, or a folder. In a folder an encoder's file
is ``<folder>/<encoder>/<file>`` (what ``huggingface-cli download <repo> --local-dir
<folder>/<encoder>`` leaves), else ``<folder>/<file>`` (a folder holding one encoder's download),
``<file>`` being the manifest's file name for the encoder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

MANIFEST_PATH = Path(__file__).resolve().parents[2] / "config" / "encoders.yaml"
SPECIAL_WEIGHTS = ("hub", "random")
POOLINGS = ("head", "truncate", "cls_mean_patch", "attentional")
KEY_CONVERSIONS = (None, "dinov2_hf", "conch_v15")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
ENTRY_KEYS = {
    "title",
    "architecture",
    "create_kwargs",
    "input_size",
    "mean",
    "std",
    "dim",
    "pooling",
    "pooling_args",
    "truncate_after",
    "hub",
    "source",
    "reference",
}
SOURCE_KEYS = {"repo", "gated", "licence", "file", "sha256", "sha256_from", "key_conversion"}


class WeightsError(RuntimeError):
    """Weights that cannot be found, are not the expected file, or do not fit, with the way to provide them."""


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's published weights file comes from and what it must hash to."""

    repo: str
    gated: bool
    licence: str
    file: str
    sha256: str | None
    sha256_from: str | None
    key_conversion: str | None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}"

    def help(self) -> str:
        """One sentence: where to download the file and on what terms."""
        gate = (
            "a gated repository: log in to Hugging Face, request access and accept its terms on that page, then "
            if self.gated
            else ""
        )
        return (
            f"The file comes from {self.url} ({gate}download '{self.file}', e.g. `huggingface-cli download "
            f"{self.repo} {self.file} --local-dir <folder>/<encoder>` on a machine with internet, then copy it here). "
            f"Licence: {self.licence}."
        )


def _check_entry(name: str, entry: dict[str, Any]) -> None:
    where = f"encoder manifest entry {name!r}"
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("architecture", "input_size", "mean", "std", "dim", "pooling", "hub"):
        if key not in entry:
            raise ValueError(f"{where}: missing {key!r}")
    if entry["pooling"] not in POOLINGS:
        raise ValueError(f"{where}: pooling {entry['pooling']!r} is not one of {POOLINGS}")
    if (entry["pooling"] == "truncate") != ("truncate_after" in entry):
        raise ValueError(f"{where}: pooling truncate and truncate_after go together")
    source = entry.get("source")
    if source is None:
        raise ValueError(f"{where}: missing 'source'")
    unknown = set(source) - SOURCE_KEYS
    missing = {"repo", "gated", "licence", "file", "sha256", "key_conversion"} - set(source)
    if unknown or missing:
        raise ValueError(f"{where}: source has unknown keys {sorted(unknown)}, lacks {sorted(missing)}")
    if source["sha256"] is not None and not SHA256.match(str(source["sha256"])):
        raise ValueError(f"{where}: sha256 {source['sha256']!r} is not 64 lowercase hex digits")
    if source["sha256"] is not None and not source.get("sha256_from"):
        raise ValueError(f"{where}: a pinned sha256 needs sha256_from (where the value was read)")
    if source["key_conversion"] not in KEY_CONVERSIONS:
        raise ValueError(f"{where}: key_conversion {source['key_conversion']!r} is not one of {KEY_CONVERSIONS}")


@cache
def _read_manifest(path: str) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    entries = data.get("encoders") or {}
    for name, entry in entries.items():
        _check_entry(name, entry)
    return entries


def manifest(path: str | Path = MANIFEST_PATH) -> dict[str, dict[str, Any]]:
    """Encoder name -> its manifest entry (checked), read once per path."""
    return _read_manifest(str(Path(path).resolve()))


def weights_source(entry: dict[str, Any]) -> WeightsSource:
    src = entry["source"]
    return WeightsSource(
        src["repo"],
        bool(src["gated"]),
        src["licence"],
        src["file"],
        src["sha256"],
        src.get("sha256_from"),
        src["key_conversion"],
    )


def resolve_weights_file(encoder: str, weights: str | Path, expected_file: str | None, help_text: str = "") -> Path:
    """The weights file ``weights`` names for ``encoder``: the file itself, or the manifest's file in a folder."""
    path = Path(weights).expanduser()
    if path.is_dir():
        if expected_file is None:
            raise WeightsError(
                f"features: weights: {path} is a folder, but encoder {encoder!r} is not in the manifest "
                f"({MANIFEST_PATH}), so its file name is unknown: give the weights file itself"
            )
        candidates = [path / encoder / expected_file, path / expected_file]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise WeightsError(
            f"encoder {encoder!r}: no weights file in the folder {path}: looked for "
            f"{' and '.join(str(c) for c in candidates)}. {help_text}".rstrip()
        )
    if not path.is_file():
        raise WeightsError(f"encoder {encoder!r}: weights file {path} not found. {help_text}".rstrip())
    return path


def configured_weights_file(encoder: str, weights: str, path: str | Path = MANIFEST_PATH) -> str | None:
    """For Snakemake: the file ``features: weights:`` resolves to, if it is there now (else None).

    None for ``hub`` and ``random`` too. A missing file is no input, so that ``check_weights`` runs
    and says where the file must come from instead of Snakemake's bare missing-input error.
    """
    if weights in SPECIAL_WEIGHTS:
        return None
    entry = manifest(path).get(encoder)
    expected = entry["source"]["file"] if entry else None
    try:
        return str(resolve_weights_file(encoder, weights, expected))
    except WeightsError:
        return None


def weights_input(features: dict[str, Any]) -> list[str]:
    """Snakemake input for a rule that reads ``features: weights:``: the resolved file, or nothing."""
    found = configured_weights_file(features["encoder"], features["weights"])
    return [found] if found else []


def file_sha256(path: str | Path, chunk: int = 16 << 20) -> str:
    """sha256 of the file's bytes, streamed (a 4.5 GB checkpoint never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
