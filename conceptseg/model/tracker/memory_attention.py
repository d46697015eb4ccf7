"""Memory attention: condition the current frame's g x g features on memories of earlier frames.

Pre-norm layers of RoPE self-attention over the current frame, RoPE cross-attention to the memory tokens
(spatial memories of several frames followed by object-pointer tokens) and a ReLU FFN, then a final LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn

from conceptseg.model.common import PreNormLayer
from conceptseg.model.rope import apply_rope, axial_rope_angles
from conceptseg.model.tracker.transformer import Attention

INPUT_POS_SCALE = 0.1  # the current frame's sine positions are added once, scaled, at the input


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


class MemoryAttentionLayer(PreNormLayer):
    """RoPE self-attention -> RoPE cross-attention to memory (keys + memory pos) -> ReLU FFN, pre-norm."""

    def __init__(self, dim: int, memory_dim: int, mlp_dim: int, num_heads: int, dropout: float) -> None:
        self_attn = RoPEAttention(dim, num_heads, dropout=dropout)
        cross_attn = RoPEAttention(dim, num_heads, kv_dim=memory_dim, dropout=dropout)
        # SAM 2's memory-attention LayerNorms use PyTorch's default eps
        super().__init__(self_attn, cross_attn, dim, mlp_dim, eps=1e-5, dropout=dropout)

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
        return self.feed_forward(x)


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
        angles = axial_rope_angles(height, width, self.head_dim, device=features.device)
        rope = angles.cos(), angles.sin()
        for layer in self.layers:
            x = layer(x, memory, memory_pos, rope, num_obj_ptr_tokens)
        return self.norm(x).transpose(1, 2).reshape(features.shape)
