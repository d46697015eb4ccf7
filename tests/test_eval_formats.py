"""SA-Co readers and writers: round trips, and clear errors naming the bad record of a malformed file."""

import copy
import json

import numpy as np
import pytest

from conceptseg.eval import evaluate
from conceptseg.io.rle import encode_mask
from conceptseg.io.saco_image import read_image_gt, write_image_gt
from conceptseg.io.saco_video import read_video_gt, read_video_predictions, write_video_gt

H, W = 6, 8


def square_mask(height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[1:4, 2:6] = 1  # box [2, 1, 4, 3] in pixels
    return mask


def square_rle(height: int = H, width: int = W) -> dict:
    return encode_mask(square_mask(height, width))


IMAGE_GT = {
    "images": [
        {"id": 7, "file_name": "a.jpg", "text_input": "cat", "height": H, "width": W, "queried_category": "0",
         "is_instance_exhaustive": 1, "is_pixel_exhaustive": 1},
        {"id": 8, "file_name": "a.jpg", "text_input": "dog", "height": H, "width": W, "queried_category": "1",
         "is_instance_exhaustive": 1, "is_pixel_exhaustive": 1},
    ],
    "annotations": [
        {"id": 1, "image_id": 7, "bbox": [2 / W, 1 / H, 4 / W, 3 / H], "area": 12 / (H * W),
         "segmentation": square_rle(), "category_id": 1, "iscrowd": 0, "source": "manual"},
    ],
    "categories": [{"id": 1, "name": "object"}],
}
IMAGE_PREDICTIONS = [{"image_id": 7, "category_id": 1, "segmentation": square_rle(), "bbox": [2, 1, 4, 3], "score": 0.9}]

VIDEO_GT = {
    "info": {},
    "videos": [{"id": 3, "video_name": "v", "file_names": ["0.jpg", "1.jpg"], "height": H, "width": W, "length": 2}],
    "annotations": [
        {"id": 1, "video_id": 3, "category_id": 5, "noun_phrase": "cat", "segmentations": [square_rle(), None],
         "bboxes": [[2, 1, 4, 3], None], "areas": [12, None], "iscrowd": 0, "height": H, "width": W},
    ],
    "categories": [{"id": 5, "name": "cat"}, {"id": 6, "name": "dog"}],
    "video_np_pairs": [
        {"id": 1, "video_id": 3, "category_id": 5, "noun_phrase": "cat", "num_masklets": 1},
        {"id": 2, "video_id": 3, "category_id": 6, "noun_phrase": "dog", "num_masklets": 0},
    ],
}
VIDEO_PREDICTIONS = [
    {"video_id": 3, "category_id": 5, "score": 0.8, "segmentations": [square_rle(), None],
     "bboxes": [[2, 1, 4, 3], None], "areas": [12, None]},
]


def write(tmp_path, name: str, document) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def broken(document, edit) -> object:
    document = copy.deepcopy(document)
    edit(document)
    return document


def test_reads_the_documented_image_format(tmp_path):
    pairs = read_image_gt(write(tmp_path, "gt.json", IMAGE_GT))
    assert list(pairs) == [7, 8]
    assert pairs[7].text_input == "cat" and pairs[8].instances == []
    assert pairs[7].instances[0].box == pytest.approx([2, 1, 4, 3])  # normalised box scaled to pixels
    # one TP: the official 1e-4 smoothing keeps a perfect score at 99.985
    assert evaluate(write(tmp_path, "gt.json", IMAGE_GT), IMAGE_PREDICTIONS)["cgF1"] == pytest.approx(100, abs=0.02)


def test_image_gt_round_trip(tmp_path):
    pairs = read_image_gt(write(tmp_path, "gt.json", IMAGE_GT))
    write_image_gt(tmp_path / "copy.json", pairs.values())
    written = json.loads((tmp_path / "copy.json").read_text())
    assert written["annotations"][0]["bbox"] == pytest.approx(IMAGE_GT["annotations"][0]["bbox"])
    assert written["annotations"][0]["area"] == pytest.approx(IMAGE_GT["annotations"][0]["area"])
    assert read_image_gt(tmp_path / "copy.json") == pairs


def test_video_gt_round_trip(tmp_path):
    pairs = read_video_gt(write(tmp_path, "gt.json", VIDEO_GT))
    assert not pairs[(3, 6)].masklets and len(pairs[(3, 5)].masklets) == 1
    write_video_gt(tmp_path / "copy.json", pairs.values())
    copied = read_video_gt(tmp_path / "copy.json")
    assert copied.keys() == pairs.keys()
    assert copied[(3, 5)].masklets[0].masks == pairs[(3, 5)].masklets[0].masks


def test_uncompressed_rle_is_compressed(tmp_path):
    flat = square_mask().flatten(order="F")  # COCO runs go down columns, zeros first
    boundaries = [0, *(np.flatnonzero(np.diff(flat)) + 1), len(flat)]
    runs = ([0] if flat[0] else []) + np.diff(boundaries).tolist()
    uncompressed = {"size": [H, W], "counts": runs}
    document = broken(VIDEO_GT, lambda d: d["annotations"][0]["segmentations"].__setitem__(0, uncompressed))
    assert read_video_gt(write(tmp_path, "gt.json", document))[(3, 5)].masklets[0].masks[0] == square_rle()


IMAGE_GT_ERRORS = [
    (lambda d: d["images"][1].pop("text_input"), r"images\[1\] \(id=8\): missing key\(s\) 'text_input'"),
    (lambda d: d["images"][0].update(height=7), r"annotations\[0\] \(id=1, image_id=7\): segmentation: RLE size"),
    (lambda d: d["annotations"][0].update(bbox=[2, 1, 4, 3]), r"annotations\[0\] .*bbox .* is not normalised"),
    (lambda d: d["annotations"][0].update(image_id=99), r"annotations\[0\] .*image_id is not the id of any"),
    (lambda d: d["annotations"][0].update(segmentation=[[0, 0, 1, 1, 2, 0]]), r"annotations\[0\] .*polygon"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), r"annotations\[1\] .*duplicate annotation id"),
    (lambda d: d["images"][1].update(id=7), r"images\[1\]: duplicate image-NP id 7"),
    (lambda d: d["images"][0].update(is_instance_exhaustive="yes"), r"images\[0\] .*is_instance_exhaustive"),
    (lambda d: d.pop("annotations"), r"missing key\(s\) 'annotations'"),
]


