"""Box conversions, areas and overlaps: the one place that knows box layouts.

Layouts (last dim = 4, any leading dims): xyxy = (x1, y1, x2, y2) corners; cxcywh = (center x, center y, width,
height). Units are whatever the caller uses (pixels or 0..1); the model's prompts and outputs are normalised to
0..1, the public API speaks pixels (the `pixel_*` / `normalized_*` pair converts). COCO's xywh is a file
format, handled in `conceptseg.io`.
"""

from __future__ import annotations

import torch


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def pixel_xyxy_to_normalized_cxcywh(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """XYXY pixel boxes of a height x width image -> cxcywh in [0, 1] (the model's prompt and target layout);
    corners outside the image are clamped to it."""
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return box_xyxy_to_cxcywh((boxes / scale).clamp(0, 1))


def normalized_cxcywh_to_pixel_xyxy(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pixel_xyxy_to_normalized_cxcywh` (for boxes inside the image)."""
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return box_cxcywh_to_xyxy(boxes) * scale


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of xyxy boxes [..., 4] -> [...]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _pairwise_intersection_and_union(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """xyxy boxes [..., N, 4] and [..., M, 4] -> intersection and union areas, each [..., N, M]."""
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - intersection
    return intersection, union


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes [..., N, 4] and [..., M, 4] -> [..., N, M]."""
    intersection, union = _pairwise_intersection_and_union(boxes1, boxes2)
    return intersection / union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU (DETR / Rezatofighi et al. 2019) -> [..., N, M], in [-1, 1].

    gIoU = IoU - (enclosing area - union) / enclosing area, where the enclosing box is the smallest box holding
    both. Boxes are xyxy with x2 >= x1, y2 >= y1 and positive area (zero-area pairs give NaN, as in DETR).
    """
    intersection, union = _pairwise_intersection_and_union(boxes1, boxes2)
    top_left = torch.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    enclosing = (bottom_right - top_left).prod(dim=-1)
    return intersection / union - (enclosing - union) / enclosing


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes of binary masks [..., H, W] -> float [..., 4]; empty masks give (0, 0, 0, 0).

    Coordinates are inclusive pixel indices (x2 is the last column holding a True pixel), as in
    torchvision.ops.masks_to_boxes. Non-bool masks count nonzero pixels as foreground.
    """
    if masks.dim() < 2:
        raise ValueError(f"masks must be [..., H, W], got shape {tuple(masks.shape)}")
    masks = masks.bool()
    height, width = masks.shape[-2:]
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # [..., H], [..., W]
    y_index = torch.arange(height, device=masks.device)
    x_index = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, y_index, height).amin(dim=-1)
    x1 = torch.where(cols, x_index, width).amin(dim=-1)
    y2 = torch.where(rows, y_index, -1).amax(dim=-1)
    x2 = torch.where(cols, x_index, -1).amax(dim=-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, 0).float()
