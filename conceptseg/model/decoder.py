"""DETR-like decoder: learned queries + a presence token, iterative box refinement, box relative-position bias.

Per layer the queries (presence token first, with zero query position) self-attend, cross-attend to the prompt
tokens, then to the fused image tokens with an attention bias derived from each query's current box (BoxRPB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.box_ops import box_cxcywh_to_xyxy
from conceptseg.model.common import MLP, MultiheadAttention, inverse_sigmoid
from conceptseg.model.configs import SAM3Config
from conceptseg.model.position_encoding import sine_embed


@dataclass
class DecoderOutput:
    hidden_states: torch.Tensor  # [L, B, Q, C] after the shared output norm
    reference_boxes: torch.Tensor  # [L, B, Q, 4] cxcywh in [0, 1]: each layer's input boxes
    presence_logits: torch.Tensor  # [L, B, 1]


class DecoderLayer(nn.Module):
    """Post-norm: self-attn -> text cross-attn -> image cross-attn -> FFN.

    Not a `common.PreNormLayer`: it normalises after each residual and has a third (text) attention, and its
    norms are named by the checkpoint out of step order (`norm2`, `catext_norm`, `norm1`, `norm3`).
    """

    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        d, heads, eps = config.d_model, config.num_heads, config.layer_norm_eps
        self.self_attn = MultiheadAttention(d, heads)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.ca_text = MultiheadAttention(d, heads)
        self.catext_norm = nn.LayerNorm(d, eps=eps)
        self.cross_attn = MultiheadAttention(d, heads)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.linear1 = nn.Linear(d, config.ffn_dim)
        self.linear2 = nn.Linear(config.ffn_dim, d)
        self.norm3 = nn.LayerNorm(d, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        query_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding: torch.Tensor,
        image: torch.Tensor,
        image_keys: torch.Tensor,
        image_bias: torch.Tensor,
    ) -> torch.Tensor:
        """x, query_pos: [B, 1+Q, C]; prompt: [B, T, C]; image: [B, HW, C] and its keys image + position;
        image_bias: [B, h, 1+Q, HW]."""
        q = x + query_pos
        x = self.norm2(x + self.self_attn(q, q, x))
        q = x + query_pos
        x = self.catext_norm(x + self.ca_text(q, prompt, prompt, key_padding_mask=prompt_padding))
        q = x + query_pos
        x = self.norm1(x + self.cross_attn(q, image_keys, image, attn_mask=image_bias))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x), inplace=True)))


class Decoder(nn.Module):
    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        d = config.d_model
        self.num_heads = config.num_heads
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.query_embed = nn.Embedding(config.num_queries, d)
        self.reference_points = nn.Embedding(config.num_queries, 4)
        self.boxRPB_embed_x = MLP(2, d, config.num_heads, 2)
        self.boxRPB_embed_y = MLP(2, d, config.num_heads, 2)
        self.presence_token = nn.Embedding(1, d)
        self.presence_token_head = MLP(d, d, 1, 3)
        self.presence_token_out_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.ref_point_head = MLP(2 * d, d, d, 2)

    def box_position(self, boxes: torch.Tensor) -> torch.Tensor:
        """Query positions from boxes [B, Q, 4] cxcywh: sine(y, x, w, h) -> MLP -> [B, Q, C]."""
        half = self.norm.normalized_shape[0] // 2
        cx, cy, w, h = (sine_embed(v * 2 * math.pi, half) for v in boxes.unbind(-1))
        return self.ref_point_head(torch.cat((cy, cx, w, h), dim=-1).to(boxes.dtype))

    def box_attention_bias(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """BoxRPB: log-scaled distances of every grid coordinate to each box edge -> bias [B, h, 1+Q, H*W], with a
        zero row first for the presence token."""

        def log_scaled(deltas: torch.Tensor) -> torch.Tensor:
            deltas = deltas * 8
            return torch.sign(deltas) * torch.log2(deltas.abs() + 1.0) / math.log2(8)

        x1, y1, x2, y2 = box_cxcywh_to_xyxy(boxes).unbind(-1)  # each B x Q
        xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) / width
        ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) / height
        dx = torch.stack((xs - x1[..., None], xs - x2[..., None]), dim=-1)  # B x Q x W x 2
        dy = torch.stack((ys - y1[..., None], ys - y2[..., None]), dim=-1)  # B x Q x H x 2
        # The presence row and the head-major layout go onto the two small factors (made contiguous: a sum keeps
        # its inputs' memory order), so that the big sum (33 MB a layer at full size) is written once, in the
        # layout attention reads, and flattening it is a view.
        bias_x = F.pad(self.boxRPB_embed_x(log_scaled(dx)).permute(0, 3, 1, 2), (0, 0, 1, 0))  # B x h x 1+Q x W
        bias_y = F.pad(self.boxRPB_embed_y(log_scaled(dy)).permute(0, 3, 1, 2), (0, 0, 1, 0))  # B x h x 1+Q x H
        return (bias_y.contiguous()[..., :, None] + bias_x.contiguous()[..., None, :]).flatten(3)

    def forward(
        self,
        image: torch.Tensor,
        image_pos: torch.Tensor,
        image_size: tuple[int, int],
        prompt: torch.Tensor,
        prompt_padding: torch.Tensor,
        initial_boxes: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """image, image_pos: fused tokens [B, H*W, C] and their position; prompt: [B, T, C] with padding [B, T].

        initial_boxes: [B, Q, 4] cxcywh reference boxes to start from instead of the learned ones.
        """
        batch = image.shape[0]
        queries = self.query_embed.weight.expand(batch, -1, -1)
        x = torch.cat((self.presence_token.weight.expand(batch, -1, -1), queries), dim=1)
        if initial_boxes is None:
            boxes = self.reference_points.weight.sigmoid().expand(batch, -1, -1)
        else:
            boxes = initial_boxes.detach()
        image_keys = image + image_pos  # the same in every layer
        hidden, references, presence = [], [], []
        for layer in self.layers:
            query_pos = F.pad(self.box_position(boxes), (0, 0, 1, 0))  # the presence token has no position
            bias = self.box_attention_bias(boxes, *image_size)
            x = layer(x, query_pos, prompt, prompt_padding, image, image_keys, bias)
            out = self.norm(x[:, 1:])
            references.append(boxes)
            hidden.append(out)
            # The reference clamps the presence logit only in intent (a no-op); we do not clamp either.
            presence.append(self.presence_token_head(self.presence_token_out_norm(x[:, 0])))
            boxes = (self.bbox_embed(out) + inverse_sigmoid(boxes)).sigmoid().detach()
        return DecoderOutput(torch.stack(hidden), torch.stack(references), torch.stack(presence))
