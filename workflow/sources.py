"""The library code a script runs, found from the source: Snakemake watches a script, not its imports.

A rule whose results depend on library code passes ``code_hash(import_closure(script, root))`` as
a param, so that editing any module the script imports, directly or through other modules,
reruns it (Snakemake's params trigger).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

PACKAGES = ("model", "workflow")


def _module_file(root: Path, name: str) -> Path | None:
    """The file of a module (or package) under ``root``, if it is one."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path, name: str) -> set[str]:
    """Names of every module a file may import, anywhere in it (inside functions too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, *(node.module or "").split(".")]).strip(".")
            # ``from a import b``: b may be a module of a, or a name defined in a
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def import_closure(script: str | Path, root: str | Path, packages: Sequence[str] = PACKAGES) -> list[Path]:
    """Files of ``packages`` (under ``root``) that ``script`` imports, directly or not, with their packages' __init__.py."""
    root = Path(root)
    found: dict[Path, str] = {}
    pending = [(Path(script), "__main__")]
    while pending:
        path, name = pending.pop()
        for module in sorted(_imported(path, name)):
            parts = module.split(".")
            if parts[0] not in packages:
                continue
            for depth in range(1, len(parts) + 1):  # a module's parent packages run first
                prefix = ".".join(parts[:depth])
                file = _module_file(root, prefix)
                if file is not None and file not in found:
                    found[file] = prefix
                    pending.append((file, prefix))
    return sorted(found)


def code_hash(paths: Iterable[str | Path]) -> str:
    """A short digest of the files' contents, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]
