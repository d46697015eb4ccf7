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

    def attend_image(self, image: torch.Tensor, image_pos: torch.Tensor) -> torch.Tensor:
        """The first layer's self-attention step, [B, HW, C]: the only part that reads the image alone, so it can
        be computed once per image and shared by every prompt on it (7% of a phrase's FLOPs at full size)."""
        return self.layers[0].attend_self(image, image_pos)

    def forward(
        self,
        image: torch.Tensor,
        image_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding: torch.Tensor,
        image_attended: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """image, image_pos: [B, HW, C]; prompt: [B, T, C]; prompt_padding: [B, T] (True = pad) -> [B, HW, C].

        image_attended: `attend_image(image, image_pos)` if already computed (batch B, or 1 for one image
        under B prompts).
        """
        x = self.attend_image(image, image_pos) if image_attended is None else image_attended
        x = self.layers[0].attend_memory(x.expand(prompt.shape[0], -1, -1), prompt, memory_padding=prompt_padding)
        for layer in self.layers[1:]:
            x = layer(x, prompt, x_pos=image_pos, memory_padding=prompt_padding)
        return x
