"""The SA-Co/VEval video format (YT-VIS-like ground truth) and YT-VIS results for predictions.

Ground truth: `videos[{id, height, width, length, file_names}]`; `annotations[]` are the positive masklets
{id, video_id, category_id, segmentations[T] (RLE or null), bboxes[T] (xywh pixels or null), iscrowd};
`video_np_pairs[{id, video_id, category_id, noun_phrase, num_masklets}]` lists every evaluated (video,
phrase) pair, `num_masklets = 0` marking a negative. Predictions are one entry per masklet:
{video_id, category_id, score, segmentations[T], bboxes[T], areas[T]}.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
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

PairKey = tuple[int, int]  # (video_id, category_id)

VIDEO_KEYS = ("id", "height", "width")
PAIR_KEYS = ("video_id", "category_id", "num_masklets")
ANNOTATION_KEYS = ("id", "video_id", "category_id", "segmentations")
PREDICTION_KEYS = ("video_id", "category_id", "score", "segmentations")


@dataclass
class Masklet:
    """One object track over T frames."""

    masks: list[dict | None]  # per frame: compressed COCO RLE, None where the object is absent
    boxes: np.ndarray  # [T, 4] xywh in pixels; zeros where the box is null
    has_box: np.ndarray  # [T] bool; False where the box is null
    iscrowd: bool = False
    score: float = 1.0

    @cached_property
    def mask_areas(self) -> np.ndarray:
        """[T] mask area in pixels, 0 where absent."""
        present = [t for t, mask in enumerate(self.masks) if mask is not None]
        areas = np.zeros(len(self.masks))
        if present:
            areas[present] = mask_utils.area([self.masks[t] for t in present])
        return areas


@dataclass
class VideoPair:
    """One VEval datapoint: a (video, noun phrase) pair and its GT masklets (none for a negative).

    file_names: the video's frame files (relative to the frame folder), where the file lists them.
    extra: other fields of the pair's `video_np_pairs` entry, written back as they are.
    """

    video_id: int
    category_id: int
    noun_phrase: str
    num_frames: int
    height: int
    width: int
    masklets: list[Masklet] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def read_video_gt(path: PathLike) -> dict[PairKey, VideoPair]:
    """Read a VEval GT file into {(video_id, category_id): VideoPair}. Raises ValueError on bad records."""
    data = require_keys(load_json(path), ("videos", "annotations", "video_np_pairs"), str(path))
    videos = {}
    for index, record in enumerate(require_type(data["videos"], list, f"{path}: 'videos'")):
        where = describe(f"{path}: videos[{index}]", record, ("id",))
        require_keys(record, VIDEO_KEYS, where)
        video_id = as_int(record["id"], f"{where}: id")
        height = as_int(record["height"], f"{where}: height", minimum=1)
        width = as_int(record["width"], f"{where}: width", minimum=1)
        file_names = require_type(record.get("file_names", []), list, f"{where}: file_names")
        videos[video_id] = (_num_frames(record, where), height, width, file_names)
    pairs: dict[PairKey, VideoPair] = {}
    listed_masklets: dict[PairKey, tuple[str, int]] = {}
    for index, record in enumerate(require_type(data["video_np_pairs"], list, f"{path}: 'video_np_pairs'")):
        where = describe(f"{path}: video_np_pairs[{index}]", record, ("id", "video_id", "category_id"))
        key = _pair_key(require_keys(record, PAIR_KEYS, where), where)
        if key[0] not in videos:
            raise ValueError(f"{where}: video_id is not the id of any entry in 'videos'")
        if key in pairs:
            raise ValueError(f"{where}: the same (video_id, category_id) pair is listed twice")
        num_frames, height, width, file_names = videos[key[0]]
        extra = {k: v for k, v in record.items() if k not in (*PAIR_KEYS, "id", "noun_phrase")}
        pairs[key] = VideoPair(*key, str(record.get("noun_phrase", "")), num_frames, height, width,
                               file_names=file_names, extra=extra)
        listed_masklets[key] = (where, as_int(record["num_masklets"], f"{where}: num_masklets", minimum=0))
    for index, record in enumerate(require_type(data["annotations"], list, f"{path}: 'annotations'")):
        where = describe(f"{path}: annotations[{index}]", record, ("id", "video_id", "category_id"))
        key = _pair_key(require_keys(record, ANNOTATION_KEYS, where), where)
        if key not in pairs:
            raise ValueError(f"{where}: the (video_id, category_id) pair is not listed in 'video_np_pairs'")
        iscrowd = as_flag(record.get("iscrowd", 0), f"{where}: iscrowd")
        pairs[key].masklets.append(_read_masklet(record, pairs[key], where, iscrowd=iscrowd))
    for key, (where, num_masklets) in listed_masklets.items():
        if (num_masklets == 0) != (not pairs[key].masklets):
            raise ValueError(
                f"{where}: num_masklets is {num_masklets} but the file has {len(pairs[key].masklets)} "
                "annotations for this pair (0 must mean a negative pair)"
            )
    return pairs


def read_video_predictions(
    source: PathLike | list[dict], pairs: dict[PairKey, VideoPair]
) -> dict[PairKey, list[Masklet]]:
    """Read YT-VIS results (a file or an already loaded list) into {(video_id, category_id): masklets}.

    Each prediction must name a pair of `pairs` and give one entry per frame. Missing `bboxes` are derived
    from the masks; a frame's mask and box must both be null or both be given.
    """
    name = "predictions" if isinstance(source, list) else str(source)
    records = require_type(source if isinstance(source, list) else load_json(source), list, name)
    masklets: dict[PairKey, list[Masklet]] = defaultdict(list)
    for index, record in enumerate(records):
        where = describe(f"{name}: [{index}]", record, ("video_id", "category_id"))
        key = _pair_key(require_keys(record, PREDICTION_KEYS, where), where)
        if key not in pairs:
            raise ValueError(f"{where}: this (video_id, category_id) pair is not in the GT's 'video_np_pairs'")
        score = as_number(record["score"], f"{where}: score")
        masklet = _read_masklet(record, pairs[key], where, score=score)
        absent = np.array([mask is None for mask in masklet.masks])
        if "bboxes" in record and np.any(absent == masklet.has_box):
            frame = int(np.flatnonzero(absent == masklet.has_box)[0])
            raise ValueError(f"{where}: frame {frame} has a mask without a box or a box without a mask")
        masklets[key].append(masklet)
    return masklets


def write_video_gt(path: PathLike, pairs: Iterable[VideoPair], info: dict[str, Any] | None = None) -> None:
    """Write pairs as a VEval GT file (one `videos` entry per video id, per-frame areas included, one category
    per noun phrase)."""
    videos, annotations, listed, categories = {}, [], [], {}
    for pair in pairs:
        videos[pair.video_id] = {
            "id": pair.video_id, "height": pair.height, "width": pair.width, "length": pair.num_frames,
            **({"file_names": pair.file_names} if pair.file_names else {}),
        }
        categories[pair.category_id] = pair.noun_phrase
        for masklet in pair.masklets:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": pair.video_id,
                    "category_id": pair.category_id,
                    "noun_phrase": pair.noun_phrase,
                    "segmentations": masklet.masks,
                    "bboxes": [box.tolist() if given else None for box, given in zip(masklet.boxes, masklet.has_box)],
                    "areas": [None if m is None else a for m, a in zip(masklet.masks, masklet.mask_areas.tolist())],
                    "iscrowd": int(masklet.iscrowd),
                    "height": pair.height,
                    "width": pair.width,
                }
            )
        listed.append(
            {
                "id": len(listed) + 1,
                "video_id": pair.video_id,
                "category_id": pair.category_id,
                "noun_phrase": pair.noun_phrase,
                "num_masklets": len(pair.masklets),
                **pair.extra,
            }
        )
    document = {"videos": list(videos.values()), "annotations": annotations, "video_np_pairs": listed,
                "categories": [{"id": cid, "name": phrase} for cid, phrase in categories.items()]}
    if info is not None:
        document = {"info": info, **document}
    with open(path, "w") as handle:
        json.dump(document, handle)


def _num_frames(record: dict, where: str) -> int:
    if "length" in record:
        return as_int(record["length"], f"{where}: length", minimum=1)
    if "file_names" in record:
        return len(require_type(record["file_names"], list, f"{where}: file_names"))
    raise ValueError(f"{where}: needs 'length' or 'file_names' to know its number of frames")


def _pair_key(record: dict, where: str) -> PairKey:
    return as_int(record["video_id"], f"{where}: video_id"), as_int(record["category_id"], f"{where}: category_id")


def _read_masklet(record: dict, pair: VideoPair, where: str, iscrowd: bool = False, score: float = 1.0) -> Masklet:
    masks = [
        None if rle is None else as_rle(rle, pair.height, pair.width, f"{where}: segmentations[{t}]")
        for t, rle in enumerate(_per_frame(record, "segmentations", pair, where))
    ]
    if "bboxes" in record:
        raw = _per_frame(record, "bboxes", pair, where)
        has_box = np.array([box is not None for box in raw], dtype=bool)
        boxes = [[0.0] * 4 if box is None else as_box(box, f"{where}: bboxes[{t}]") for t, box in enumerate(raw)]
    else:
        has_box = np.array([mask is not None for mask in masks], dtype=bool)
        boxes = [[0.0] * 4 if mask is None else mask_utils.toBbox(mask).tolist() for mask in masks]
    return Masklet(masks, np.array(boxes, dtype=np.float64).reshape(-1, 4), has_box, iscrowd, score)


def _per_frame(record: dict, key: str, pair: VideoPair, where: str) -> list:
    values = require_type(record[key], list, f"{where}: {key}")
    if len(values) != pair.num_frames:
        raise ValueError(f"{where}: {key} has {len(values)} entries but video {pair.video_id} has {pair.num_frames} frames")
    return values
