"""Text encoder: CLIP-style causal transformer over 32 BPE tokens, all token states resized to d_model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.common import MultiheadAttention
from conceptseg.model.configs import TextConfig


class ResidualAttentionBlock(nn.Module):
    """Pre-norm causal self-attention + GELU MLP (CLIP's block).

    The ViT block's maths without windows or RoPE, kept apart because the checkpoint names differ (`ln_1`,
    `attn.in_proj_weight`, `mlp.c_fc` here; `norm1`, `attn.qkv`, `mlp.fc1` there).
    """

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = MultiheadAttention(config.width, config.num_heads)
        self.ln_2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = nn.ModuleDict(
            {"c_fc": nn.Linear(config.width, config.mlp_dim), "c_proj": nn.Linear(config.mlp_dim, config.width)}
        )

    def forward(self, x: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, attn_mask=causal_mask)
        return x + self.mlp["c_proj"](F.gelu(self.mlp["c_fc"](self.ln_2(x))))


class Transformer(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(config) for _ in range(config.depth))


class CLIPTextTransformer(nn.Module):
    """token ids [B, L] -> token states [B, L, width]. Padding is harmless: attention is causal."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.zeros(config.context_length, config.width))
        self.transformer = Transformer(config)
        self.ln_final = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        # CLIP's pooled-output projection: kept so that checkpoints load, never used by SAM 3
        self.text_projection = nn.Parameter(torch.zeros(config.width, config.projection_dim))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        causal_mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        for block in self.transformer.resblocks:
            x = block(x, causal_mask)
        return self.ln_final(x)


class TextEncoder(nn.Module):
    """token ids [B, L] -> (prompt tokens [B, L, d_model], padding mask [B, L] with True = padding)."""

    def __init__(self, config: TextConfig, d_model: int) -> None:
        super().__init__()
        self.encoder = CLIPTextTransformer(config)
        self.resizer = nn.Linear(config.width, d_model)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Official quirk kept for parity: id 0 pads, so a literal "!" (also id 0) counts as padding too.
        return self.resizer(self.encoder(input_ids)), input_ids == 0
