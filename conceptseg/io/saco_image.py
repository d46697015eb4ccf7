"""The SA-Co image format (Gold/Silver ground truth) and COCO results for predictions.

Ground truth is COCO-derived. `images[]` holds one entry per (image, noun phrase) pair, with the phrase in
`text_input`; `annotations[]` holds the instances of a pair (`image_id` is the pair id), with `bbox`
[x, y, w, h] and `area` normalised to the image size and `segmentation` a COCO RLE at the original size.
A pair without annotations is a negative. Predictions are COCO results: a list of
{image_id (pair id), category_id, segmentation (RLE), bbox (xywh pixels), score}.

Exemplar benchmarks (not part of the official format) add `exemplar_boxes` (normalised [x, y, w, h] per box)
and `exemplar_labels` (1 positive, 0 negative) to an `images` entry. Other extra fields of an entry (e.g. the
concept world's `kind`) are kept in `ImagePair.extra` and written back.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pycocotools import mask as mask_utils

from conceptseg.io.records import (
    PathLike,
    as_box,
    as_flag,
    as_int,
    as_number,
    as_rle,
    describe,
    load_json,
    require_keys,
    require_type,
)

# Released files store normalised boxes as float32, so x + w can exceed 1 by rounding.
NORMALISED_BOX_TOLERANCE = 1e-3

PAIR_KEYS = ("id", "file_name", "text_input", "height", "width", "is_instance_exhaustive")
KNOWN_PAIR_KEYS = (*PAIR_KEYS, "is_pixel_exhaustive", "exemplar_boxes", "exemplar_labels")
ANNOTATION_KEYS = ("id", "image_id", "bbox", "segmentation")
PREDICTION_KEYS = ("image_id", "segmentation", "score")


@dataclass
class Instance:
    """One ground-truth instance: a COCO RLE mask, its [x, y, w, h] box in pixels, and the crowd flag."""

    mask: dict
    box: list[float]
    iscrowd: bool = False


@dataclass
class Detection:
    """One predicted instance: a COCO RLE mask, its [x, y, w, h] box in pixels, and its score."""

    mask: dict
    box: list[float]
    score: float


@dataclass
class ImagePair:
    """One SA-Co image datapoint: an (image, noun phrase) pair and its ground-truth instances.

    exemplar_boxes: [x, y, w, h] pixel boxes of an exemplar prompt, with exemplar_labels (True = positive).
    extra: the entry's other fields, written back as they are.
    """

    id: int
    file_name: str
    text_input: str
    height: int
    width: int
    is_instance_exhaustive: bool = True
    instances: list[Instance] = field(default_factory=list)
    exemplar_boxes: list[list[float]] = field(default_factory=list)
    exemplar_labels: list[bool] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def read_image_gt(path: PathLike, data: dict | None = None) -> dict[int, ImagePair]:
    """Read an SA-Co image GT file into {pair id: ImagePair}, in file order. Raises ValueError on bad records.

    data: the file's content when it is already loaded (`path` then only names it in errors).
    """
    data = require_keys(load_json(path) if data is None else data, ("images", "annotations"), str(path))
    pairs: dict[int, ImagePair] = {}
    for index, record in enumerate(require_type(data["images"], list, f"{path}: 'images'")):
        pair = _read_pair(record, describe(f"{path}: images[{index}]", record, ("id",)))
        if pair.id in pairs:
            raise ValueError(f"{path}: images[{index}]: duplicate image-NP id {pair.id}")
        pairs[pair.id] = pair
    annotation_ids = set()
    for index, record in enumerate(require_type(data["annotations"], list, f"{path}: 'annotations'")):
        where = describe(f"{path}: annotations[{index}]", record, ("id", "image_id"))
        require_keys(record, ANNOTATION_KEYS, where)
        if record["id"] in annotation_ids:
            raise ValueError(f"{where}: duplicate annotation id")
        annotation_ids.add(record["id"])
        pair = pairs.get(as_int(record["image_id"], f"{where}: image_id"))
        if pair is None:
            raise ValueError(f"{where}: image_id is not the id of any entry in 'images'")
        pair.instances.append(_read_instance(record, pair, where))
    return pairs


def read_image_predictions(
    source: PathLike | list[dict], pairs: dict[int, ImagePair]
) -> dict[int, list[Detection]]:
    """Read COCO results (a file or an already loaded list) into {pair id: detections}.

    Every prediction must name a pair of `pairs` and carry an RLE mask of that image's size. A missing
    `bbox` is derived from the mask; `category_id` is ignored (a pair has a single phrase).
    """
    name = "predictions" if isinstance(source, list) else str(source)
    records = require_type(source if isinstance(source, list) else load_json(source), list, name)
    detections: dict[int, list[Detection]] = defaultdict(list)
    for index, record in enumerate(records):
        where = describe(f"{name}: [{index}]", record, ("image_id",))
        require_keys(record, PREDICTION_KEYS, where)
        image_id = as_int(record["image_id"], f"{where}: image_id")
        pair = pairs.get(image_id)
        if pair is None:
            raise ValueError(f"{where}: image_id is not an image-NP id of the ground truth")
        mask = as_rle(record["segmentation"], pair.height, pair.width, f"{where}: segmentation")
        if "bbox" in record:
            box = as_box(record["bbox"], f"{where}: bbox")
        else:
            box = mask_utils.toBbox(mask).tolist()
        detections[image_id].append(Detection(mask, box, as_number(record["score"], f"{where}: score")))
    return detections


def write_image_gt(path: PathLike, pairs: Iterable[ImagePair], info: dict[str, Any] | None = None) -> None:
    """Write pairs as an SA-Co image GT file (normalised boxes and areas, category_id 1)."""
    images, annotations = [], []
    for pair in pairs:
        scale = [pair.width, pair.height, pair.width, pair.height]
        entry = {
            "id": pair.id,
            "file_name": pair.file_name,
            "text_input": pair.text_input,
            "height": pair.height,
            "width": pair.width,
            "is_instance_exhaustive": int(pair.is_instance_exhaustive),
            "is_pixel_exhaustive": int(pair.is_instance_exhaustive),
            **pair.extra,
        }
        if pair.exemplar_boxes:
            entry["exemplar_boxes"] = [[value / size for value, size in zip(box, scale)] for box in pair.exemplar_boxes]
            entry["exemplar_labels"] = [int(label) for label in pair.exemplar_labels]
        images.append(entry)
        for instance in pair.instances:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": pair.id,
                    "bbox": [value / size for value, size in zip(instance.box, scale)],
                    "area": float(mask_utils.area(instance.mask)) / (pair.height * pair.width),
                    "segmentation": instance.mask,
                    "category_id": 1,
                    "iscrowd": int(instance.iscrowd),
                }
            )
    document = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    if info is not None:
        document = {"info": info, **document}
    with open(path, "w") as handle:
        json.dump(document, handle)


def _read_pair(record: object, where: str) -> ImagePair:
    require_keys(record, PAIR_KEYS, where)
    height = as_int(record["height"], f"{where}: height", minimum=1)
    width = as_int(record["width"], f"{where}: width", minimum=1)
    exemplars = [_pixel_box(box, width, height, where, f"exemplar_boxes[{i}]")
                 for i, box in enumerate(require_type(record.get("exemplar_boxes", []), list, f"{where}: exemplar_boxes"))]
    labels = record.get("exemplar_labels", [1] * len(exemplars))
    if len(require_type(labels, list, f"{where}: exemplar_labels")) != len(exemplars):
        raise ValueError(f"{where}: {len(labels)} exemplar_labels for {len(exemplars)} exemplar_boxes")
    return ImagePair(
        id=as_int(record["id"], f"{where}: id"),
        file_name=require_type(record["file_name"], str, f"{where}: file_name"),
        text_input=require_type(record["text_input"], str, f"{where}: text_input"),
        height=height,
        width=width,
        is_instance_exhaustive=as_flag(record["is_instance_exhaustive"], f"{where}: is_instance_exhaustive"),
        exemplar_boxes=exemplars,
        exemplar_labels=[as_flag(label, f"{where}: exemplar_labels") for label in labels],
        extra={key: value for key, value in record.items() if key not in KNOWN_PAIR_KEYS},
    )


def _pixel_box(value: Any, width: int, height: int, where: str, name: str) -> list[float]:
    """A normalised [x, y, w, h] box (field `name` of a record) -> pixels, refusing boxes that are not normalised."""
    x, y, w, h = as_box(value, f"{where}: {name}")
    tolerance = NORMALISED_BOX_TOLERANCE
    if min(x, y) < -tolerance or x + w > 1 + tolerance or y + h > 1 + tolerance:
        raise ValueError(
            f"{where}: {name} {value} is not normalised; SA-Co GT stores [x, y, w, h] divided by the image width "
            "and height"
        )
    return [x * width, y * height, w * width, h * height]


def _read_instance(record: dict, pair: ImagePair, where: str) -> Instance:
    box = _pixel_box(record["bbox"], pair.width, pair.height, where, "bbox")
    mask = as_rle(record["segmentation"], pair.height, pair.width, f"{where}: segmentation")
    # pycocotools treats a missing `iscrowd` as 0, and so does the official scorer
    return Instance(mask, box, as_flag(record.get("iscrowd", 0), f"{where}: iscrowd"))
