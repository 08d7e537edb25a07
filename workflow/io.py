"""Atomic file output (nothing half-written survives a crash), and naming files that hold no data."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it onto ``final`` only if the block succeeds.

    The temporary name ends with the final name (writers such as nibabel pick the format from the
    suffixes) and starts with a dot so a glob for finished outputs never matches it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp{os.getpid()}.{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_tsv(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table as TSV (no index), atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


RECOPY = "re-copy it and compare checksums (sha256sum) with the source"


def not_data(path: Path, kind: str) -> str | None:
    """What a file is when it plainly holds no ``kind``: empty, a web page, a git-lfs pointer, text.

    These are what failed copies and downloads leave behind, and the library that reads the file
    would only say that it does not recognise the format. The phrase follows "is".
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return f"an empty file (0 bytes); {RECOPY}"
    if head.startswith(b"version https://git-lfs"):
        return (
            f"a git-lfs pointer file, not the {kind} itself; run `git lfs pull` in the repository it comes from, "
            "or download the file itself"
        )
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return f"an HTML page, not a {kind}: a failed download saved a web (error or login) page instead; download it again"
    if not any(byte < 9 or 13 < byte < 32 for byte in head):
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:60]
        return f"a text file (it begins {first!r}), not a {kind}; copy or download the {kind} itself"
    return None
