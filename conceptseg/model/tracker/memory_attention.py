"""Memory attention: condition the current frame's g x g features on memories of earlier frames.

Pre-norm layers of RoPE self-attention over the current frame, RoPE cross-attention to the memory tokens
(spatial memories of several frames followed by object-pointer tokens) and a ReLU FFN, then a final LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import Attention

ROPE_THETA = 10000.0
INPUT_POS_SCALE = 0.1  # the current frame's sine positions are added once, scaled, at the input


def axial_rope(
    head_dim: int, height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the 2-D axial rotary angles of an H x W grid (tokens row-major), each [HW, head_dim/2].

    Channel pair j < head_dim / 4 rotates with the column index, the rest with the row index, both with
    frequencies theta ** (-4 j / head_dim).
    """
    freqs = ROPE_THETA ** -(torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim)
    index = torch.arange(height * width, device=device)
    cols, rows = (index % width).float(), torch.div(index, width, rounding_mode="floor").float()
    angles = torch.cat((torch.outer(cols, freqs), torch.outer(rows, freqs)), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2j, 2j+1) of x [B, heads, N, D] by the grid angles (tiled when N is a multiple
    of the grid size, i.e. for the memories of several frames). Computed in float32."""
    repeats, remainder = divmod(x.shape[-2], cos.shape[0])
    if remainder:
        raise ValueError(f"{x.shape[-2]} rotary tokens are not a whole number of {cos.shape[0]}-token frames")
    cos, sin = cos.repeat(repeats, 1), sin.repeat(repeats, 1)
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class RoPEAttention(Attention):
    """Attention with axial rotary encoding of the queries and of all keys but the last `num_k_exclude`."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None, dropout: float = 0.1) -> None:
        super().__init__(dim, num_heads, kv_dim=kv_dim)
        self.dropout = dropout

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        num_k_exclude: int = 0,
    ) -> torch.Tensor:
        q, k, v = self.project(q, k, v)
        q = apply_rope(q, *rope)
        num_rotated = k.shape[-2] - num_k_exclude
        k = torch.cat((apply_rope(k[..., :num_rotated, :], *rope), k[..., num_rotated:, :]), dim=-2)
        return self.attend(q, k, v, self.dropout)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: RoPE self-attention -> RoPE cross-attention to memory (keys + memory pos) -> ReLU FFN."""

    def __init__(self, dim: int, memory_dim: int, mlp_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim, num_heads, dropout=dropout)
        self.cross_attn_image = RoPEAttention(dim, num_heads, kv_dim=memory_dim, dropout=dropout)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        num_obj_ptr_tokens: int,
    ) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, rope))
        h = self.norm2(x)
        x = x + self.dropout(self.cross_attn_image(h, memory + memory_pos, memory, rope, num_obj_ptr_tokens))
        h = self.linear2(self.dropout(F.relu(self.linear1(self.norm3(x)))))
        return x + self.dropout(h)


class MemoryAttention(nn.Module):
    """`num_layers` memory-attention layers and a final LayerNorm (official `transformer.encoder`)."""

    def __init__(
        self,
        dim: int,
        memory_dim: int,
        num_layers: int,
        mlp_dim: int,
        num_heads: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(dim, memory_dim, mlp_dim, num_heads, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        features: torch.Tensor,
        pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        """Condition the current frame on its memories.

        features, pos: [B, C, H, W] current-frame features and their sine encoding; memory, memory_pos:
        [B, M, memory_dim], M = frames x H x W spatial tokens (row-major per frame) followed by
        `num_obj_ptr_tokens` object-pointer tokens (which get no rotary encoding). Returns [B, C, H, W].
        """
        height, width = features.shape[-2:]
        x = (features + INPUT_POS_SCALE * pos).flatten(2).transpose(1, 2)
        rope = axial_rope(self.head_dim, height, width, features.device)
        for layer in self.layers:
            x = layer(x, memory, memory_pos, rope, num_obj_ptr_tokens)
        return self.norm(x).transpose(1, 2).reshape(features.shape)
