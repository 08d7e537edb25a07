"""Random feature reorganisation: index pattern, inverse and the reference examples."""

from __future__ import annotations

import pytest
import torch

from model.reorganise import reorganise, restore, segment_counts


@pytest.mark.parametrize("segments", [2, 4, 8, 16, 32, 64])
def test_reorganisation_index_pattern_and_inverse(segments):
    channels, n = 128, 4
    features = torch.arange(n * channels).reshape(n, channels)
    flat = reorganise(features, segments)
    length = channels // segments
    expected = [f * channels + s * length + i for s in range(segments) for f in range(n) for i in range(length)]
    assert flat.tolist() == expected
    assert torch.equal(restore(flat, n, segments), features)
    assert sorted(flat.tolist()) == list(range(n * channels))  # a permutation


def test_reorganisation_examples_from_the_reference():
    features = torch.arange(4 * 128).reshape(4, 128)
    assert reorganise(features, 64)[:6].tolist() == [0, 1, 128, 129, 256, 257]
    assert reorganise(features, 2)[:128].tolist() == list(range(64)) + list(range(128, 192))
    batched = torch.stack([features, features + 1000])
    assert torch.equal(reorganise(batched, 8)[1], reorganise(features + 1000, 8))


def test_segment_presets():
    assert segment_counts(128, "paper") == (64, 16, 8, 4, 2)
    assert segment_counts(128, "reference") == (2, 4, 8, 16, 32, 64)
