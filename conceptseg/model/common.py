"""Small building blocks shared by the detector and the tracker."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a [B, C, H, W] map (each pixel normalised on its own)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU in between (not after the last); optional sigmoid on the output.

    Hidden layers all have width `hidden_dim`. Parameters are `layers.0 .. layers.{num_layers-1}`.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        in_dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        out_dims = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(in_dims, out_dims))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        x = self.layers[-1](x)
        return x.sigmoid() if self.sigmoid_output else x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """logit(x), with x clamped to [0, 1] and both x and 1 - x to at least `eps` (official eps 1e-3)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention with `nn.MultiheadAttention`'s parameters (`in_proj_weight` [3C, C] holding
    the q/k/v projections, `in_proj_bias`, `out_proj`), so checkpoints load unchanged.

    Ours rather than PyTorch's for three reasons: heads are split without folding them into the batch (the layout
    ONNX export can keep dynamic), masks reach scaled-dot-product attention directly, and it returns the output
    alone. Its parameters are created and initialised in PyTorch's order, so seeded training draws the same weights.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query [B, Nq, C], key/value [B, Nk, C] -> [B, Nq, C].

        key_padding_mask: [B, Nk], True at padded keys; attn_mask: an additive bias broadcastable to
        [B, heads, Nq, Nk].
        """
        weights, biases = self.in_proj_weight.chunk(3), self.in_proj_bias.chunk(3)
        if query is key:  # self-attention: q and k in one matmul
            q, k = F.linear(query, torch.cat(weights[:2]), torch.cat(biases[:2])).chunk(2, dim=-1)
        else:
            q, k = F.linear(query, weights[0], biases[0]), F.linear(key, weights[1], biases[1])
        v = F.linear(value, weights[2], biases[2])
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        mask = attn_mask
        if key_padding_mask is not None:
            padding = key_padding_mask[:, None, None, :]
            mask = ~padding if mask is None else mask.masked_fill(padding, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class PreNormLayer(nn.Module):
    """Pre-norm self-attention -> cross-attention -> ReLU FFN, each a residual update (batch-first tokens).

    Holds what the detector's encoders and the tracker's memory attention share, under the same checkpoint names:
    the attention modules `self_attn` and `cross_attn_image` (given by the subclass, which also says how they are
    called), `norm1..3` before the three steps, the FFN `linear1`/`linear2` and dropout on each update.
    """

    def __init__(
        self, self_attn: nn.Module, cross_attn: nn.Module, d_model: int, ffn_dim: int, eps: float, dropout: float
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn_image = cross_attn
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.norm3 = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last step: x + FFN(norm3(x))."""
        # ReLU in place: the hidden layer is the largest activation (5184 x 2048 in the fusion encoder at full
        # size), and a linear layer's backward does not need its output
        h = self.linear2(self.dropout(F.relu(self.linear1(self.norm3(x)), inplace=True)))
        return x + self.dropout(h)


class PreNormAttentionLayer(PreNormLayer):
    """The detector's encoder layer (fusion and geometry encoders), with `MultiheadAttention` and no dropout.

    Positions are added only where given: `x_pos` to the self-attention queries/keys, `memory_pos` to the
    cross-attention keys (the fusion encoder passes the former, the geometry encoder the latter).
    Padding masks are True at padded positions.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, eps: float = 1e-5) -> None:
        self_attn = MultiheadAttention(d_model, num_heads)
        cross_attn = MultiheadAttention(d_model, num_heads)
        super().__init__(self_attn, cross_attn, d_model, ffn_dim, eps, dropout=0.0)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        x_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        x_padding: torch.Tensor | None = None,
        memory_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, N, C], memory: [B, M, C] (positions of the same shapes) -> [B, N, C]."""
        x = self.attend_self(x, x_pos, x_padding)
        return self.attend_memory(x, memory, memory_pos, memory_padding)

    def attend_self(
        self, x: torch.Tensor, x_pos: torch.Tensor | None = None, x_padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The first step alone: x + SelfAttention(norm1(x)); it reads nothing but x."""
        h = self.norm1(x)
        q = h if x_pos is None else h + x_pos
        return x + self.self_attn(q, q, h, key_padding_mask=x_padding)

    def attend_memory(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor | None = None,
        memory_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The other two steps: cross-attention to the memory, then the FFN."""
        h = self.norm2(x)
        k = memory if memory_pos is None else memory + memory_pos
        x = x + self.cross_attn_image(h, k, memory, key_padding_mask=memory_padding)
        return self.feed_forward(x)
