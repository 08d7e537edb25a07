"""Encoders: TransMIL's attention maps, and every patch encoder of the weights manifest built, saved and reloaded."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import replace

import pytest
import timm
import torch
from safetensors.torch import save_file

from model.encoders import TransMIL
from workflow.features.checkpoints import dinov2_hf_to_timm, resample_grid_dino
from workflow.features.encoders import LAYERS, build_model, encoder_spec
from workflow.features.manifest import WeightsError, manifest
from workflow.features.weights import check_weights


@pytest.mark.parametrize(
    ("ppeg", "pad_to_landmarks", "n"),
    [(True, True, 50), (True, True, 7), (False, False, 7), (False, True, 7)],
    ids=["wsi-50", "wsi-7", "exact-7", "padded-7"],
)
def test_transmil_attention_is_the_class_token_row_of_the_last_layer(ppeg, pad_to_landmarks, n):
    """The heatmap equals the explicit attention matrix's class row, head-averaged, cut to the real tokens."""
    torch.manual_seed(0)
    model = TransMIL(64, ppeg=ppeg, pad_to_landmarks=pad_to_landmarks).eval()
    tokens = torch.randn(2, n, 64)
    inputs = {}
    model.layer2.register_forward_pre_hook(lambda _, args: inputs.setdefault("x", args[0]))
    with torch.no_grad():
        cls, out_tokens, attention = model(tokens)
        layer = model.layer2.attention
        x = model.layer2.norm(inputs["x"])
        q, k, _ = (t.reshape(2, x.shape[1], 8, 8).transpose(1, 2) for t in layer.to_qkv(x).chunk(3, dim=-1))
        full = torch.softmax(q @ k.transpose(-1, -2) * layer.scale, dim=-1)  # (B, heads, L, L)
    expected = full[:, :, 0].mean(1)[:, 1 : n + 1]
    assert cls.shape == (2, 64) and out_tokens.shape == (2, n, 64) and attention.shape == (2, n)
    assert torch.allclose(attention, expected / expected.sum(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(attention.sum(-1), torch.ones(2))


# --- Patch encoders of the weights manifest (config/encoders.yaml) ----------------------------------

ISSUE_ENCODERS = {  # issue 15: the encoders users ask for most
    "uni_v1": "MahmoodLab/UNI",
    "uni2_h": "MahmoodLab/UNI2-h",
    "virchow2": "paige-ai/Virchow2",
    "hoptimus0": "bioptimus/H-optimus-0",
    "hoptimus1": "bioptimus/H-optimus-1",
    "gigapath": "prov-gigapath/prov-gigapath",
    "phikon_v2": "owkin/phikon-v2",
    "conch_v15": "MahmoodLab/conchv1_5",
    "resnet50_trunc": "timm/resnet50.tv_in1k",
}


def test_manifest_covers_the_nine_encoders_the_issue_names():
    entries = manifest()
    assert {name: e["source"]["repo"] for name, e in entries.items()} == ISSUE_ENCODERS
    for name, entry in entries.items():
        spec = encoder_spec(name)
        assert spec.dim == entry["dim"] and spec.source.file and spec.source.licence, name
        assert spec.hub == (name == "resnet50_trunc"), name
    assert encoder_spec("virchow2").dim == 2560 and encoder_spec("virchow2").pooling == "cls_mean_patch"
    assert encoder_spec("resnet50_trunc").truncate_after == "layer3"
    assert encoder_spec("phikon_v2").source.key_conversion == "dinov2_hf"


def test_layer_classes_come_only_from_the_allow_list():
    spec = encoder_spec("uni2_h")
    assert spec.create_kwargs["mlp_layer"] == "SwiGLUPacked" and spec.create_kwargs["act_layer"] == "SiLU"
    assert LAYERS["SwiGLUPacked"] is timm.layers.SwiGLUPacked and LAYERS["SiLU"] is torch.nn.SiLU
    bad = replace(spec, create_kwargs={**spec.create_kwargs, "act_layer": "os.system"})
    with pytest.raises(ValueError, match=r"'os\.system' is not an allowed layer class"):
        build_model(bad)


def tiny(spec, size):
    """A test-only variant: the manifest's architecture and widths, one block, a ``size`` px input.

    The real depths (24 to 40 blocks, up to 1.1B parameters, 4.5 GB in fp32) would take minutes
    and gigabytes per encoder on two CPU cores; the widths, heads, MLPs, register tokens and
    pooling, which decide the key layout and the output dim, are the manifest's own.
    """
    if spec.pooling == "truncate":  # ResNet50: the real network is small enough
        return replace(spec, input_size=size)
    return replace(spec, create_kwargs={**spec.create_kwargs, "depth": 1, "img_size": size}, input_size=size)


def timm_to_dinov2_hf(state):
    """timm ViT keys as a transformers Dinov2Model saves them (how Phikon-v2 is published)."""
    out = {"embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    top = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    block = {
        "norm1": "norm1",
        "attn.proj": "attention.output.dense",
        "ls1.gamma": "layer_scale1.lambda1",
        "norm2": "norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "ls2.gamma": "layer_scale2.lambda1",
    }
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        _, i, rest = key.split(".", 2)
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"encoder.layer.{i}.attention.attention.{name}.{kind}"] = part.clone()
            continue
        prefix = next(p for p in block if rest.startswith(p))
        out[f"encoder.layer.{i}.{block[prefix]}{rest[len(prefix) :]}"] = value
    return out


def publish(spec, state):
    """``state`` (a model's) in the layout its source publishes, as the file a user downloads."""
    conversion = spec.source.key_conversion
    if conversion == "dinov2_hf":
        return timm_to_dinov2_hf(state)
    if conversion == "conch_v15":  # the published trunk has a coarser position grid than the input's
        pos = state["trunk.pos_embed"]
        grid = math.isqrt(pos.shape[1] - 1) // 2
        return {**state, "trunk.pos_embed": torch.randn(1, 1 + grid * grid, pos.shape[-1])}
    return state


def save(state, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)


@pytest.mark.parametrize("name", sorted(ISSUE_ENCODERS))
def test_every_manifest_encoder_builds_saves_checksums_and_reloads(name, tmp_path):
    """Random weights in the published layout and file name, checked and reloaded by the real code path."""
    spec = encoder_spec(name)
    if spec.pooling in ("truncate", "attentional"):
        size = 64
    else:  # two patches a side
        size = 2 * (spec.create_kwargs.get("patch_size") or int(re.search(r"patch(\d+)", spec.timm_name).group(1)))
    small = tiny(spec, size)
    torch.manual_seed(1)
    model, target = build_model(small)
    state = {k: v.clone() for k, v in target.state_dict().items()}
    published = publish(small, state)
    if small.source.key_conversion == "conch_v15":  # what the model holds once the grid is interpolated
        target.trunk.pos_embed.data = resample_grid_dino(
            published["trunk.pos_embed"], target.trunk.patch_embed.grid_size
        )
        state = {k: v.clone() for k, v in target.state_dict().items()}
    folder = tmp_path / "weights" / name
    folder.mkdir(parents=True)
    save(published, folder / spec.source.file)
    digest = hashlib.sha256((folder / spec.source.file).read_bytes()).hexdigest()
    pinned = replace(small, source=replace(small.source, sha256=digest, sha256_from="this test"))

    report, loaded = check_weights(name, str(tmp_path / "weights"), spec=pinned)  # folder/<encoder>/<file>
    assert (report.encoder, report.file) == (name, str(folder / spec.source.file))
    assert (report.sha256, report.status, report.dim) == (digest, "verified", spec.dim)

    assert loaded.dim == spec.dim and loaded.weights_file == str(folder / spec.source.file)
    assert loaded.model.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        out, original = loaded.model(x), model.eval()(x)
    assert out.shape == (2, spec.dim) and torch.equal(out, original)


def hf_dinov2_state(hidden=64, layers=2, heads=4, patch=16, grid=4, mlp=4):
    """A transformers Dinov2Model state dict written out by hand (random tensors, its own key names)."""
    g = torch.Generator().manual_seed(3)

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    state = {
        "embeddings.cls_token": r(1, 1, hidden),
        "embeddings.mask_token": torch.zeros(1, hidden),
        "embeddings.position_embeddings": r(1, 1 + grid * grid, hidden),
        "embeddings.patch_embeddings.projection.weight": r(hidden, 3, patch, patch, scale=0.02),
        "embeddings.patch_embeddings.projection.bias": r(hidden),
        "layernorm.weight": 1 + r(hidden),
        "layernorm.bias": r(hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            state[p + f"attention.attention.{name}.weight"] = r(hidden, hidden)
            state[p + f"attention.attention.{name}.bias"] = r(hidden)
        state |= {
            p + "attention.output.dense.weight": r(hidden, hidden),
            p + "attention.output.dense.bias": r(hidden),
            p + "norm1.weight": 1 + r(hidden),
            p + "norm1.bias": r(hidden),
            p + "norm2.weight": 1 + r(hidden),
            p + "norm2.bias": r(hidden),
            p + "layer_scale1.lambda1": 1 + r(hidden),
            p + "layer_scale2.lambda1": 1 + r(hidden),
            p + "mlp.fc1.weight": r(mlp * hidden, hidden),
            p + "mlp.fc1.bias": r(mlp * hidden),
            p + "mlp.fc2.weight": r(hidden, mlp * hidden),
            p + "mlp.fc2.bias": r(hidden),
        }
    return state


def hf_dinov2_class_token(state, x, heads, patch, layers):
    """transformers' Dinov2Model forward, written from its definition: last_hidden_state[:, 0]."""
    F = torch.nn.functional
    hidden = state["embeddings.cls_token"].shape[-1]
    tokens = F.conv2d(
        x,
        state["embeddings.patch_embeddings.projection.weight"],
        state["embeddings.patch_embeddings.projection.bias"],
        stride=patch,
    )
    h, w = tokens.shape[-2:]
    tokens = torch.cat([state["embeddings.cls_token"].expand(len(x), -1, -1), tokens.flatten(2).transpose(1, 2)], 1)
    pos = state["embeddings.position_embeddings"]
    n = math.isqrt(pos.shape[1] - 1)
    if n * n != h * w:  # Dinov2Embeddings.interpolate_pos_encoding: bicubic, scale (new + 0.1) / n
        grid = pos[:, 1:].reshape(1, n, n, hidden).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / n, (w + 0.1) / n), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, hidden)], 1)
    x = tokens + pos
    d = hidden // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def lin(t, name, p=p):
            return F.linear(t, state[p + name + ".weight"], state[p + name + ".bias"])

        y = F.layer_norm(x, (hidden,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps=1e-6)
        q, k, v = (
            lin(y, f"attention.attention.{n}").reshape(len(x), -1, heads, d).transpose(1, 2)
            for n in ("query", "key", "value")
        )
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
        x = (
            x
            + lin(att.transpose(1, 2).reshape(len(x), -1, hidden), "attention.output.dense")
            * state[p + "layer_scale1.lambda1"]
        )
        y = F.layer_norm(x, (hidden,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps=1e-6)
        x = x + lin(F.gelu(lin(y, "mlp.fc1")), "mlp.fc2") * state[p + "layer_scale2.lambda1"]
    x = F.layer_norm(x, (hidden,), state["layernorm.weight"], state["layernorm.bias"], eps=1e-6)
    return x[:, 0]


@pytest.mark.parametrize("published_grid", [2, 4], ids=["same-grid", "interpolated-grid"])
def test_phikon_dinov2_key_conversion_gives_transformers_features(published_grid, tmp_path):
    """A hand-built transformers Dinov2 checkpoint, converted and loaded strictly, computes what transformers computes."""
    state = hf_dinov2_state(grid=published_grid)
    vit = timm.create_model(
        "vit_large_patch16_224", img_size=32, embed_dim=64, depth=2, num_heads=4, init_values=1.0, num_classes=0
    )
    converted = dinov2_hf_to_timm(state, vit)
    vit.load_state_dict(converted, strict=True)
    assert torch.equal(
        converted["blocks.1.attn.qkv.weight"][64:128], state["encoder.layer.1.attention.attention.key.weight"]
    )
    assert torch.equal(converted["blocks.0.ls2.gamma"], state["encoder.layer.0.layer_scale2.lambda1"])
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ours, theirs = vit.eval()(x), hf_dinov2_class_token(state, x, heads=4, patch=16, layers=2)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    back = timm_to_dinov2_hf(converted)  # and the layout round-trips (up to the resampled grid)
    assert set(back) == set(state)
    same = [k for k in state if k != "embeddings.position_embeddings"]
    assert all(torch.equal(back[k], state[k]) for k in same)
    with pytest.raises(WeightsError, match="unexpected keys"):
        dinov2_hf_to_timm({**state, "pooler.dense.weight": torch.zeros(1)}, vit)


def test_conch_attentional_pooler_matches_the_coca_recipe():
    """The pooled CONCH v1.5 feature, recomputed by hand from the authors' description (einsum form)."""
    spec = tiny(encoder_spec("conch_v15"), 32)
    torch.manual_seed(5)
    model, _ = build_model(spec)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    pool = model.attn_pool_contrast
    with torch.inference_mode():
        tokens = model.trunk.forward_features(x)  # (B, 1 + N, 1024)
        ctx = pool.ln_k(tokens)
        q = pool.to_q(pool.ln_q(pool.query))  # (1, 768)
        k, v = pool.to_kv(ctx).chunk(2, dim=-1)
        qh = q.reshape(1, 8, 96)
        kh, vh = k.reshape(2, -1, 8, 96), v.reshape(2, -1, 8, 96)
        sim = torch.einsum("qhd,bnhd->bhqn", qh * 96**-0.5, kh)
        attn = (sim - sim.amax(-1, keepdim=True)).softmax(-1)
        pooled = pool.to_out(torch.einsum("bhqn,bnhd->bqhd", attn, vh).reshape(2, 1, 768))[:, 0]
        expected = model.ln_contrast(pooled)
        got = model(x)
    assert got.shape == (2, 768) and torch.allclose(got, expected, atol=1e-5)
