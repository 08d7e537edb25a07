"""Reading published checkpoints safely and converting their keys to the models built here.

Files load with safetensors or ``torch.load(weights_only=True)`` (timm's ``load_state_dict``,
which also unwraps ``state_dict`` / ``model`` nesting and a ``module.`` prefix): nothing is ever
unpickled. A file that is no checkpoint is named for what it is (empty, a web page, a git-lfs
pointer, a truncated safetensors or zip file, a pickled object) with the way to a usable one;
torch's own advice to load with ``weights_only=False`` is never passed on. A conversion maps a published key layout onto the module the manifest builds; the
result must then fit that module strictly.

- ``dinov2_hf``: a Hugging Face transformers ``Dinov2Model`` (Phikon-v2) -> timm
  ``VisionTransformer``: query/key/value concatenated into ``qkv``, ``layer_scale*.lambda1`` ->
  ``ls*.gamma``, ``attention.output.dense`` -> ``attn.proj``, ``layernorm`` -> ``norm``; the mask
  token (pre-training only) is dropped and the position embedding is resampled to the model's
  grid as transformers' own ``interpolate_pos_encoding`` does.
- ``conch_v15``: CONCH v1.5's vision tower (``trunk.*``, ``attn_pool_contrast.*``,
  ``ln_contrast.*``, the names of :class:`~workflow.features.encoders.AttentionalPoolEncoder`):
  the trunk's 14 x 14 position grid is interpolated to the input grid once, as the authors' code
  (TRIDENT ``conchv1_5.py``, ``interpolate_pos_encoding``) does on every forward.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from timm.models import load_state_dict
from torch import nn
from torch.serialization import get_unsafe_globals_in_checkpoint

from workflow.features.manifest import WeightsError
from workflow.io import RECOPY, not_data

StateDict = dict[str, torch.Tensor]


def _pickled(path: Path, classes: list[str]) -> str:
    """A pickled object, and how to turn it into a state dict of tensors (a phrase after "is")."""
    needs = f" (it needs the classes {', '.join(classes[:4])})" if classes else ""
    out = path.with_suffix(".safetensors")
    return (
        f"a pickled Python object{needs}, not a state dict of tensors; weights are loaded only as tensors, never "
        "unpickled. If you trust the file (unpickling runs its code), save its state dict as safetensors and give "
        'that file as features: weights:, e.g. for a whole saved model: python -c "import torch, safetensors.torch '
        f"as st; m = torch.load('{path}', weights_only=False); st.save_file({{k: v.contiguous() for k, v in "
        f"m.state_dict().items()}}, '{out}')\""
    )


def weights_file_problem(path: str | Path) -> str | None:
    """What a weights file is when it cannot be a checkpoint, told without loading its tensors; else None.

    Empty files, web pages and git-lfs pointers are what failed downloads leave; a safetensors or
    zip (torch.save) file cut short fails in its header or central directory; a pickled model
    fails only when unpickled, so its pickle is scanned for classes first. The phrase follows "is".
    """
    path = Path(path)
    if problem := not_data(path, "weights file"):
        return problem
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip:
        return _zip_problem(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt"):
                return None
        except SafetensorError as exc:
            return f"a truncated or damaged safetensors file (safetensors: {exc}); {RECOPY}"
    return None


def _zip_problem(path: Path) -> str | None:
    """A torch.save (zip) file cut short, or one whose pickle holds classes, not only tensors."""
    if not zipfile.is_zipfile(path):
        return f"a truncated zip (torch.save) file: it ends before its central directory; {RECOPY}"
    classes = sorted(get_unsafe_globals_in_checkpoint(path))
    return _pickled(path, classes) if classes else None


def _refused_unpickling(exc: BaseException) -> bool:
    """Whether torch's weights-only unpickler refused the file (classes in it), in any cause of ``exc``."""
    while exc is not None:
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def read_checkpoint(path: str | Path) -> StateDict:
    """The state dict in a .safetensors / .pth / .bin file, without unpickling arbitrary objects."""
    path = Path(path)
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # safetensors, zipfile and the weights-only unpickler raise many types
        problem = weights_file_problem(path)
        if problem is None and _refused_unpickling(exc):
            problem = _pickled(path, [])
        elif problem is None and isinstance(exc, EOFError):
            problem = f"truncated: the file ends before its pickled data does; {RECOPY}"
        if problem is not None:
            raise WeightsError(f"weights file {path} is {problem}") from None  # torch's advice stays out
        raise WeightsError(
            f"{path} is not a readable state dict ({type(exc).__name__}: {str(exc)[:300]}); only safetensors "
            "files and plain tensor checkpoints (torch.load weights_only=True) are accepted"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return dict(state)


def resample_grid_dino(pos_embed: torch.Tensor, grid: tuple[int, int], prefix_tokens: int = 1) -> torch.Tensor:
    """A (1, prefix + n*n, D) position embedding interpolated to ``grid`` the DINO way.

    DINO, transformers' Dinov2 and CONCH v1.5's trunk all interpolate bicubically with the scale
    factor (new + 0.1) / n, which is not quite the same as asking for the output size; doing it
    once here gives the same numbers their forwards compute at that input size.
    """
    prefix, patch = pos_embed[:, :prefix_tokens], pos_embed[:, prefix_tokens:]
    n = math.isqrt(patch.shape[1])
    if n * n != patch.shape[1]:
        raise WeightsError(f"position embedding of {patch.shape[1]} patch positions is not a square grid")
    if (n, n) == tuple(grid):
        return pos_embed
    dim = patch.shape[-1]
    dtype = patch.dtype
    patch = patch.reshape(1, n, n, dim).permute(0, 3, 1, 2).float()
    patch = F.interpolate(
        patch, scale_factor=((grid[0] + 0.1) / n, (grid[1] + 0.1) / n), mode="bicubic", align_corners=False
    )
    if tuple(patch.shape[-2:]) != tuple(grid):
        raise WeightsError(f"interpolating the position grid {n}x{n} gave {tuple(patch.shape[-2:])}, not {grid}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(dtype)
    return torch.cat([prefix, patch], dim=1)


def _grid(vit: nn.Module) -> tuple[int, int]:
    return tuple(vit.patch_embed.grid_size)


DINOV2_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
DINOV2_LAYER_KEYS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}
DINOV2_TOP_KEYS = {
    "embeddings.cls_token": "cls_token",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
DINOV2_DROPPED = {"embeddings.mask_token"}  # masked-image pre-training only


def dinov2_hf_to_timm(state: StateDict, target: nn.Module) -> StateDict:
    """A transformers ``Dinov2Model`` state dict as timm ``VisionTransformer`` keys (see the module doc)."""
    if any(k.startswith("dinov2.") for k in state):  # saved from a Dinov2 task model
        state = {k.removeprefix("dinov2."): v for k, v in state.items() if k.startswith("dinov2.")}
    out: StateDict = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        if key in DINOV2_DROPPED:
            continue
        if key in DINOV2_TOP_KEYS:
            out[DINOV2_TOP_KEYS[key]] = value
        elif key == "embeddings.position_embeddings":
            out["pos_embed"] = resample_grid_dino(value, _grid(target))
        elif match := DINOV2_LAYER.match(key):
            layer, rest = int(match.group(1)), match.group(2)
            if rest in DINOV2_LAYER_KEYS:
                out[f"blocks.{layer}.{DINOV2_LAYER_KEYS[rest]}"] = value
            elif part := re.fullmatch(r"attention\.attention\.(query|key|value)\.(weight|bias)", rest):
                qkv.setdefault((layer, part.group(2)), {})[part.group(1)] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(
            f"not a transformers Dinov2 checkpoint of a plain ViT: unexpected keys {unknown[:8]}"
            + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        )
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise WeightsError(f"layer {layer}: attention {kind} has only {sorted(parts)} of query/key/value")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def conch_v15_to_timm(state: StateDict, target: nn.Module) -> StateDict:
    """CONCH v1.5's vision tower: its trunk position grid interpolated to the model's input grid."""
    out = dict(state)
    if "trunk.pos_embed" not in out:
        raise WeightsError("not a CONCH v1.5 vision checkpoint: no trunk.pos_embed")
    out["trunk.pos_embed"] = resample_grid_dino(out["trunk.pos_embed"], _grid(target.trunk))
    return out


CONVERSIONS: dict[str, Callable[[StateDict, nn.Module], StateDict]] = {
    "dinov2_hf": dinov2_hf_to_timm,
    "conch_v15": conch_v15_to_timm,
}


def convert(state: StateDict, conversion: str | None, target: nn.Module) -> StateDict:
    """``state`` in the key layout of ``target`` (unchanged without a conversion)."""
    return state if conversion is None else CONVERSIONS[conversion](state, target)
