"""Memory encoder: fuse a frame's g x g features with its predicted mask into a 64-channel memory map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.common import LayerNorm2d
from conceptseg.model.position_encoding import sine_position_encoding

NUM_DOWNSAMPLES = 4  # stride-2 convolutions, so the mask enters at 16x the feature grid (1152 px for 72 x 72)
MASK_STRIDE = 2**NUM_DOWNSAMPLES


class MaskDownSampler(nn.Module):
    """4 x [Conv k3 s2, LayerNorm2d, GELU] (channels 1 -> 4 -> 16 -> 64 -> 256), then a 1x1 conv to `dim`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_chans = 1
        for _ in range(NUM_DOWNSAMPLES):
            out_chans = 4 * in_chans  # each halving of the resolution quadruples the channels
            conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=2, padding=1)
            layers += [conv, LayerNorm2d(out_chans), nn.GELU()]
            in_chans = out_chans
        layers.append(nn.Conv2d(in_chans, dim, kernel_size=1))
        # Sequential indices (0, 1, 3, 4, ..., 12) are the checkpoint key names.
        self.encoder = nn.Sequential(*layers)

    def forward(self, masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """masks [B, 1, h, w] (any size; resized to 16x `grid`) -> [B, dim, *grid]."""
        size = (MASK_STRIDE * grid[0], MASK_STRIDE * grid[1])
        if masks.shape[-2:] != size:
            resized = F.interpolate(
                masks.float(), size=size, mode="bilinear", align_corners=False, antialias=True
            )
            masks = resized.to(masks.dtype)
        return self.encoder(masks)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm2d, 4x pointwise MLP with GELU, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # channels last for the pointwise linears
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """(g x g features, mask) -> memory features [B, memory_dim, g, g] and their sine position encoding."""

    def __init__(self, dim: int, memory_dim: int) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(dim)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim)
        self.out_proj = nn.Conv2d(dim, memory_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pix_feat: [B, C, g, g] backbone features (not memory-conditioned); masks: [B, 1, h, w] already
        mapped to the encoder's input scale (see `Tracker.encode_memory`). Returns features and position
        encoding, both [B, memory_dim, g, g]."""
        grid = pix_feat.shape[-2:]
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks, grid)
        x = self.out_proj(self.fuser(x))
        pos = sine_position_encoding(*grid, x.shape[1], device=x.device, dtype=x.dtype)
        return x, pos.expand(x.shape[0], -1, -1, -1)
