"""COCO: result records for predictions, and plain COCO instance datasets read as (image, phrase) pairs."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from conceptseg.io.records import PathLike, as_box, as_int, describe, load_json, require_keys, require_type
from conceptseg.io.rle import compress, encode_mask
from conceptseg.io.saco_image import ImagePair, Instance


def coco_results(
    masks: np.ndarray, boxes: np.ndarray, scores: np.ndarray, image_id: int | str, category_id: int = 1
) -> list[dict[str, Any]]:
    """COCO result dicts of N instances: masks bool [N, H, W], boxes [N, 4] XYXY pixels, scores [N].

    Each record holds the compressed RLE segmentation (counts a str), bbox [x, y, w, h] in pixels, the score
    and the mask area in pixels.
    """
    records = []
    for mask, box, score in zip(masks, boxes, scores):
        x1, y1, x2, y2 = (float(v) for v in box)
        records.append({
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": encode_mask(mask),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(score),
            "area": int(np.count_nonzero(mask)),
        })
    return records


def read_coco_pairs(path: PathLike, data: dict | None = None) -> dict[int, ImagePair]:
    """A COCO instance dataset as SA-Co pairs: every (image, category) combination is a pair whose phrase is the
    category name, so categories absent from an image are negatives (COCO labels are exhaustive). Pair ids count
    from 1 in image order, then category order; pixel boxes; polygon masks become RLE.

    data: the file's content when it is already loaded (`path` then only names it in errors).
    """
    data = require_keys(load_json(path) if data is None else data, ("images", "annotations", "categories"),
                        str(path))
    by_image_category = defaultdict(list)
    for index, annotation in enumerate(require_type(data["annotations"], list, f"{path}: 'annotations'")):
        where = describe(f"{path}: annotations[{index}]", annotation, ("id", "image_id"))
        require_keys(annotation, ("image_id", "category_id", "bbox", "segmentation"), where)
        by_image_category[annotation["image_id"], annotation["category_id"]].append((annotation, where))
    pairs: dict[int, ImagePair] = {}
    for index, image in enumerate(require_type(data["images"], list, f"{path}: 'images'")):
        where = describe(f"{path}: images[{index}]", image, ("id",))
        require_keys(image, ("id", "file_name", "height", "width"), where)
        height = as_int(image["height"], f"{where}: height", minimum=1)
        width = as_int(image["width"], f"{where}: width", minimum=1)
        for category in data["categories"]:
            pair = ImagePair(len(pairs) + 1, image["file_name"], category["name"], height, width)
            for annotation, where in by_image_category[image["id"], category["id"]]:
                try:
                    mask = compress(annotation["segmentation"], height, width)
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from error
                pair.instances.append(Instance(mask, as_box(annotation["bbox"], f"{where}: bbox"),
                                               bool(annotation.get("iscrowd", 0))))
            pairs[pair.id] = pair
    return pairs
