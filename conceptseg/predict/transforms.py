"""Image preprocessing of the official SAM 3 image API: square resize, then normalise to [-1, 1].

The official pipeline (torchvision v2, run on the model's device) is: uint8 image -> bilinear antialiased resize
to size x size (aspect ratio not kept), still uint8 -> scale to [0, 1] -> normalise with mean = std = 0.5.
torchvision resizes uint8 natively on CPU and in float32, rounded back to uint8, elsewhere; we do the same so
results match it bit for bit on either device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from conceptseg.io.images import array_to_rgb, pil_to_rgb

ImageLike = PIL.Image.Image | np.ndarray | torch.Tensor

def as_uint8_chw(image: ImageLike) -> torch.Tensor:
    """Accepted image -> uint8 tensor [3, H, W] (on the input tensor's device, else CPU).

    PIL images and numpy arrays follow the package's one image rule (`conceptseg.io.images`: any integer PIL
    mode, grey, RGBA and 16-bit inputs are converted to RGB uint8); torch tensors must already be uint8
    [3, H, W] RGB.
    """
    if isinstance(image, PIL.Image.Image):
        return torch.from_numpy(pil_to_rgb(image)).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        return torch.from_numpy(array_to_rgb(image).copy()).permute(2, 0, 1)  # copy: input may be read-only
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"torch images must be uint8 [3, H, W] RGB, got {image.dtype} {tuple(image.shape)}; use "
                "img.permute(2, 0, 1) for [H, W, 3] and (img * 255).round().to(torch.uint8) for floats in [0, 1]"
            )
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"image is empty: height x width = {image.shape[1]} x {image.shape[2]}")
        return image
    raise TypeError(f"image must be a PIL image, numpy array or torch tensor, got {type(image).__name__}")


def _resizes_natively_in_uint8(device: torch.device) -> bool:
    """torchvision resizes uint8 with PyTorch's fixed-point uint8 kernel on CPU, in float32 elsewhere."""
    return device.type == "cpu"


def resize_uint8(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear antialiased resize of uint8 [B, C, H, W] to (height, width), rounded back to uint8."""
    if _resizes_natively_in_uint8(pixels.device):
        return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
    resized = F.interpolate(pixels.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized.round().to(torch.uint8)  # antialias weights are >= 0 and sum to 1: no overflow


def preprocess(image: ImageLike, size: int = 1008, device: torch.device | str | None = None) -> torch.Tensor:
    """One image (see `as_uint8_chw` for accepted types) -> float32 [1, 3, size, size] in [-1, 1].

    device: where to resize (default: the input tensor's device, CPU for PIL/numpy). The official API resizes
    on the model's device; CPU and GPU resizes differ by one uint8 level at up to ~20% of the pixels.
    """
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    pixels = as_uint8_chw(image)
    if device is not None:
        pixels = pixels.to(device)
    resized = resize_uint8(pixels[None], (size, size))
    # same operations as torchvision's ToDtype(float32, scale=True) then Normalize(0.5, 0.5)
    return (resized.float() * (1.0 / 255) - 0.5) / 0.5


def preprocess_batch(
    images: Sequence[ImageLike], size: int = 1008, device: torch.device | str | None = None
) -> torch.Tensor:
    """Several images of any sizes -> float32 [B, 3, size, size]; see `preprocess`."""
    if isinstance(images, (PIL.Image.Image, np.ndarray, torch.Tensor)) or not isinstance(images, Sequence):
        raise TypeError("preprocess_batch expects a list of images; use preprocess() for a single image")
    if len(images) == 0:
        raise ValueError("preprocess_batch got an empty list; pass at least one image")
    return torch.cat([preprocess(image, size, device) for image in images])
