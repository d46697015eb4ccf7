"""Sinusoidal position encodings shared by the neck, the prompt encoders and the decoder."""

from __future__ import annotations

import math

import torch


def sine_embed(coords: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """Interleaved sin/cos features of scalar coordinates.

    coords: [...] already scaled (e.g. by 2*pi); returns [..., num_feats] with channel 2i = sin, 2i+1 = cos
    of coords / temperature ** (2i / num_feats).
    """
    exponent = 2 * (torch.arange(num_feats, device=coords.device, dtype=torch.float32) // 2) / num_feats
    dim_t = temperature**exponent
    angles = coords.float()[..., None] / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_encoding(
    height: int, width: int, channels: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """DETR-style normalised 2-D sine encoding of a feature map grid -> [1, channels, height, width].

    Rows and columns are numbered 1..H and 1..W, divided by H and W (plus 1e-6) and scaled by 2*pi; the first
    half of the channels encodes y, the second half x.
    """
    half = channels // 2
    eps = 1e-6
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32) / (height + eps) * 2 * math.pi
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32) / (width + eps) * 2 * math.pi
    pos_y = sine_embed(y, half)[:, None, :].expand(height, width, half)
    pos_x = sine_embed(x, half)[None, :, :].expand(height, width, half)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)[None].to(dtype)  # HxWxC -> 1xCxHxW
