"""The comparison methods' authors' code, imported for the fidelity tests only (never by the product).

``AUTHORS_CODE`` (default: ``authors/`` next to this repository) holds one checkout per repository
under the names of ``REPOSITORIES``; a test whose checkout or third-party package is missing skips
and says how to get it. The repositories share top-level names (``models``, ``utils``), so each
import runs with only its own checkout on the path and its modules are dropped from
``sys.modules`` afterwards; the returned module keeps working.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

AUTHORS_CODE = Path(os.environ.get("AUTHORS_CODE", ROOT.parent / "authors"))
# name under AUTHORS_CODE -> the repository and commit the fidelity numbers were measured on
REPOSITORIES = {
    "MCAT": "mahmoodlab/MCAT@b9cca63",
    "MOTCat": "Innse/MOTCat@fe70abc",
    "CMTA": "FT-ZHOU-ZZZ/CMTA@31340f6",
    "MoME": "BearCleverProud/MoME@6c13b31",
    "CCL": "moothes/CCL-survival@3dca64d",
    "CLAM": "mahmoodlab/CLAM@53e2409",
    "PIBD": "zylbuaa/PIBD@bd5bd94",
    "CFDL": "IsDling/CFDL@9c09544",
}


def renamed(key: str, renames: Sequence[tuple[str, str]]) -> str:
    """One of the authors' state_dict keys under our module names: each (regex, replacement) in order."""
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def _legacy_torch_names() -> None:
    """Names the 2021-2023 code imports that torch 2 renamed (MCAT's ``_LinearWithBias``)."""
    import torch.nn.modules.linear as linear

    if not hasattr(linear, "_LinearWithBias"):
        linear._LinearWithBias = linear.NonDynamicallyQuantizableLinear


def authors_module(repository: str, module: str, packages: Sequence[str] = ()) -> ModuleType:
    """``module`` (dotted, e.g. ``models.model_coattn``) from the checkout of ``repository``.

    Skips when the checkout or one of ``packages`` (third-party imports of the authors' code,
    e.g. ``ot``, ``einops``) is missing.
    """
    root = AUTHORS_CODE / repository
    if not (root / module.replace(".", "/")).with_suffix(".py").is_file():
        pytest.skip(
            f"{repository}'s code is not at {root}: check out {REPOSITORIES[repository]} there or set AUTHORS_CODE"
        )
    for package in packages:
        pytest.importorskip(package, reason=f"{repository}'s code imports {package}: pip install it to compare")
    _legacy_torch_names()
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))
        # their top-level names (``models``, ``utils``: packages, namespace packages or modules)
        own = {entry.stem for entry in root.iterdir()}
        for name in set(sys.modules) - before:
            if name.split(".")[0] in own:
                del sys.modules[name]
