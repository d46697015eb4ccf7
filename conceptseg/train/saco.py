"""Read an SA-Co image dataset (or a plain COCO instance dataset) as training / evaluation examples.

SA-Co image format: one `images` entry per (image, noun phrase) pair with the phrase in `text_input`;
`annotations` reference the pair id, with `bbox` [x, y, w, h] normalised to the image size and COCO RLE
masks. Plain COCO (no `text_input`): every (image, category) combination becomes a pair whose phrase is the
category name, so categories absent from an image are negatives (COCO labels are exhaustive); boxes are in
pixels and masks may be polygons. Concept-world exemplar benchmarks add `exemplar_boxes` (normalised xywh)
and `exemplar_labels` per pair; with `prompt="exemplar"` these become the prompt, with the text "visual".
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from conceptseg.model.tokenizer import EXEMPLAR_TEXT
from conceptseg.train.data import Example

PROMPTS = ("text", "exemplar")


@dataclass
class Pair:
    """One (image, phrase) pair and its instances (boxes in pixels xyxy, masks as COCO segmentations)."""

    id: int
    file_name: str
    phrase: str
    height: int
    width: int
    boxes: list[list[float]] = field(default_factory=list)
    segmentations: list[object] = field(default_factory=list)
    exemplar_boxes: list[list[float]] = field(default_factory=list)  # xyxy pixels
    exemplar_labels: list[bool] = field(default_factory=list)


def decode_segmentation(segmentation: object, height: int, width: int) -> np.ndarray:
    """COCO segmentation (compressed or uncompressed RLE, or polygons) -> bool mask [height, width]."""
    if isinstance(segmentation, list):  # polygons: one list of x, y coordinates per part
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise TypeError(f"unsupported segmentation {str(segmentation)[:80]}: expected COCO RLE or polygons")
    return mask_utils.decode(rle).astype(bool)


def _xywh_to_xyxy(box: list[float], scale_x: float, scale_y: float) -> list[float]:
    x, y, w, h = box
    return [x * scale_x, y * scale_y, (x + w) * scale_x, (y + h) * scale_y]


def _read_saco_pairs(data: dict) -> list[Pair]:
    pairs = {}
    for record in data["images"]:
        height, width = int(record["height"]), int(record["width"])
        exemplars = [_xywh_to_xyxy(box, width, height) for box in record.get("exemplar_boxes", [])]
        labels = [bool(label) for label in record.get("exemplar_labels", [1] * len(exemplars))]
        pairs[record["id"]] = Pair(record["id"], record["file_name"], record["text_input"], height, width,
                                   exemplar_boxes=exemplars, exemplar_labels=labels)
    for annotation in data["annotations"]:
        pair = pairs[annotation["image_id"]]
        pair.boxes.append(_xywh_to_xyxy(annotation["bbox"], pair.width, pair.height))
        pair.segmentations.append(annotation["segmentation"])
    return list(pairs.values())


def _read_coco_pairs(data: dict) -> list[Pair]:
    by_image_category = defaultdict(list)
    for annotation in data["annotations"]:
        by_image_category[annotation["image_id"], annotation["category_id"]].append(annotation)
    pairs = []
    for image in data["images"]:
        for category in data["categories"]:
            pair = Pair(len(pairs) + 1, image["file_name"], category["name"], int(image["height"]), int(image["width"]))
            for annotation in by_image_category[image["id"], category["id"]]:
                pair.boxes.append(_xywh_to_xyxy(annotation["bbox"], 1.0, 1.0))
                pair.segmentations.append(annotation["segmentation"])
            pairs.append(pair)
    return pairs


class SacoDataset:
    """Examples of an SA-Co (or COCO) GT file whose `file_name`s are relative to `image_dir`.

    Instances with an empty box are dropped (they have no extent to regress to).
    """

    def __init__(self, gt_path: str | Path, image_dir: str | Path, prompt: str = "text") -> None:
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        data = json.loads(Path(gt_path).read_text())
        if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
            raise ValueError(f"{gt_path}: not a COCO / SA-Co GT file (needs 'images' and 'annotations')")
        is_saco = all("text_input" in record for record in data["images"])
        self.pairs = _read_saco_pairs(data) if is_saco else _read_coco_pairs(data)
        if prompt == "exemplar" and any(not pair.exemplar_boxes for pair in self.pairs):
            raise ValueError(f"{gt_path}: prompt='exemplar' needs 'exemplar_boxes' on every images entry")
        self.image_dir = Path(image_dir)
        self.prompt = prompt

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Example:
        pair = self.pairs[index]
        path = self.image_dir / pair.file_name
        if not path.is_file():
            raise FileNotFoundError(f"image {path} of pair {pair.id} not found; check the image directory")
        image = np.asarray(Image.open(path).convert("RGB"))
        if image.shape[:2] != (pair.height, pair.width):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]}, the GT says {pair.width}x{pair.height}")
        boxes = np.asarray(pair.boxes, dtype=np.float32).reshape(-1, 4)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        masks = [decode_segmentation(s, pair.height, pair.width) for s, kept in zip(pair.segmentations, keep) if kept]
        masks = np.stack(masks) if masks else np.zeros((0, pair.height, pair.width), dtype=bool)
        example = Example(image, pair.phrase, masks, boxes[keep])
        if self.prompt == "exemplar":
            example.phrase = EXEMPLAR_TEXT
            example.prompt_boxes = np.asarray(pair.exemplar_boxes, dtype=np.float32).reshape(-1, 4)
            example.prompt_labels = np.asarray(pair.exemplar_labels, dtype=bool)
        return example
