"""Prompt-conditioned scorer: query logit = <proj(query), proj(mean of prompt tokens)> / sqrt(C)."""

from __future__ import annotations

import math

import torch
from torch import nn

from conceptseg.model.common import MLP
from conceptseg.model.configs import SAM3Config


class PromptMLP(MLP):
    """Residual two-layer ReLU MLP followed by a LayerNorm: out_norm(x + MLP(x))."""

    def __init__(self, d_model: int, hidden: int, eps: float) -> None:
        super().__init__(d_model, hidden, d_model, num_layers=2)
        self.out_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_norm(x + super().forward(x))


class DotProductScorer(nn.Module):
    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        d = config.d_model
        self.prompt_mlp = PromptMLP(d, config.ffn_dim, config.layer_norm_eps)
        self.prompt_proj = nn.Linear(d, d)
        self.hs_proj = nn.Linear(d, d)
        self.clamp = config.scorer_clamp

    def forward(self, queries: torch.Tensor, prompt: torch.Tensor, prompt_padding: torch.Tensor) -> torch.Tensor:
        """queries: [..., B, Q, C]; prompt: [B, T, C]; prompt_padding: [B, T] (True = pad) -> logits [..., B, Q]."""
        valid = (~prompt_padding).to(prompt.dtype)[..., None]
        pooled = (self.prompt_mlp(prompt) * valid).sum(1) / valid.sum(1).clamp(min=1)
        logits = (self.hs_proj(queries) * self.prompt_proj(pooled)[:, None, :]).sum(-1)
        return (logits / math.sqrt(queries.shape[-1])).clamp(-self.clamp, self.clamp)
