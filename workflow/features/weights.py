"""Preflight of the configured encoder weights (rule ``check_weights``), offline, before any slide is read.

For a local file (or a folder holding it, see :mod:`workflow.features.manifest`) the check

1. finds the file: the path itself, or the manifest's file name in the folder;
2. names a file that is no checkpoint for what it is (empty, a web page, a git-lfs pointer, cut
   short, a pickled model; :func:`~workflow.features.checkpoints.weights_file_problem`), then
   hashes the file's bytes (streamed) and compares them with the pin: ``features: sha256:`` when
   set, else the manifest's ``sha256``. No pin at all (a manifest entry whose published hash is
   not recorded, or a timm model outside the manifest) refuses the file and prints its sha256,
   so the user pins it after comparing it with the source's;
3. loads it safely (safetensors / weights_only), converts the keys where the manifest says so,
   and fits it strictly to the architecture;
4. runs the model once and compares the output dim with the manifest's.

``hub`` checks that timm's weights are in the Hugging Face cache (offline) and verifies the
cached file the same way when it is pinned; ``random`` builds the model and records that the
features will be meaningless. Every refusal is a :class:`WeightsError` naming the encoder, the
file, what is wrong, and where the file must come from.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import timm

from workflow.features.checkpoints import weights_file_problem
from workflow.features.encoders import EncoderSpec, LoadedEncoder, encoder_spec, load_encoder
from workflow.features.manifest import MANIFEST_PATH, WeightsError, file_sha256, resolve_weights_file
from workflow.io import atomic_path

log = logging.getLogger(__name__)
REPORT_COLUMNS = ("encoder", "file", "sha256", "status", "dim", "architecture")


@dataclass(frozen=True)
class WeightsReport:
    """One row of ``results/weights/<encoder>.tsv``: what the slide stages will use."""

    encoder: str
    file: str  # the resolved file, "hub:<repo>/<file>" for the cache, "-" for random
    sha256: str  # the file's sha256, "-" for random
    status: str  # verified (manifest pin), verified-config (features: sha256:), hub-unpinned, random
    dim: int
    architecture: str


class Checked(NamedTuple):
    """The report row, and the encoder as built from the checked weights."""

    report: WeightsReport
    encoder: LoadedEncoder


def _pin(spec: EncoderSpec, config_sha256: str | None) -> tuple[str | None, str]:
    """(expected sha256, where it comes from) for ``spec``'s file."""
    if config_sha256:
        return config_sha256.lower(), "features: sha256: in the config"
    if spec.source is not None and spec.source.sha256:
        return spec.source.sha256, f"the manifest ({MANIFEST_PATH}; read from {spec.source.sha256_from})"
    return None, ""


def _verify_file(spec: EncoderSpec, path: Path, config_sha256: str | None) -> tuple[str, str]:
    """(sha256, status) of ``path`` against its pin, or a WeightsError.

    A file that is no checkpoint at all (empty, a web page, a pickled model...) is named for what it
    is first: a checksum mismatch or a request to pin it would only hide that.
    """
    if problem := weights_file_problem(path):
        raise WeightsError(f"encoder {spec.name!r}: weights file {path} is {problem}. {spec.where_from()}")
    log.info("hashing %s (%.2f GB)", path, path.stat().st_size / 1e9)
    actual = file_sha256(path)
    expected, pinned_by = _pin(spec, config_sha256)
    if expected is None:
        published = (
            f"compare it with the SHA256 under 'Git LFS Details' on {spec.source.url}/blob/main/{spec.source.file}"
            if spec.source is not None
            else "compare it with the sha256 its provider publishes"
        )
        raise WeightsError(
            f"encoder {spec.name!r}: weights file {path} has sha256 {actual}, and no expected value is recorded "
            f"for it (the manifest has none). Unpinned weights are refused: {published}, then add "
            f"`sha256: {actual}` under features: in your config. {spec.where_from()}"
        )
    if actual != expected:
        raise WeightsError(
            f"encoder {spec.name!r}: weights file {path} has sha256 {actual}, but {pinned_by} expects {expected}: "
            f"a different or corrupted file (another encoder's, a partial download, a re-upload?). {spec.where_from()}"
        )
    return actual, "verified-config" if config_sha256 else "verified"


def _hub_cache_file(spec: EncoderSpec) -> Path | None:
    """The cached file timm's pretrained weights load from, if the Hugging Face cache has it."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.get_pretrained_cfg(spec.timm_name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    names = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "open_clip_model.safetensors"]
    names += ["pytorch_model.bin"]
    for name in filter(None, names):
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return Path(found)
    return None


def check_weights(
    encoder: str,
    weights: str,
    input_size: int | None = None,
    sha256: str | None = None,
    spec: EncoderSpec | None = None,
) -> Checked:
    """Verify what ``features: encoder/weights/sha256`` configure; raise WeightsError with the remedy if wrong.

    ``spec`` replaces ``encoder_spec(encoder, input_size)`` (tests build small variants).
    """
    spec = spec or encoder_spec(encoder, input_size)
    if weights == "random":
        loaded = load_encoder(spec, "random")
        log.warning("encoder %s: random weights; the features are for pipeline tests only", spec.name)
        return Checked(WeightsReport(spec.name, "-", "-", "random", loaded.dim, spec.architecture), loaded)
    if weights == "hub":
        loaded = load_encoder(spec, "hub")  # offline: fails with the help message when the cache lacks them
        cached = _hub_cache_file(spec)
        if cached is None:
            report = WeightsReport(
                spec.name, f"hub:{spec.timm_name}", "-", "hub-unpinned", loaded.dim, spec.architecture
            )
        elif _pin(spec, sha256)[0] is None:
            report = WeightsReport(
                spec.name, str(cached), file_sha256(cached), "hub-unpinned", loaded.dim, spec.architecture
            )
        else:
            digest, status = _verify_file(spec, cached, sha256)
            report = WeightsReport(spec.name, str(cached), digest, status, loaded.dim, spec.architecture)
        return Checked(report, loaded)
    expected_file = spec.source.file if spec.source is not None else None
    path = resolve_weights_file(spec.name, weights, expected_file, spec.where_from())
    digest, status = _verify_file(spec, path, sha256)
    loaded = load_encoder(spec, str(path))  # safe load, key conversion, strict fit, output dim
    return Checked(WeightsReport(spec.name, str(path), digest, status, loaded.dim, spec.architecture), loaded)


def write_report(report: WeightsReport, out: str | Path) -> None:
    """The one-row TSV the slide stages depend on."""
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, REPORT_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerow(asdict(report))


def read_report(path: str | Path) -> WeightsReport:
    with open(path, newline="") as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return WeightsReport(**{**row, "dim": int(row["dim"])})
