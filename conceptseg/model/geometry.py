"""Geometry / exemplar encoder: points and boxes (positive or negative) -> prompt tokens, plus a CLS token.

Each point or box becomes one token (direct projection of its coordinates + features pooled from the image +
a sine encoding of its position + a label embedding). A learned CLS token is always appended, so a prompt
without any geometry still yields one image-conditioned token, exactly as the released model does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.box_ops import box_cxcywh_to_xyxy
from conceptseg.model.common import LayerNorm2d, PreNormAttentionLayer
from conceptseg.model.configs import SAM3Config
from conceptseg.model.position_encoding import sine_embed
from conceptseg.model.roi_align import roi_align


class GeometryEncoder(nn.Module):
    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        d, eps = config.d_model, config.layer_norm_eps
        self.roi_size = config.roi_size
        self.label_embed = nn.Embedding(2, d)
        self.cls_embed = nn.Embedding(1, d)
        self.points_direct_project = nn.Linear(2, d)
        self.points_pool_project = nn.Linear(d, d)
        self.points_pos_enc_project = nn.Linear(d, d)
        self.boxes_direct_project = nn.Linear(4, d)
        self.boxes_pool_project = nn.Conv2d(d, d, config.roi_size)
        self.boxes_pos_enc_project = nn.Linear(d + 2, d)
        self.final_proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.img_pre_norm = LayerNorm2d(d, eps=eps)
        self.encode = nn.ModuleList(
            PreNormAttentionLayer(d, config.num_heads, config.ffn_dim, eps) for _ in range(config.geometry_layers)
        )
        self.encode_norm = nn.LayerNorm(d, eps=eps)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """points [B, P, 2] normalised xy in [0, 1], labels [B, P], image [B, C, H, W] (normed) -> [B, P, C]."""
        grid = points[:, :, None, :] * 2 - 1  # B x P x 2 -> B x P x 1 x 2 in grid_sample's [-1, 1]
        pooled = F.grid_sample(image, grid, mode="bilinear", align_corners=False)  # B x C x P x 1
        pooled = pooled.squeeze(-1).transpose(1, 2)
        half = image.shape[1] // 2
        pos = torch.cat((sine_embed(points[..., 0] * 2 * math.pi, half), sine_embed(points[..., 1] * 2 * math.pi, half)), -1)
        return (
            self.points_direct_project(points)
            + self.points_pool_project(pooled)
            + self.points_pos_enc_project(pos.to(points.dtype))
            + self.label_embed(labels.clamp(min=0))
        )

    def embed_boxes(self, boxes: torch.Tensor, labels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """boxes [B, K, 4] normalised cxcywh, labels [B, K], image [B, C, H, W] (normed) -> [B, K, C]."""
        batch, num_boxes = boxes.shape[:2]
        height, width = image.shape[-2:]
        scale = boxes.new_tensor([width, height, width, height])
        xyxy = (box_cxcywh_to_xyxy(boxes) * scale).flatten(0, 1)
        batch_index = torch.arange(batch, device=boxes.device).repeat_interleave(num_boxes)
        rois = torch.cat((batch_index[:, None].to(xyxy.dtype), xyxy), dim=1)
        pooled = roi_align(image, rois, self.roi_size)  # (B*K) x C x roi x roi
        pooled = self.boxes_pool_project(pooled).view(batch, num_boxes, -1)
        half = image.shape[1] // 2
        cx, cy, w, h = boxes.unbind(-1)
        pos = torch.cat(
            (sine_embed(cy * 2 * math.pi, half), sine_embed(cx * 2 * math.pi, half), h[..., None], w[..., None]), -1
        )
        return (
            self.boxes_direct_project(boxes)
            + pooled
            + self.boxes_pos_enc_project(pos.to(boxes.dtype))
            + self.label_embed(labels.clamp(min=0))
        )

    def forward(
        self,
        image: torch.Tensor,
        image_pos: torch.Tensor,
        boxes: torch.Tensor | None = None,
        box_labels: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the geometric part of a prompt.

        image: [B, C, H, W] stride-14 features; image_pos: [B, C, H, W] their sine encoding.
        boxes: [B, K, 4] normalised cxcywh; points: [B, P, 2] normalised xy; labels 1 = positive,
        0 = negative, -1 = padding. Returns tokens [B, P + K + 1, C] and padding mask [B, P + K + 1] (True = pad);
        the last token is the CLS token.
        """
        batch = image.shape[0]
        has_points, has_boxes = points is not None and points.shape[1] > 0, boxes is not None and boxes.shape[1] > 0
        normed = self.img_pre_norm(image) if has_points or has_boxes else None  # only sampled by points and boxes
        tokens, padding = [], []
        if has_points:
            tokens.append(self.embed_points(points, point_labels, normed))
            padding.append(point_labels < 0)
        if has_boxes:
            tokens.append(self.embed_boxes(boxes, box_labels, normed))
            padding.append(box_labels < 0)
        tokens.append(self.cls_embed.weight.expand(batch, 1, -1))
        padding.append(torch.zeros(batch, 1, dtype=torch.bool, device=image.device))
        x = self.norm(self.final_proj(torch.cat(tokens, dim=1)))
        pad = torch.cat(padding, dim=1)
        memory = image.flatten(2).transpose(1, 2)  # B x C x H x W -> B x HW x C
        memory_pos = image_pos.flatten(2).transpose(1, 2)
        for layer in self.encode:
            x = layer(x, memory, memory_pos=memory_pos, x_padding=pad)
        return self.encode_norm(x), pad
