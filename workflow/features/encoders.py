"""Frozen patch encoders through timm, built from the weights manifest, and where their weights come from.

Named encoders live in ``config/encoders.yaml`` (one source of truth; see its header): the default
``resnet50_trunc`` is CLAM's, timm ``resnet50.tv_in1k`` (torchvision's original ImageNet weights)
cut after layer3 and average-pooled, 1024-d; the pathology foundation models (UNI, UNI2-h,
Virchow2, H-optimus-0/1, Prov-GigaPath, Phikon-v2, CONCH v1.5) load only from a local file. Any
other timm architecture works by name with its own input size and normalisation.

Weights: ``hub`` (timm's pretrained weights, from the Hugging Face cache; offline clusters need the
cache copied over), a local ``.safetensors`` / ``.pth`` / ``.bin`` file or a folder holding it
(see :mod:`workflow.features.manifest`; loaded with ``weights_only=True`` or safetensors, never
unpickled, converted to timm's key layout where the manifest says so, and fitted strictly), or an
explicit ``random`` (seeded), which is recorded in every output so nobody mistakes such features
for real ones. The file's checksum against the manifest is the preflight's job
(:mod:`workflow.features.weights`, rule ``check_weights``); ``load_encoder`` checks it too when
given ``expected_sha256``.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import GluMlp, LayerNorm, Mlp, SwiGLU, SwiGLUPacked
from torch import nn

from workflow.features.checkpoints import convert, read_checkpoint
from workflow.features.manifest import (
    MANIFEST_PATH,
    WeightsError,
    WeightsSource,
    file_sha256,
    manifest,
    resolve_weights_file,
    weights_source,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EncoderSpec",
    "LoadedEncoder",
    "TruncatedResNet",
    "WeightsError",
    "build_model",
    "encoder_spec",
    "load_checkpoint_into",
    "load_encoder",
    "state_dict_sha256",
]

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The only classes a manifest may name (create_kwargs keys ending in "_layer"): YAML holds names.
LAYERS: dict[str, Any] = {
    "SwiGLUPacked": SwiGLUPacked,  # a functools.partial of GluMlp in timm; callable like a class
    "SwiGLU": SwiGLU,
    "GluMlp": GluMlp,
    "Mlp": Mlp,
    "SiLU": nn.SiLU,
    "GELU": nn.GELU,
    "LayerNorm": LayerNorm,
}


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one encoder: timm architecture, preprocessing, pooling, and where its weights come from."""

    name: str
    timm_name: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    truncate_after: str | None = None  # ResNet stage whose pooled output is the feature
    hub: bool = True  # timm's pretrained weights are the intended ones
    create_kwargs: dict[str, Any] = field(default_factory=dict)  # layer classes by name (LAYERS)
    dim: int | None = None  # the manifest's output dim; None: whatever the model gives
    pooling: str = "head"  # head, truncate, cls_mean_patch, attentional (see config/encoders.yaml)
    pooling_args: dict[str, Any] = field(default_factory=dict)
    source: WeightsSource | None = None  # the published file (manifest entries only)

    @property
    def architecture(self) -> str:
        """timm name plus what sits on top of it, for reports."""
        extra = {"truncate": f" cut after {self.truncate_after}, avg-pooled", "head": ""}
        return self.timm_name + extra.get(self.pooling, f" + {self.pooling}")

    def where_from(self) -> str:
        """Where this encoder's weights file must come from (for error messages)."""
        if self.source is not None:
            return self.source.help()
        return (
            f"Give a state dict of timm '{self.timm_name}' (.safetensors or .pth) and pin its sha256 with "
            "features: sha256:, or use features: weights: hub."
        )


def _layer(name: str, key: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"encoder {name!r}: {key} must name a layer class, got {value!r}")
    if value not in LAYERS:
        raise ValueError(f"encoder {name!r}: {key}: {value!r} is not an allowed layer class ({sorted(LAYERS)})")
    return LAYERS[value]


def _create_kwargs(spec: EncoderSpec) -> dict[str, Any]:
    """The manifest's create_kwargs with layer names resolved through the allow-list."""
    return {k: _layer(spec.name, k, v) if k.endswith("_layer") else v for k, v in spec.create_kwargs.items()}


