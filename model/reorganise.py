"""Random feature reorganisation (RFR): cut each feature into L segments and interleave them.

Features (F, C) become one vector of F*C: [seg(f0, 0), seg(f1, 0), ..., seg(f0, 1), seg(f1, 1), ...],
each segment C/L long. DeReF's paper draws the segment *length* s from {2, 8, 16, 32, 64}
(L = C/s); the authors' code draws the *number* of segments L from {2, 4, 8, 16, 32, 64}.
"""

from __future__ import annotations

import torch

PAPER_SEGMENT_LENGTHS = (2, 8, 16, 32, 64)
REFERENCE_SEGMENT_COUNTS = (2, 4, 8, 16, 32, 64)


def reorganise(features: torch.Tensor, segments: int) -> torch.Tensor:
    """(..., F, C) -> (..., F*C) with each feature cut into ``segments`` pieces, interleaved."""
    *lead, n_features, channels = features.shape
    if channels % segments:
        raise ValueError(f"{channels} channels cannot be cut into {segments} equal segments")
    pieces = features.reshape(*lead, n_features, segments, channels // segments)
    return pieces.transpose(-3, -2).reshape(*lead, n_features * channels)


def restore(flat: torch.Tensor, n_features: int, segments: int) -> torch.Tensor:
    """Inverse of ``reorganise``: (..., F*C) -> (..., F, C)."""
    *lead, total = flat.shape
    channels = total // n_features
    pieces = flat.reshape(*lead, segments, n_features, channels // segments)
    return pieces.transpose(-3, -2).reshape(*lead, n_features, channels)


def segment_counts(channels: int, preset: str = "paper") -> tuple[int, ...]:
    """The choices of L: from the paper's segment lengths, or the reference code's counts."""
    if preset == "paper":
        return tuple(channels // s for s in PAPER_SEGMENT_LENGTHS if channels % s == 0)
    if preset == "reference":
        return REFERENCE_SEGMENT_COUNTS
    raise ValueError(f"unknown RFR preset {preset!r}")