@pytest.mark.parametrize("edit, message", IMAGE_GT_ERRORS)
def test_malformed_image_gt_names_the_record(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        evaluate(write(tmp_path, "gt.json", broken(IMAGE_GT, edit)), IMAGE_PREDICTIONS)


PREDICTION_ERRORS = [
    (lambda p: p.append({**p[0], "image_id": 999}), r"\[1\] \(image_id=999\): image_id is not an image-NP id"),
    (lambda p: p[0].update(segmentation=square_rle(W, H)), r"\[0\] \(image_id=7\): segmentation: RLE size \[8, 6\]"),
    (lambda p: p[0].pop("score"), r"\[0\] \(image_id=7\): missing key\(s\) 'score'"),
    (lambda p: p[0].update(score="high"), r"\[0\] \(image_id=7\): score: expected a finite number"),
    (lambda p: p[0].update(bbox=[1, 2, 3]), r"\[0\] \(image_id=7\): bbox: expected a box"),
]


@pytest.mark.parametrize("edit, message", PREDICTION_ERRORS)
def test_malformed_predictions_name_the_record(tmp_path, edit, message):
    pred_path = write(tmp_path, "pred.json", broken(IMAGE_PREDICTIONS, edit))
    with pytest.raises(ValueError, match=r"pred\.json: " + message):
        evaluate(write(tmp_path, "gt.json", IMAGE_GT), pred_path)


def test_invalid_json_names_the_file(tmp_path):
    (tmp_path / "gt.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"gt\.json: not valid JSON"):
        evaluate(tmp_path / "gt.json", IMAGE_PREDICTIONS)


def test_gt_sets_must_describe_the_same_pairs(tmp_path):
    other = broken(IMAGE_GT, lambda d: d["images"].pop(1))
    with pytest.raises(ValueError, match=r"b\.json: has no image-NP pair with id 8"):
        evaluate([write(tmp_path, "a.json", IMAGE_GT), write(tmp_path, "b.json", other)], IMAGE_PREDICTIONS)


VIDEO_GT_ERRORS = [
    (lambda d: d["annotations"][0]["segmentations"].pop(), r"annotations\[0\] .*segmentations has 1 entries but"),
    (lambda d: d["video_np_pairs"][1].update(num_masklets=2), r"video_np_pairs\[1\] .*num_masklets is 2 but"),
    (lambda d: d["annotations"][0].update(category_id=9), r"annotations\[0\] .*not listed in 'video_np_pairs'"),
    (lambda d: d["videos"][0].pop("length") and d["videos"][0].pop("file_names"), r"videos\[0\] \(id=3\): needs"),
    (lambda d: d["annotations"][0]["segmentations"].__setitem__(1, {"size": [H, W], "counts": [1, 2]}),
     r"segmentations\[1\]: uncompressed RLE runs sum to 3, expected 48"),
]


@pytest.mark.parametrize("edit, message", VIDEO_GT_ERRORS)
def test_malformed_video_gt_names_the_record(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        read_video_gt(write(tmp_path, "gt.json", broken(VIDEO_GT, edit)))


VIDEO_PREDICTION_ERRORS = [
    (lambda p: p[0].update(category_id=42), r"\[0\] \(video_id=3, category_id=42\): this .* pair is not in"),
    (lambda p: p[0]["bboxes"].__setitem__(1, [0, 0, 1, 1]), r"\[0\] .*frame 1 has a mask without a box or a box"),
    (lambda p: p[0].update(segmentations=[square_rle()] * 3), r"\[0\] .*segmentations has 3 entries"),
]


@pytest.mark.parametrize("edit, message", VIDEO_PREDICTION_ERRORS)
def test_malformed_video_predictions_name_the_record(tmp_path, edit, message):
    pairs = read_video_gt(write(tmp_path, "gt.json", VIDEO_GT))
    with pytest.raises(ValueError, match=message):
        read_video_predictions(broken(VIDEO_PREDICTIONS, edit), pairs)


def test_video_needs_a_single_gt_file(tmp_path):
    path = write(tmp_path, "gt.json", VIDEO_GT)
    with pytest.raises(ValueError, match="one GT file"):
        evaluate([path, path], VIDEO_PREDICTIONS, video=True)
