"""3D ResNet for the MRI cohorts: the sequences of one tumour ROI (B, C, D, H, W) -> (B, out_dim).

The DeReF paper encodes MRI with a ResNet-50-3D; the authors' code has no MRI branch (docs/models.md
§1.9). The residual stages are torchvision's video ResNet (``VideoResNet`` with full 3x3x3
``Conv3DSimple`` convolutions, ``BasicBlock`` or ``Bottleneck``); only the stem is ours. It takes
the MRI sequences as channels and, unlike the video stem, downsamples all three axes (7x7x7
convolution with stride 2, then a 3x3x3 max pool with stride 2), as the 3D ResNets of Hara et al.
and MedicalNet do for volumes. Depth 50 is the paper's; 10, 18 and 34 are cheaper on CPU.

Importing this module imports torchvision (seconds), so the model modules import it lazily.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Bottleneck, Conv3DSimple, VideoResNet

DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    10: (BasicBlock, [1, 1, 1, 1]),
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
}


class VolumeStem(nn.Sequential):
    """Conv 7x7x7 stride 2 -> BatchNorm -> ReLU -> max pool 3x3x3 stride 2, from ``in_channels`` to 64."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
        )


class ResNet3D(VideoResNet):
    """3D ResNet-{10, 18, 34, 50}: stem, four residual stages, global average pool, Linear to ``out_dim``.

    The final Linear is torchvision's ``fc`` (in features 512 for BasicBlock depths, 2048 for 50).
    Batch normalisation in training mode needs more than one value per channel after the last
    stage: with batch size 1 that means volumes of at least 33 voxels along some axis.
    """

    def __init__(self, in_channels: int, depth: int = 50, out_dim: int = 256) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"ResNet3D depth {depth} is not available; choose one of {sorted(DEPTHS)}")
        block, layers = DEPTHS[depth]
        super().__init__(block, [Conv3DSimple] * 4, layers, partial(VolumeStem, in_channels), num_classes=out_dim)
        self.depth = depth


class ResNet3DTokens(ResNet3D):
    """The same 3D ResNet as a token sequence: every voxel of the last stage's grid is one token.

    For the co-attention methods (MCAT, MOTCat, CMTA, MoME, CCL), whose second modality is a set
    of tokens (the six gene families): an MRI ROI gives (B, d·h·w, out_dim), the last residual
    stage's grid in (D, H, W) raster order, each position projected by the same Linear ``fc`` that
    ``ResNet3D`` applies after pooling. A 16x48x48 ROI gives 1x2x2 = 4 tokens; 64x64x64 gives 8.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, d·h·w, out_dim)."""
        grid = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(grid.flatten(2).transpose(1, 2))
