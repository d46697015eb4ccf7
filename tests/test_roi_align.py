"""roi_align must reproduce torchvision.ops.roi_align (forward and backward) without importing torchvision."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from conceptseg.model.roi_align import roi_align


def random_rois(num_boxes, num_images, height, width, dtype, generator, allow_inverted):
    """Mix of boxes: inside, partly and fully outside the map, sub-pixel, larger than the map, inverted."""
    x1 = torch.rand(num_boxes, generator=generator, dtype=dtype) * (width + 12) - 6
    y1 = torch.rand(num_boxes, generator=generator, dtype=dtype) * (height + 12) - 6
    scale = torch.tensor([0.3, 2.0, 8.0, 40.0], dtype=dtype)[torch.arange(num_boxes) % 4]  # tiny ... huge
    w, h = (torch.rand(2, num_boxes, generator=generator, dtype=dtype) * scale).unbind(0)
    if allow_inverted:
        w[::5], h[::7] = -w[::5], -h[::7]
    image = torch.randint(0, num_images, (num_boxes,), generator=generator).to(dtype)
    return torch.stack([image, x1, y1, x1 + w, y1 + h], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_torchvision(dtype, aligned):
    generator = torch.Generator().manual_seed(0)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    worst = 0.0
    for height, width in [(1, 1), (5, 9), (16, 16), (23, 11)]:
        features = torch.randn(3, 4, height, width, generator=generator, dtype=dtype)
        # torchvision's kernel cannot size inverted boxes when aligned=True, so only the legacy mode gets them
        rois = random_rois(24, 3, height, width, dtype, generator, allow_inverted=not aligned)
        for output_size in [1, (3, 5), 7]:
            for sampling_ratio in [-1, 0, 1, 3]:
                for spatial_scale in [1.0, 0.5]:
                    args = (output_size, spatial_scale, sampling_ratio, aligned)
                    expected = torchvision.ops.roi_align(features, rois, *args)
                    actual = roi_align(features, rois, *args)
                    assert actual.shape == expected.shape and actual.dtype == dtype
                    worst = max(worst, (actual - expected).abs().max().item())
    assert worst <= tolerance


def test_box_far_outside_is_zero_and_box_list_input():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 8, 8, generator=generator)
    per_image = [torch.tensor([[20.0, 20.0, 30.0, 30.0], [1.0, 2.0, 5.0, 7.0]]), torch.tensor([[-9.0, 0.0, -3.0, 4.0]])]
    pooled = roi_align(features, per_image, 2)
    assert (pooled[0] == 0).all() and (pooled[2] == 0).all() and (pooled[1] != 0).any()
    torch.testing.assert_close(pooled, torchvision.ops.roi_align(features, per_image, 2), rtol=0, atol=1e-6)


def test_gradient_matches_torchvision():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(2, 5, 12, 14, generator=generator, requires_grad=True)
    rois = random_rois(30, 2, 12, 14, torch.float32, generator, allow_inverted=True)
    upstream = torch.randn(30, 5, 7, 7, generator=generator)
    for aligned in (False, True):
        valid = rois if not aligned else rois[(rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])]
        grads = [
            torch.autograd.grad((fn(features, valid, 7, 1.0, -1, aligned) * upstream[: len(valid)]).sum(), features)[0]
            for fn in (roi_align, torchvision.ops.roi_align)
        ]
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 2, 6, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(6, 2, 6, 7, torch.float64, generator, allow_inverted=True)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 3), 1.0, 2), (features,))


def test_empty_boxes():
    assert roi_align(torch.randn(1, 3, 8, 8), torch.zeros(0, 5), 7).shape == (0, 3, 7, 7)


def test_low_precision_samples_in_float32():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 72, 72, generator=generator)
    rois = random_rois(8, 2, 72, 72, torch.float32, generator, allow_inverted=False)
    reference = torchvision.ops.roi_align(features, rois, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_pooled = roi_align(features, rois, 7)
    assert autocast_pooled.dtype == torch.float32
    torch.testing.assert_close(autocast_pooled, reference, rtol=0, atol=1e-5)
    # bf16 features are exact in float32, so only the final rounding to bf16 remains
    pooled = roi_align(features.bfloat16(), rois.bfloat16(), 7)
    exact = torchvision.ops.roi_align(features.bfloat16().float(), rois.bfloat16().float(), 7)
    assert pooled.dtype == torch.bfloat16
    torch.testing.assert_close(pooled, exact.bfloat16())


@pytest.mark.parametrize(
    ("features", "boxes", "error"),
    [
        (torch.zeros(3, 8, 8), torch.zeros(1, 5), ValueError),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 4), ValueError),
        (torch.zeros(2, 3, 8, 8), [torch.zeros(1, 4)], ValueError),
        (torch.zeros(1, 3, 8, 8), [[0.0, 1.0, 1.0, 2.0, 2.0]], TypeError),
    ],
)
def test_invalid_input(features, boxes, error):
    with pytest.raises(error):
        roi_align(features, boxes, 7)


def test_does_not_import_torchvision():
    code = "import sys, conceptseg.model.roi_align; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
