"""RoIAlign in pure PyTorch, numerically matching `torchvision.ops.roi_align` (no torchvision import).

Bilinear sampling is separable: a sample's weight on pixel (i, j) is hat(y - i) * hat(x - j) with
hat(d) = max(0, 1 - |d|), and torchvision's out-of-map rule (zero if y < -1 or y > H, same for x) is a product
of a row test and a column test. So averaging the samples of each output bin is the same as multiplying the
feature map by two small matrices, rows [K, out_h, H] and columns [K, out_w, W]: two batched matmuls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _as_rois(boxes: torch.Tensor | Sequence[torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """[K, 5] (batch index, x1, y1, x2, y2) from either that tensor or a per-image list of [Ki, 4] boxes."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes tensor must be [K, 5] (batch_index, x1, y1, x2, y2), got {tuple(boxes.shape)}")
        rois = boxes
    elif isinstance(boxes, Sequence) and all(isinstance(b, torch.Tensor) for b in boxes):
        if len(boxes) != features.shape[0] or any(b.dim() != 2 or b.shape[1] != 4 for b in boxes):
            raise ValueError(f"boxes list must hold one [Ki, 4] xyxy tensor per image ({features.shape[0]} images)")
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
    else:
        raise TypeError("boxes must be a [K, 5] tensor or a list of [Ki, 4] tensors (one per image)")
    if rois.device != features.device:
        raise ValueError(f"boxes are on {rois.device} but features are on {features.device}; move them together")
    return rois


def _axis_weights(
    start: torch.Tensor, length: torch.Tensor, num_bins: int, size: int, sampling_ratio: int
) -> torch.Tensor:
    """Bin-averaged interpolation weights along one axis -> [K, num_bins, size].

    start, length: [K] box start and extent along this axis (feature pixels). Each bin takes `grid` evenly
    spaced samples, grid = sampling_ratio if > 0 else ceil(bin size) (differs per box, so samples beyond a
    box's own grid are masked out).
    """
    bin_size = length / num_bins
    grid = torch.full_like(length, sampling_ratio) if sampling_ratio > 0 else torch.ceil(bin_size)
    max_grid = int(grid.max().clamp(min=0)) if grid.numel() else 0  # host sync: the sample count is data-dependent
    bins = torch.arange(num_bins, device=start.device, dtype=start.dtype)[None, :, None]
    samples = torch.arange(max_grid, device=start.device, dtype=start.dtype)[None, None, :]
    start, bin_size, grid = start[:, None, None], bin_size[:, None, None], grid[:, None, None]
    coords = start + bins * bin_size + (samples + 0.5) * bin_size / grid  # [K, bins, samples]
    # torchvision zeroes samples more than one pixel outside the map and clamps the rest onto it
    used = (coords >= -1) & (coords <= size) & (samples < grid)
    coords = coords.clamp(0, size - 1)
    pixels = torch.arange(size, device=start.device, dtype=start.dtype)
    hat = (1 - (coords[..., None] - pixels).abs()).clamp(min=0)  # [K, bins, samples, size]
    return (hat * used[..., None]).sum(dim=2) / grid.clamp(min=1)


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """Average bilinear samples of `features` [B, C, H, W] inside each box -> [K, C, out_h, out_w].

    boxes: [K, 5] rows (batch_index, x1, y1, x2, y2), or a list with one [Ki, 4] xyxy tensor per image, in
    input-pixel units; `spatial_scale` maps them to feature pixels. sampling_ratio <= 0 samples
    ceil(box size / output size) points per bin and axis. aligned=False (legacy) applies no half-pixel offset
    and treats boxes as at least 1x1. Differentiable w.r.t. features; memory holds K gathered feature maps.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be [B, C, H, W], got shape {tuple(features.shape)}")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    # Sample in float32 at least (as torchvision does under autocast): bf16 cannot hold sub-pixel coordinates.
    compute_dtype = torch.promote_types(features.dtype, torch.float32)
    with torch.autocast(features.device.type, enabled=False):
        rois = _as_rois(boxes, features).to(compute_dtype)
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - offset).unbind(dim=1)
        width, height = x2 - x1, y2 - y1
        if not aligned:
            width, height = width.clamp(min=1), height.clamp(min=1)
        _, _, map_h, map_w = features.shape
        rows = _axis_weights(y1, height, out_h, map_h, sampling_ratio)
        cols = _axis_weights(x1, width, out_w, map_w, sampling_ratio)
        per_box_maps = features[rois[:, 0].long()].to(compute_dtype)  # [K, C, H, W]
        pooled = rows[:, None] @ per_box_maps @ cols[:, None].transpose(-1, -2)
    return pooled.to(features.dtype)
