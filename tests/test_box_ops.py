"""Box conversions, IoU, gIoU and masks_to_boxes, checked against torchvision and by their properties."""

import pytest
import torch
import torchvision

from conceptseg.model.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    masks_to_boxes,
    normalized_cxcywh_to_pixel_xyxy,
    pixel_xyxy_to_normalized_cxcywh,
)


def random_xyxy(*shape, generator):
    corner = torch.rand(*shape, 2, generator=generator, dtype=torch.float64) * 100
    size = torch.rand(*shape, 2, generator=generator, dtype=torch.float64) * 50 + 0.1
    return torch.cat([corner, corner + size], dim=-1)


def test_conversions_known_values():
    xyxy = torch.tensor([10.0, 20.0, 30.0, 60.0])
    assert box_xyxy_to_cxcywh(xyxy).tolist() == [20.0, 40.0, 20.0, 40.0]
    assert box_cxcywh_to_xyxy(torch.tensor([20.0, 40.0, 20.0, 40.0])).tolist() == xyxy.tolist()
    assert box_area(xyxy).item() == 800.0


def test_conversions_round_trip_with_batch_dims():
    boxes = random_xyxy(3, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes)), boxes)
    assert box_xyxy_to_cxcywh(boxes).shape == (3, 5, 4) and box_area(boxes).shape == (3, 5)
    torch.testing.assert_close(box_area(boxes), box_xyxy_to_cxcywh(boxes)[..., 2:].prod(-1))


def test_pixel_and_normalized_boxes_convert_both_ways():
    pixels = torch.tensor([[10.0, 20.0, 30.0, 60.0], [-5.0, 0.0, 300.0, 90.0]])
    normalized = pixel_xyxy_to_normalized_cxcywh(pixels, height=100, width=200)
    assert normalized[0].tolist() == pytest.approx([0.1, 0.4, 0.1, 0.4])
    assert normalized[1].tolist() == pytest.approx([0.5, 0.45, 1.0, 0.9])  # clamped to the image
    torch.testing.assert_close(normalized_cxcywh_to_pixel_xyxy(normalized, 100, 200)[0], pixels[0])


def test_iou_and_giou_match_torchvision():
    generator = torch.Generator().manual_seed(1)
    boxes1, boxes2 = random_xyxy(7, generator=generator), random_xyxy(9, generator=generator)
    torch.testing.assert_close(box_iou(boxes1, boxes2), torchvision.ops.box_iou(boxes1, boxes2))
    torch.testing.assert_close(
        generalized_box_iou(boxes1, boxes2), torchvision.ops.generalized_box_iou(boxes1, boxes2)
    )


def test_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 0.0, 0.0])
    # enclosing boxes: 3x3 (area 9), 4x2 (8, touching: gIoU 0), 6x2 (12, gap of 2 -> -4/12)
    assert generalized_box_iou(a, b)[0].tolist() == pytest.approx([1 / 7 - 2 / 9, 0.0, -1 / 3])


def test_giou_properties():
    generator = torch.Generator().manual_seed(2)
    boxes1, boxes2 = random_xyxy(4, 30, generator=generator), random_xyxy(4, 20, generator=generator)
    giou = generalized_box_iou(boxes1, boxes2)
    assert giou.shape == (4, 30, 20)
    assert (giou >= -1).all() and (giou <= 1).all()
    assert (giou <= box_iou(boxes1, boxes2)).all()
    torch.testing.assert_close(giou, generalized_box_iou(boxes2, boxes1).transpose(-1, -2))
    torch.testing.assert_close(generalized_box_iou(boxes1, boxes1).diagonal(dim1=-2, dim2=-1), torch.ones(4, 30).double())
    # far-apart tiny boxes approach -1
    far = generalized_box_iou(torch.tensor([[0.0, 0.0, 1e-3, 1e-3]]), torch.tensor([[1e3, 1e3, 1e3 + 1e-3, 1e3 + 1e-3]]))
    assert far.item() == pytest.approx(-1.0, abs=1e-6)


def test_masks_to_boxes_matches_torchvision():
    generator = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 13, 17, generator=generator) > 0.97
    masks[0] = False
    masks[1] = False
    masks[1, 4, 9] = True
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert boxes[1].tolist() == [9.0, 4.0, 9.0, 4.0]
    torch.testing.assert_close(boxes[1:], torchvision.ops.masks_to_boxes(masks[1:]))


def test_masks_to_boxes_batch_dims_and_validation():
    masks = torch.zeros(2, 3, 8, 10, dtype=torch.uint8)
    masks[1, 2, 2:5, 3:7] = 1
    boxes = masks_to_boxes(masks)
    assert boxes.shape == (2, 3, 4)
    assert boxes[1, 2].tolist() == [3.0, 2.0, 6.0, 4.0] and (boxes[0] == 0).all()
    with pytest.raises(ValueError, match=r"\[..., H, W\]"):
        masks_to_boxes(torch.ones(5, dtype=torch.bool))
