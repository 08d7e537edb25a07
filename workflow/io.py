"""Atomic file output: nothing half-written survives a crash."""

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
