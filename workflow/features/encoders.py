"""Frozen patch encoders through timm, and where their weights come from.

The default ``resnet50_trunc`` is CLAM's: timm ``resnet50.tv_in1k`` (torchvision's original
ImageNet weights) cut after layer3 and average-pooled, 1024-d. Any other timm architecture works
by name with its own input size and normalisation, and the registry holds pathology foundation
models (UNI-style ViT-L/16) that only load from a local checkpoint.

Weights: ``hub`` (timm's pretrained weights, from the Hugging Face cache; offline clusters need the
cache copied over), a local ``.safetensors`` / ``.pth`` / ``.bin`` file (loaded with
``weights_only=True`` or safetensors, never unpickled), or an explicit ``random`` (seeded), which
is recorded in every output so nobody mistakes such features for real ones.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import load_state_dict
from torch import nn

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """Weights that cannot be found or do not fit, with the way to provide them."""


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one encoder: timm architecture, preprocessing, and what comes out."""

    name: str
    timm_name: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    truncate_after: str | None = None  # ResNet stage whose pooled output is the feature
    hub: bool = True  # timm's pretrained weights are the intended ones
    create_kwargs: dict[str, Any] = field(default_factory=dict)


REGISTRY = {
    "resnet50_trunc": EncoderSpec("resnet50_trunc", "resnet50.tv_in1k", truncate_after="layer3"),
    # UNI (MahmoodLab/UNI, gated): ViT-L/16 with layer scale; pytorch_model.bin loads as is.
    "uni_v1": EncoderSpec(
        "uni_v1",
        "vit_large_patch16_224",
        hub=False,
        create_kwargs={"init_values": 1e-5, "dynamic_img_size": True, "num_classes": 0},
    ),
}


def encoder_spec(name: str, input_size: int | None = None) -> EncoderSpec:
    """A registry entry, or any timm model by name (its own input size and normalisation)."""
    if name in REGISTRY:
        spec = REGISTRY[name]
    else:
        if not timm.is_model(name):
            raise WeightsError(
                f"encoder {name!r} is neither in the registry ({sorted(REGISTRY)}) nor a timm model name"
            )
        cfg = timm.get_pretrained_cfg(name)
        size = cfg.input_size[-1] if cfg is not None else 224
        mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
        std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
        spec = EncoderSpec(name, name, size, mean, std, create_kwargs={"num_classes": 0})
    if input_size is not None:
        spec = EncoderSpec(**{**spec.__dict__, "input_size": input_size})
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


@dataclass(frozen=True)
class LoadedEncoder:
    """An eval-mode encoder and the provenance that goes into every output."""

    model: nn.Module
    spec: EncoderSpec
    weights_source: str
    weights_sha256: str
    dim: int


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


def load_encoder(spec: EncoderSpec, weights: str) -> LoadedEncoder:
    """Build the encoder in eval mode with ``weights`` = 'hub', 'random' or a local file path."""
    kwargs = dict(spec.create_kwargs)
    if weights == "random":
        torch.manual_seed(0)
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        source = "random (seed 0): NOT pretrained, for pipeline tests only"
    elif weights == "hub":
        if not spec.hub:
            raise WeightsError(
                f"encoder {spec.name!r} has no public hub weights; set features: weights: to its local checkpoint file"
            )
        try:
            model = timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        except Exception as exc:  # timm and huggingface_hub raise many types when offline
            raise WeightsError(_offline_help(spec, exc)) from exc
        source = f"hub:{spec.timm_name}"
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {path} for encoder {spec.name!r} not found")
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        state = load_state_dict(str(path), weights_only=True)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"weights file {path} does not fit timm '{spec.timm_name}': {str(exc)[:500]}") from exc
        source = f"file:{path.resolve()}"
    if spec.truncate_after:
        model = TruncatedResNet(model, spec.truncate_after)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        dim = model(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape[1]
    checksum = state_dict_sha256(model)
    log.info("encoder %s: %s, %d-d, weights %s (sha256 %s)", spec.name, spec.timm_name, dim, source, checksum[:12])
    return LoadedEncoder(model, spec, source, checksum, dim)