def spec_from_manifest(name: str, entry: dict[str, Any]) -> EncoderSpec:
    spec = EncoderSpec(
        name=name,
        timm_name=entry["architecture"],
        input_size=int(entry["input_size"]),
        mean=tuple(float(v) for v in entry["mean"]),
        std=tuple(float(v) for v in entry["std"]),
        truncate_after=entry.get("truncate_after"),
        hub=bool(entry["hub"]),
        create_kwargs=dict(entry.get("create_kwargs") or {}),
        dim=int(entry["dim"]),
        pooling=entry["pooling"],
        pooling_args=dict(entry.get("pooling_args") or {}),
        source=weights_source(entry),
    )
    _create_kwargs(spec)  # an unknown layer name fails here, not in a job
    return spec


def encoder_spec(name: str, input_size: int | None = None, manifest_path: str | Path = MANIFEST_PATH) -> EncoderSpec:
    """A manifest entry, or any timm model by name (its own input size and normalisation)."""
    entries = manifest(manifest_path)
    if name in entries:
        spec = spec_from_manifest(name, entries[name])
    else:
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, [*entries, *timm.list_models()], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise WeightsError(
                f"features: encoder: {name!r} is neither in the registry ({manifest_path}: {sorted(entries)}) "
                f"nor a timm model name{hint}"
            )
        cfg = timm.get_pretrained_cfg(name)
        size = cfg.input_size[-1] if cfg is not None else 224
        mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
        std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
        spec = EncoderSpec(name, name, size, mean, std, create_kwargs={"num_classes": 0})
    if input_size is not None:
        spec = replace(spec, input_size=input_size)
    return spec


class TruncatedResNet(nn.Module):
    """A timm ResNet up to ``stage``, globally average-pooled (CLAM's resnet50_trunc for layer3)."""

    def __init__(self, resnet: nn.Module, stage: str) -> None:
        super().__init__()
        names = ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        self.body = nn.Sequential(*(getattr(resnet, n) for n in names[: names.index(stage) + 1]))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)


class ClassTokenPatchMean(nn.Module):
    """Class token concatenated with the mean of the patch tokens, register tokens left out (Virchow2)."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit(x)  # (B, prefix + patches, D): global_pool "" keeps every token
        patches = tokens[:, self.vit.num_prefix_tokens :]
        return torch.cat([tokens[:, 0], patches.mean(1)], dim=-1)


class AttentionalPooler(nn.Module):
    """Learned queries attend over the trunk's tokens (CoCa's pooler, as in CONCH v1.5's vision tower)."""

    def __init__(self, dim: int, context_dim: int, heads: int, queries: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"pooler dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(queries, dim))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = self.ln_k(x)
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)  # (B, Q, dim)
        k, v = self.to_kv(x).chunk(2, dim=-1)  # (B, N, dim) each

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # (B, H, T, dim/H)

        q, k, v = heads(q), heads(k), heads(v)
        sim = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, self.heads * v.shape[-1])
        return self.to_out(out)  # (B, Q, dim)


class AttentionalPoolEncoder(nn.Module):
    """A ViT trunk's tokens, attention-pooled by the first query and layer-normed (CONCH v1.5's tower)."""

    def __init__(self, trunk: nn.Module, dim: int, heads: int, queries: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.attn_pool_contrast = AttentionalPooler(dim, trunk.embed_dim, heads, queries)
        self.ln_contrast = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk.forward_features(x))[:, 0])


def build_model(spec: EncoderSpec, pretrained: bool = False, meta: bool = False) -> tuple[nn.Module, nn.Module]:
    """(the encoder, the module its checkpoint's keys belong to): they differ when pooling adds parameters.

    ``meta``: parameters without storage or initialisation (a ViT-g builds in a second instead of
    half a minute), for a checkpoint to be assigned into.
    """
    with torch.device("meta") if meta else contextlib.nullcontext():
        backbone = timm.create_model(spec.timm_name, pretrained=pretrained, **_create_kwargs(spec))
    if spec.pooling == "truncate":
        return TruncatedResNet(backbone, spec.truncate_after), backbone
    if spec.pooling == "cls_mean_patch":
        return ClassTokenPatchMean(backbone), backbone
    if spec.pooling == "attentional":
        args = spec.pooling_args
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = AttentionalPoolEncoder(backbone, int(args["dim"]), int(args["heads"]), int(args["queries"]))
        return model, model
    return backbone, backbone


