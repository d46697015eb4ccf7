"""Write concept-world benchmarks to disk in the SA-Co formats that `conceptseg.eval` reads.

Images (SA-Co/Gold style, COCO-derived): one `images` entry per (image, noun phrase) pair; negatives are pairs
without annotations; boxes are [x, y, w, h] normalised by the image size, `area` is normalised too; masks are
compressed COCO RLE with `counts` as a str. Every pair here has its own PNG under `<out_dir>/images/`, and
`file_name` is relative to that folder.

Exemplar benchmarks (`prompt="exemplar"`) add two fields to each `images` entry, not part of the official
format: `exemplar_boxes` (normalised [x, y, w, h] per box) and `exemplar_labels` (1 = positive, 0 = negative).
Every exemplar pair is a positive (the boxed object is itself a target), so image-level metrics (IL_MCC)
are degenerate on such a file; score it with pmF1 or mix it with text negatives.

Video (VEval, YT-VIS-like): `videos`, positive masklets in `annotations` (per-frame RLE, pixel [x, y, w, h]
boxes and pixel areas, `None` where the track is absent), `categories` mapping each noun phrase to an id, and
`video_np_pairs` with `num_masklets = 0` marking negatives. Frames are under `<out_dir>/frames/` and
`file_names` are relative to that folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from conceptseg.data.synthetic import ConceptWorld, Sample

_PROMPTS = ("text", "exemplar")
_FRAME_FORMATS = ("png", "jpg")


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a bool mask [H, W], with `counts` as a str so it can be written to JSON."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("utf-8")}


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(value) for value in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _normalised_xywh(box: np.ndarray, size: int) -> list[float]:
    return [value / size for value in _xywh(box)]


def _image_entry(sample: Sample, pair_id: int, file_name: str, prompt: str) -> dict:
    size = sample.image.shape[0]
    entry = {
        "id": pair_id,
        "file_name": file_name,
        "text_input": sample.phrase,
        "height": size,
        "width": size,
        "queried_category": sample.concept.with_number(plural=False).text,
        "is_instance_exhaustive": 1,
        "is_pixel_exhaustive": 1,
        "kind": sample.kind,
        "names_heldout_combo": bool(sample.concept.names_heldout_combo),
    }
    if prompt == "exemplar":
        entry["exemplar_boxes"] = [_normalised_xywh(box, size) for box in sample.exemplar_boxes]
        entry["exemplar_labels"] = [int(label) for label in sample.exemplar_labels]
    return entry


def _image_annotations(sample: Sample, pair_id: int, first_id: int) -> list[dict]:
    size = sample.image.shape[0]
    return [{
        "id": first_id + offset,
        "image_id": pair_id,
        "bbox": _normalised_xywh(box, size),
        "area": float(mask.sum()) / (size * size),
        "segmentation": encode_rle(mask),
        "category_id": 1,
        "iscrowd": 0,
        "source": "conceptseg-synthetic",
    } for offset, (mask, box) in enumerate(zip(sample.masks, sample.boxes))]


def export_saco_image_benchmark(out_dir: str | Path, num_pairs: int, seed: int, split: str = "test",
                                size: int = 224, prompt: str = "text", **world_options) -> Path:
    """Generate `num_pairs` image-phrase pairs and write `<out_dir>/images/*.png` plus `<out_dir>/gt.json`.

    `prompt="text"` writes `ConceptWorld.sample` pairs; `prompt="exemplar"` writes
    `ConceptWorld.exemplar_sample` pairs with their exemplar box. `world_options` go to `ConceptWorld`
    (e.g. `positive_fraction`). Returns the path of the GT JSON file.
    """
    if prompt not in _PROMPTS:
        raise ValueError(f"prompt must be one of {_PROMPTS}, got {prompt!r}")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    world = ConceptWorld(size=size, split=split, seed=seed, **world_options)
    generate = world.sample if prompt == "text" else world.exemplar_sample
    info = {"description": "conceptseg synthetic concept world", "seed": seed, "split": split, "size": size,
            "prompt": prompt}
    return write_saco_image_benchmark(out_dir, (generate(index) for index in range(num_pairs)), info, prompt)


def write_saco_image_benchmark(out_dir: str | Path, samples: Iterable[Sample], info: dict[str, Any],
                               prompt: str = "text") -> Path:
    """Write concept-world samples as `<out_dir>/images/*.png` plus `<out_dir>/gt.json` (pair ids from 1, in
    order; exemplar boxes too with `prompt="exemplar"`). Returns the path of the GT JSON file."""
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index, sample in enumerate(samples):
        file_name = f"{index:06d}.png"
        Image.fromarray(sample.image).save(image_dir / file_name, compress_level=1)
        images.append(_image_entry(sample, index + 1, file_name, prompt))
        annotations += _image_annotations(sample, index + 1, len(annotations) + 1)
    gt = {"info": {**info, "image_dir": "images"}, "images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "object"}]}
    gt_path = out_dir / "gt.json"
    gt_path.write_text(json.dumps(gt))
    return gt_path


def _write_frames(frames: np.ndarray, folder: Path, image_format: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for t, frame in enumerate(frames):
        name = f"{t:05d}.{image_format}"
        options = {"quality": 95} if image_format == "jpg" else {"compress_level": 1}
        Image.fromarray(frame).save(folder / name, **options)
        names.append(f"{folder.name}/{name}")
    return names


def _masklet(masks: np.ndarray, boxes: np.ndarray) -> dict:
    """Per-frame RLEs, pixel xywh boxes and pixel areas of one track (None where it is absent)."""
    present = [bool(mask.any()) for mask in masks]
    return {
        "segmentations": [encode_rle(mask) if shown else None for mask, shown in zip(masks, present)],
        "bboxes": [_xywh(box) if shown else None for box, shown in zip(boxes, present)],
        "areas": [float(mask.sum()) if shown else None for mask, shown in zip(masks, present)],
    }


def export_veval_benchmark(out_dir: str | Path, num_videos: int, seed: int, split: str = "test",
                           size: int = 224, num_frames: int = 12, image_format: str = "png",
                           **world_options) -> Path:
    """Generate `num_videos` clips (one noun phrase each) and write `<out_dir>/frames/<video>/*` plus
    `<out_dir>/gt.json` in the VEval format. `world_options` go to `ConceptWorld`. Returns the path of
    the GT JSON file."""
    if image_format not in _FRAME_FORMATS:
        raise ValueError(f"image_format must be one of {_FRAME_FORMATS}, got {image_format!r}")
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    world = ConceptWorld(size=size, split=split, seed=seed, **world_options)
    out_dir = Path(out_dir)
    videos, annotations, pairs, category_ids = [], [], [], {}
    for index in range(num_videos):
        clip = world.video(index, num_frames=num_frames)
        video_id, video_name = index + 1, f"video_{index:05d}"
        file_names = _write_frames(clip.frames, out_dir / "frames" / video_name, image_format)
        videos.append({"id": video_id, "video_name": video_name, "file_names": file_names,
                       "height": size, "width": size, "length": num_frames})
        category_id = category_ids.setdefault(clip.phrase, len(category_ids) + 1)
        pairs.append({"id": video_id, "video_id": video_id, "category_id": category_id,
                      "noun_phrase": clip.phrase, "num_masklets": len(clip.target_indices),
                      "kind": clip.kind})
        for masks, boxes in zip(clip.masks, clip.boxes):
            annotations.append({"id": len(annotations) + 1, "video_id": video_id, "category_id": category_id,
                                "noun_phrase": clip.phrase, **_masklet(masks, boxes), "iscrowd": 0,
                                "height": size, "width": size})
    info = {"description": "conceptseg synthetic concept world (video)", "seed": seed, "split": split,
            "size": size, "num_frames": num_frames, "frame_dir": "frames"}
    gt = {"info": info, "videos": videos, "annotations": annotations,
          "categories": [{"id": cid, "name": phrase} for phrase, cid in category_ids.items()],
          "video_np_pairs": pairs}
    gt_path = out_dir / "gt.json"
    gt_path.write_text(json.dumps(gt))
    return gt_path
