"""Reading images: one rule for every entry point (predictor, preprocessing, datasets, CLI, server).

Accepted: a path, a PIL image or a numpy array. Every one becomes RGB uint8 [H, W, 3]:
  * 8-bit PIL modes (L, P, RGBA, CMYK, ...) are converted to RGB: grey is replicated, palettes are expanded,
    alpha is dropped;
  * 16- and 32-bit integer images (PIL modes I;16*, I; numpy uint16/int32) are scaled to 8 bits (value / 257,
    rounded, clipped), so a 16-bit PNG keeps its contrast instead of saturating at 255;
  * numpy arrays may be [H, W] grey, [H, W, 3] RGB or [H, W, 4] RGBA (alpha dropped);
  * floating-point images are refused: their range (0-1? 0-255?) cannot be guessed.
The size of a file is bounded by `ImageLimits`, checked from its header before any pixel is decoded, so a
decompression bomb costs nothing (an image already in memory, PIL or numpy, has been decoded by the caller). Every refusal is a ValueError (TypeError for a wrong argument type) whose
message names the file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

ImageSource = str | os.PathLike | PIL.Image.Image | np.ndarray

# PIL modes whose values do not fit 8 bits; Image.convert("RGB") would clip them to 255.
HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class ImageLimits:
    """Largest image accepted. None switches a limit off.

    max_pixels: width x height. The default is PIL's own decompression-bomb threshold (about 89.5 MP, which
    decodes to ~270 MB of RGB); PIL itself refuses files over twice that, whatever this says.
    max_side: the longer side in pixels. max_bytes: the size of an encoded file (uploads, files on disk).
    """

    max_pixels: int | None = PIL.Image.MAX_IMAGE_PIXELS
    max_side: int | None = None
    max_bytes: int | None = None

    def check(self, width: int, height: int) -> None:
        """Raise ValueError if a width x height image is over a limit."""
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise ValueError(f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
                             f"{self.max_pixels:,} (ImageLimits.max_pixels)")
        if self.max_side is not None and max(width, height) > self.max_side:
            raise ValueError(f"the image is {width}x{height}, over the limit of {self.max_side} pixels a side "
                             "(ImageLimits.max_side)")

    def check_file(self, path: str | os.PathLike) -> None:
        """Raise ValueError if an encoded file is over `max_bytes`."""
        if self.max_bytes is not None and (size := os.path.getsize(path)) > self.max_bytes:
            raise ValueError(f"the file is {size:,} bytes, over the limit of {self.max_bytes:,} "
                             "(ImageLimits.max_bytes)")


DEFAULT_LIMITS = ImageLimits()


def load_image(source: ImageSource, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Any accepted image (see the module docstring) -> RGB uint8 [H, W, 3], C-contiguous; `limits` apply to
    files."""
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source), limits)
    if isinstance(source, PIL.Image.Image):
        return pil_to_rgb(source)
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    raise TypeError(f"image must be a path, PIL image or numpy array, got {type(source).__name__}")


def pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
    """A PIL image of any integer mode -> RGB uint8 [H, W, 3]."""
    if image.mode == "F":
        raise ValueError("floating-point images are not supported: scale to 8-bit RGB first")
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return array_to_rgb(np.asarray(image))
    return array_to_rgb(np.asarray(image.convert("RGB")))


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """A numpy image ([H, W], [H, W, 3] or [H, W, 4]; uint8, uint16 or int32) -> RGB uint8 [H, W, 3]."""
    if array.dtype in (np.uint16, np.int32) and array.size:
        array = (array.astype(np.float64) / 257).clip(0, 255).round().astype(np.uint8)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 (or 16-bit integers), got {array.dtype}; scale floats in "
                         "[0, 1] with (img * 255).round().astype(np.uint8)")
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image arrays must be [H, W, 3] RGB (or [H, W] grey, [H, W, 4] RGBA), got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty ({array.shape[0]} x {array.shape[1]} pixels)")
    return np.ascontiguousarray(array[..., :3])


def read_image_bytes(data: bytes, limits: ImageLimits = DEFAULT_LIMITS, name: str = "upload") -> np.ndarray:
    """An encoded image held in memory (an upload) -> RGB uint8 [H, W, 3]; `limits` apply as to a file, and
    refusals are ValueErrors naming it `name`."""
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        raise ValueError(f"cannot read image {name!r}: it is {len(data):,} bytes, over the limit of "
                         f"{limits.max_bytes:,} (ImageLimits.max_bytes)")
    if not data:
        raise ValueError(f"cannot read image {name!r}: it is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, limits)


def _read_file(path: Path, limits: ImageLimits) -> np.ndarray:
    try:
        limits.check_file(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read image {str(path)!r}: {error}") from error
    return _decode(path, str(path), limits)


def _decode(source: Path | io.BytesIO, name: str, limits: ImageLimits) -> np.ndarray:
    try:
        with PIL.Image.open(source) as opened:  # reads the header only: limits are checked before decoding
            limits.check(*opened.size)
            opened.load()
            return pil_to_rgb(opened)
    except PIL.UnidentifiedImageError:
        raise ValueError(f"cannot read image {name!r}: not an image file in a format PIL reads") from None
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {name!r}: {error}") from error