@dataclass(frozen=True)
class LoadedEncoder:
    """An eval-mode encoder and the provenance that goes into every output."""

    model: nn.Module
    spec: EncoderSpec
    weights_source: str
    weights_sha256: str
    dim: int
    weights_file: str | None = None  # the resolved local file, when weights came from one


def _offline_help(spec: EncoderSpec, cause: Exception) -> str:
    return (
        f"no weights for encoder {spec.name!r} (timm {spec.timm_name}) could be loaded ({type(cause).__name__}: {cause}). "
        "Provide them in one of these ways: (1) features: weights: /path/to/weights.safetensors (or .pth), a state dict "
        f"of timm '{spec.timm_name}'; (2) on a machine with internet run "
        f"`python -c \"import timm; timm.create_model('{spec.timm_name}', pretrained=True)\"`, copy "
        "~/.cache/huggingface/hub to the same place here (or point HF_HOME at the copy) and keep HF_HUB_OFFLINE=1; "
        "(3) only for testing the pipeline: features: weights: random (features are then meaningless)."
    )


def state_dict_sha256(model: nn.Module) -> str:
    """Checksum of the weights actually used, whatever file or cache they came from."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint_into(spec: EncoderSpec, path: Path, target: nn.Module) -> None:
    """The checkpoint at ``path`` into ``target``, converted where the manifest says, strictly.

    ``target`` may live on the meta device: its tensors are then replaced by the checkpoint's
    (cast to the model's dtypes, so a half-precision file still gives an fp32 model).
    """
    try:
        state = read_checkpoint(path)
    except WeightsError as exc:
        raise WeightsError(f"encoder {spec.name!r}: {exc}") from None
    conversion = spec.source.key_conversion if spec.source is not None else None
    try:
        state = convert(state, conversion, target)
    except WeightsError as exc:
        raise WeightsError(f"encoder {spec.name!r}: weights file {path}: {exc}. {spec.where_from()}") from exc
    own = target.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
    try:
        target.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"encoder {spec.name!r}: weights file {path} does not fit timm '{spec.timm_name}'"
            + (f" (after the {conversion} key conversion)" if conversion else "")
            + f": {str(exc)[:500]}. Is it the file for another encoder? {spec.where_from()}"
        ) from exc


def load_encoder(spec: EncoderSpec, weights: str, expected_sha256: str | None = None) -> LoadedEncoder:
    """Build the encoder in eval mode with ``weights`` = 'hub', 'random', a local file or a folder holding it.

    ``expected_sha256``, when given, must equal the file's sha256 (the preflight's check, repeated).
    """
    weights_file = None
    if weights == "random":
        torch.manual_seed(0)
        model, _ = build_model(spec)
        source = "random (seed 0): NOT pretrained, for pipeline tests only"
    elif weights == "hub":
        if not spec.hub:
            raise WeightsError(
                f"encoder {spec.name!r} has no public hub weights; set features: weights: to its local checkpoint "
                f"file (or a folder holding it). {spec.where_from()}"
            )
        try:
            model, _ = build_model(spec, pretrained=True)
        except Exception as exc:  # timm and huggingface_hub raise many types when offline
            raise WeightsError(_offline_help(spec, exc)) from exc
        source = f"hub:{spec.timm_name}"
    else:
        expected_file = spec.source.file if spec.source is not None else None
        path = resolve_weights_file(spec.name, weights, expected_file, spec.where_from())
        if expected_sha256 is not None and (actual := file_sha256(path)) != expected_sha256:
            raise WeightsError(
                f"encoder {spec.name!r}: weights file {path} has sha256 {actual}, expected {expected_sha256}. "
                f"{spec.where_from()}"
            )
        model, target = build_model(spec, meta=True)
        load_checkpoint_into(spec, path, target)
        empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if empty:
            raise WeightsError(f"encoder {spec.name!r}: weights file {path} left {empty[:5]} unset")
        source = f"file:{path.resolve()}"
        weights_file = str(path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        dim = model(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape[1]
    if spec.dim is not None and dim != spec.dim:
        raise WeightsError(
            f"encoder {spec.name!r}: timm '{spec.timm_name}' with these weights gives {dim}-d features, the manifest "
            f"says {spec.dim}-d ({MANIFEST_PATH})"
        )
    checksum = state_dict_sha256(model)
    log.info("encoder %s: %s, %d-d, weights %s (sha256 %s)", spec.name, spec.architecture, dim, source, checksum[:12])
    return LoadedEncoder(model, spec, source, checksum, dim, weights_file)
