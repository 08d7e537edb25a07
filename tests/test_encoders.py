"""TransMIL encoder: attention maps from the class token row."""

from __future__ import annotations

import pytest
import torch

from model.encoders import TransMIL


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
