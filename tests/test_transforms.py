"""preprocess must reproduce the official torchvision v2 pipeline of the SAM 3 image API."""

import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import _geometry as tv_geometry

from conceptseg.predict import transforms
from conceptseg.predict.transforms import as_uint8_chw, preprocess, preprocess_batch

SIZES = [(480, 640, 1008), (1200, 900, 1008), (37, 53, 64), (64, 64, 64), (300, 200, 77), (1, 1, 16), (700, 30, 50)]


def official(image, size):
    """The official Sam3Processor transform, applied as it does after `to_image`."""
    transform = v2.Compose(
        [
            v2.ToDtype(torch.uint8, scale=True),
            v2.Resize(size=(size, size)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5] * 3, std=[0.5] * 3),
        ]
    )
    return transform(v2.functional.to_image(image))[None]


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("height", "width", "size"), SIZES)
def test_matches_torchvision_v2_for_every_input_type(height, width, size):
    pixels = random_image(height, width)
    inputs = [pixels, PIL.Image.fromarray(pixels), torch.from_numpy(pixels).permute(2, 0, 1)]
    expected = official(pixels, size)
    for image in inputs:
        result = preprocess(image, size)
        assert result.shape == (1, 3, size, size) and result.dtype == torch.float32
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)


def test_float_resize_path_matches_torchvision(monkeypatch):
    # off CPU (e.g. CUDA) both resize in float32 and round; force that path on CPU for both
    monkeypatch.setattr(transforms, "_resizes_natively_in_uint8", lambda device: False)
    monkeypatch.setattr(tv_geometry, "_do_native_uint8_resize_on_cpu", lambda interpolation: False)
    for height, width, size in SIZES[:3]:
        pixels = random_image(height, width, seed=1)
        torch.testing.assert_close(preprocess(pixels, size), official(pixels, size), rtol=0, atol=1e-6)


def test_matches_transformers_image_processor():
    from transformers import Sam3ImageProcessor

    image = PIL.Image.fromarray(random_image(480, 640, seed=2))
    reference = Sam3ImageProcessor()(images=image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(preprocess(image), reference, rtol=0, atol=1e-6)


def test_pil_modes_are_converted_to_rgb():
    pixels = random_image(20, 30, seed=3)
    gray = pixels[..., 0]
    assert torch.equal(as_uint8_chw(PIL.Image.fromarray(gray)), torch.from_numpy(np.stack([gray] * 3)))
    rgba = PIL.Image.fromarray(np.concatenate([pixels, gray[..., None]], axis=-1))
    assert rgba.mode == "RGBA"
    assert torch.equal(as_uint8_chw(rgba), torch.from_numpy(pixels).permute(2, 0, 1))
    palette = PIL.Image.fromarray(pixels).convert("P")
    assert torch.equal(as_uint8_chw(palette), torch.from_numpy(np.array(palette.convert("RGB"))).permute(2, 0, 1))
    # one image rule for every entry point (conceptseg.io.images): 16-bit values are scaled, not clipped
    sixteen_bit = PIL.Image.fromarray(gray.astype(np.uint16) * 257)
    assert torch.equal(as_uint8_chw(sixteen_bit), as_uint8_chw(PIL.Image.fromarray(gray)))
    assert torch.equal(as_uint8_chw(gray), as_uint8_chw(np.stack([gray] * 3, axis=-1)))
    assert torch.equal(as_uint8_chw(np.concatenate([pixels, gray[..., None]], axis=-1)), as_uint8_chw(pixels))


def test_same_size_and_value_range():
    pixels = random_image(32, 32, seed=4)
    pixels[0, 0], pixels[0, 1] = 0, 255
    result = preprocess(pixels, 32)
    torch.testing.assert_close(result[0], torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1)
    assert result.min() == -1 and result.max() == 1


def test_read_only_and_flipped_arrays():
    pixels = random_image(30, 40, seed=7)
    read_only = pixels.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(preprocess(read_only, 16), preprocess(pixels, 16), rtol=0, atol=0)
    flipped = pixels[:, ::-1]
    torch.testing.assert_close(preprocess(flipped, 16), official(np.ascontiguousarray(flipped), 16), rtol=0, atol=1e-6)


def test_batch():
    images = [random_image(40, 50, seed=5), PIL.Image.fromarray(random_image(70, 20, seed=6))]
    batch = preprocess_batch(images, 48, device="cpu")
    assert batch.shape == (2, 3, 48, 48)
    torch.testing.assert_close(batch, torch.cat([preprocess(image, 48) for image in images]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="empty list"):
        preprocess_batch([], 48)
    with pytest.raises(TypeError, match="list of images"):
        preprocess_batch(images[0], 48)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), ValueError, "uint8"),
        (np.zeros((8, 8, 2), dtype=np.uint8), ValueError, r"\[H, W, 3\]"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), ValueError, "permute"),
        (torch.zeros(3, 8, 8), ValueError, "uint8"),
        (np.zeros((0, 8, 3), dtype=np.uint8), ValueError, "empty"),
        (torch.zeros(3, 8, 0, dtype=torch.uint8), ValueError, "empty"),
        ([[0, 0, 0]], TypeError, "PIL image, numpy array or torch tensor"),
    ],
)
def test_invalid_images(image, error, match):
    with pytest.raises(error, match=match):
        preprocess(image, 16)


def test_invalid_size():
    with pytest.raises(ValueError, match="size"):
        preprocess(random_image(4, 4), 0)
