"""Fusion encoder: image tokens self-attend (with position) and cross-attend to the prompt tokens."""

from __future__ import annotations

import torch
from torch import nn

from conceptseg.model.common import PreNormAttentionLayer
from conceptseg.model.configs import SAM3Config


class FusionEncoder(nn.Module):
    """Pre-norm layers over the stride-14 level only; no final LayerNorm (as released)."""

    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            PreNormAttentionLayer(config.d_model, config.num_heads, config.ffn_dim, config.layer_norm_eps)
            for _ in range(config.fusion_layers)
        )

    def forward(
        self, image: torch.Tensor, image_pos: torch.Tensor, prompt: torch.Tensor, prompt_padding: torch.Tensor
    ) -> torch.Tensor:
        """image, image_pos: [B, HW, C]; prompt: [B, T, C]; prompt_padding: [B, T] (True = pad) -> [B, HW, C]."""
        x = image
        for layer in self.layers:
            x = layer(x, prompt, x_pos=image_pos, memory_padding=prompt_padding)
        return x
