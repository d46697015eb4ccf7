"""SimpleFPN neck: one ViT map -> feature pyramid at strides 4x, 2x, 1x (and an unused 0.5x level).

SAM 3 has two identical necks with separate weights: one feeds the detector, the other the tracker.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALES = (4.0, 2.0, 1.0, 0.5)


class FPNLevel(nn.Module):
    """Resample the ViT map by `scale`, then project to `out_channels` with a 1x1 and a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        if scale == 4.0:
            self.dconv_2x2_0 = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
            self.dconv_2x2_1 = nn.ConvTranspose2d(in_channels // 2, in_channels // 4, 2, stride=2)
            resampled = in_channels // 4
        elif scale == 2.0:
            self.dconv_2x2 = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
            resampled = in_channels // 2
        else:
            resampled = in_channels
        self.conv_1x1 = nn.Conv2d(resampled, out_channels, 1)
        self.conv_3x3 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 4.0:
            x = self.dconv_2x2_1(F.gelu(self.dconv_2x2_0(x)))
        elif self.scale == 2.0:
            x = self.dconv_2x2(x)
        elif self.scale == 0.5:
            x = F.max_pool2d(x, 2, 2)
        return self.conv_3x3(self.conv_1x1(x))


class Neck(nn.Module):
    """[B, C_vit, G, G] -> [[B, d, 4G, 4G], [B, d, 2G, 2G], [B, d, G, G]] (finest first)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(FPNLevel(in_channels, out_channels, scale) for scale in SCALES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The 0.5x level exists only so that checkpoints load: SAM 3 computes and then drops it.
        return [level(x) for level in self.levels[:-1]]
