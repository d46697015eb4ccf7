"""conceptseg.io: one implementation per format (RLE, COCO results and datasets, SA-Co pairs, images)."""

import json

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_utils

from conceptseg.io.coco import coco_results, read_coco_pairs
from conceptseg.io.images import ImageLimits, load_image
from conceptseg.io.rle import compress, decode_mask, encode_mask
from conceptseg.io.saco_image import ImagePair, Instance, read_image_gt, write_image_gt


def random_mask(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width)) > 0.6


def test_rle_round_trips_and_is_json_ready():
    mask = random_mask(13, 17, seed=0)
    rle = encode_mask(mask)
    assert rle["size"] == [13, 17] and isinstance(rle["counts"], str)
    json.dumps(rle)
    np.testing.assert_array_equal(decode_mask(rle, 13, 17), mask)
    np.testing.assert_array_equal(decode_mask(encode_mask(np.zeros((4, 5), bool)), 4, 5), np.zeros((4, 5), bool))


def test_every_coco_segmentation_kind_decodes_to_the_same_mask():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:6, 3:9] = True
    runs, current, count = [], False, 0
    for value in mask.flatten(order="F"):  # uncompressed RLE: column-major run lengths, starting with zeros
        if value != current:
            runs.append(count)
            current, count = value, 0
        count += 1
    runs.append(count)
    polygon = [[3, 2, 9, 2, 9, 6, 3, 6]]  # x, y corners of the same rectangle, pixel edges
    for segmentation in ({"size": [10, 12], "counts": runs}, encode_mask(mask)):
        np.testing.assert_array_equal(decode_mask(segmentation, 10, 12), mask)
        assert compress(segmentation, 10, 12) == encode_mask(mask)
    assert abs(int(decode_mask(polygon, 10, 12).sum()) - int(mask.sum())) <= 10
    with pytest.raises(ValueError, match="unsupported segmentation"):
        decode_mask("nonsense", 10, 12)


def test_coco_results_hold_xywh_boxes_rle_scores_and_areas():
    masks = np.stack([random_mask(8, 9, seed=1), random_mask(8, 9, seed=2)])
    boxes = np.array([[1, 2, 5, 7], [0, 0, 9, 8]], dtype=np.float32)
    records = coco_results(masks, boxes, np.array([0.9, 0.4], dtype=np.float32), image_id=3, category_id=2)
    assert [r["bbox"] for r in records] == [[1, 2, 4, 5], [0, 0, 9, 8]]
    assert [r["image_id"] for r in records] == [3, 3] and {r["category_id"] for r in records} == {2}
    assert records[0]["score"] == pytest.approx(0.9) and isinstance(records[0]["score"], float)
    assert [r["area"] for r in records] == [int(m.sum()) for m in masks]
    np.testing.assert_array_equal(decode_mask(records[1]["segmentation"], 8, 9), masks[1])
    json.dumps(records)


def test_plain_coco_becomes_one_pair_per_image_and_category(tmp_path):
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:5] = True
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": 6, "width": 8},
                   {"id": 8, "file_name": "b.png", "height": 6, "width": 8}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 8, "category_id": 2, "bbox": [2, 1, 3, 3],
                         "segmentation": [[2, 1, 5, 1, 5, 4, 2, 4]], "iscrowd": 0}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    pairs = read_coco_pairs(path)
    assert [(p.file_name, p.text_input, len(p.instances)) for p in pairs.values()] == [
        ("a.png", "cat", 0), ("a.png", "dog", 0), ("b.png", "cat", 0), ("b.png", "dog", 1)]
    instance = pairs[4].instances[0]
    assert instance.box == [2, 1, 3, 3] and isinstance(instance.mask["counts"], str)
    assert mask_utils.area(instance.mask) == pytest.approx(mask.sum(), abs=4)


def test_saco_pairs_keep_exemplars_and_extra_fields(tmp_path):
    mask = random_mask(20, 30, seed=3)
    pair = ImagePair(1, "x.png", "red star", 20, 30, instances=[Instance(encode_mask(mask), [3, 4, 10, 8])],
                     exemplar_boxes=[[3, 4, 10, 8], [15, 5, 6, 6]], exemplar_labels=[True, False],
                     extra={"kind": "positive"})
    write_image_gt(tmp_path / "gt.json", [pair], info={"seed": 1})
    written = json.loads((tmp_path / "gt.json").read_text())
    assert written["info"] == {"seed": 1} and written["images"][0]["kind"] == "positive"
    assert written["images"][0]["exemplar_boxes"][0] == [0.1, 0.2, 10 / 30, 0.4]
    (read,) = read_image_gt(tmp_path / "gt.json").values()
    assert read.exemplar_labels == [True, False] and read.extra == {"kind": "positive"}
    np.testing.assert_allclose(read.exemplar_boxes, pair.exemplar_boxes, atol=1e-9)
    np.testing.assert_allclose(read.instances[0].box, [3, 4, 10, 8], atol=1e-9)


def test_image_rule_converts_grey_16_bit_and_rgba_alike():
    grey = np.random.default_rng(4).integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    for image in (grey, PIL.Image.fromarray(grey), PIL.Image.fromarray(grey.astype(np.uint16) * 257),
                  np.concatenate([rgb, grey[..., None]], axis=-1), grey.astype(np.uint16) * 257):
        np.testing.assert_array_equal(load_image(image), rgb)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))


def test_image_limits_are_checked_before_decoding(tmp_path):
    PIL.Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png").shape == (30, 40, 3)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(tmp_path / "small.png", ImageLimits(max_pixels=1000))
    with pytest.raises(ValueError, match="max_side"):
        load_image(tmp_path / "small.png", ImageLimits(max_side=32))
    assert load_image(np.zeros((30, 40, 3), np.uint8), ImageLimits(max_side=32)).shape == (30, 40, 3)
    with pytest.raises(ValueError, match="max_bytes"):
        load_image(tmp_path / "small.png", ImageLimits(max_bytes=10))
    PIL.Image.new("1", (30000, 30000)).save(tmp_path / "bomb.png")  # ~110 KB on disk, 900 MP decoded
    with pytest.raises(ValueError, match="bomb.png"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "missing.png")
