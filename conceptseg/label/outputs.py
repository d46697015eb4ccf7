"""Files assembled from the shards at the end of a run: errors.jsonl, COCO or SA-Co JSON, manifest.json.

Each is streamed from the shards, one shard in memory at a time, and written atomically. The JSON formats
hold the images; videos' masklets are in the Parquet shards only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from pycocotools import mask as mask_utils

from conceptseg.io.atomic import atomic_open
from conceptseg.label.shards import iter_item_entries, iter_rows

FORMATS = ("parquet", "coco", "saco")
OUTPUT_FILES = {"coco": "labels_coco.json", "saco": "labels_saco.json"}


def write_errors(out: Path, shards: range) -> int:
    """errors.jsonl: one line per item that could not be labelled (its path and the reason); returns the count."""
    count = 0
    with atomic_open(out / "errors.jsonl") as handle:
        for entry in iter_item_entries(out, shards):
            if entry["error"]:
                handle.write(json.dumps({"item": entry["path"], "item_index": entry["index"],
                                         "error": entry["error"]}) + "\n")
                count += 1
    return count


def count_outputs(out: Path, shards: range) -> dict:
    """Items (by kind and status) and instances (by concept) over the shards."""
    items, per_concept = Counter(), Counter()
    for entry in iter_item_entries(out, shards):
        items[entry["kind"] + "s"] += 1
        items["errors" if entry["error"] else "labelled"] += 1
    for row in iter_rows(out, shards, columns=["concept"]):  # not the masks: counting needs no decoding
        per_concept[row["concept"]] += 1
    return {"items": items["images"] + items["videos"], "images": items["images"], "videos": items["videos"],
            "labelled": items["labelled"], "errors": items["errors"], "instances": sum(per_concept.values()),
            "instances_per_concept": dict(sorted(per_concept.items()))}


def write_coco(out: Path, shards: range) -> Path:
    """A COCO dataset: one image per labelled image, one category per concept (ids in order of first use),
    annotations with RLE segmentation, XYWH box, area and score."""
    categories: dict[str, int] = {}
    for entry in _labelled_images(out, shards):
        for concept in entry["concepts"]:
            categories.setdefault(concept, len(categories) + 1)
    path = out / OUTPUT_FILES["coco"]
    with atomic_open(path) as handle:
        handle.write('{"images": ')
        _write_list(handle, ({"id": entry["index"], "file_name": entry["path"], "height": entry["height"],
                              "width": entry["width"]} for entry in _labelled_images(out, shards)))
        handle.write(', "categories": ')
        _write_list(handle, ({"id": number, "name": name} for name, number in categories.items()))
        handle.write(', "annotations": ')
        annotations = (
            {"id": number, "image_id": row["item_index"], "category_id": categories[row["concept"]],
             **_instance_fields(row, normalise=False)}
            for number, row in enumerate(_image_rows(out, shards), start=1)
        )
        _write_list(handle, annotations)
        handle.write("}")
    return path


def write_saco(out: Path, shards: range) -> Path:
    """SA-Co image format (as `conceptseg eval` reads it): one entry per (image, concept) pair with the phrase
    in `text_input`, the labels as its annotations (normalised box and area, RLE, plus the model's score).
    A pair without annotations is a negative."""
    pair_ids: dict[tuple[int, str], int] = {}
    for entry in _labelled_images(out, shards):
        for concept in entry["concepts"]:
            pair_ids[entry["index"], concept] = len(pair_ids) + 1

    def pairs() -> Iterator[dict]:
        for entry in _labelled_images(out, shards):
            for concept in entry["concepts"]:
                yield {"id": pair_ids[entry["index"], concept], "file_name": entry["path"], "text_input": concept,
                       "height": entry["height"], "width": entry["width"], "is_instance_exhaustive": 1,
                       "is_pixel_exhaustive": 1}

    path = out / OUTPUT_FILES["saco"]
    with atomic_open(path) as handle:
        handle.write('{"images": ')
        _write_list(handle, pairs())
        handle.write(', "annotations": ')
        annotations = (
            {"id": number, "image_id": pair_ids[row["item_index"], row["concept"]], "category_id": 1,
             "iscrowd": 0, **_instance_fields(row, normalise=True)}
            for number, row in enumerate(_image_rows(out, shards), start=1)
        )
        _write_list(handle, annotations)
        handle.write(', "categories": [{"id": 1, "name": "object"}]}')
    return path


def _instance_fields(row: dict, normalise: bool) -> dict:
    height, width = row["height"], row["width"]
    rle = {"size": [height, width], "counts": row["mask"]}
    x1, y1, x2, y2 = row["box"]
    box, area = [x1, y1, x2 - x1, y2 - y1], float(mask_utils.area({**rle, "counts": row["mask"].encode()}))
    if normalise:
        box, area = [box[0] / width, box[1] / height, box[2] / width, box[3] / height], area / (height * width)
    return {"bbox": box, "area": area, "segmentation": rle, "score": row["score"]}


def _labelled_images(out: Path, shards: range) -> Iterator[dict]:
    return (entry for entry in iter_item_entries(out, shards) if entry["kind"] == "image" and not entry["error"])


def _image_rows(out: Path, shards: range) -> Iterator[dict]:
    return (row for row in iter_rows(out, shards) if row["kind"] == "image")


def _write_list(handle: IO, elements: Iterable[dict]) -> None:
    handle.write("[")
    for number, element in enumerate(elements):
        handle.write((", " if number else "") + json.dumps(element))
    handle.write("]")
