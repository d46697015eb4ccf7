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

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from conceptseg.data.synthetic import ConceptWorld, Sample
from conceptseg.data.synthetic_video import VideoSample
from conceptseg.io.rle import encode_mask
from conceptseg.io.saco_image import ImagePair, Instance, write_image_gt
from conceptseg.io.saco_video import Masklet, VideoPair, write_video_gt

_PROMPTS = ("text", "exemplar")
_FRAME_FORMATS = ("png", "jpg")


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(value) for value in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _image_pair(sample: Sample, pair_id: int, file_name: str, prompt: str) -> ImagePair:
    height, width = sample.image.shape[:2]
    pair = ImagePair(
        pair_id, file_name, sample.phrase, height, width,
        instances=[Instance(encode_mask(mask), _xywh(box)) for mask, box in zip(sample.masks, sample.boxes)],
        extra={"queried_category": sample.concept.with_number(plural=False).text, "kind": sample.kind,
               "names_heldout_combo": bool(sample.concept.names_heldout_combo)},
    )
    if prompt == "exemplar":
        pair.exemplar_boxes = [_xywh(box) for box in sample.exemplar_boxes]
        pair.exemplar_labels = [bool(label) for label in sample.exemplar_labels]
    return pair


def export_saco_image_benchmark(out_dir: str | Path, num_pairs: int, seed: int, split: str = "test",
                                size: int | tuple[int, int] = 224, prompt: str = "text",
                                **world_options) -> Path:
    """Generate `num_pairs` image-phrase pairs and write `<out_dir>/images/*.png` plus `<out_dir>/gt.json`.

    `prompt="text"` writes `ConceptWorld.sample` pairs; `prompt="exemplar"` writes
    `ConceptWorld.exemplar_sample` pairs with their exemplar box. `size` is a square's side or (height,
    width); each pair records its own image's height and width. `world_options` go to `ConceptWorld`
    (e.g. `positive_fraction`, `variety`). Returns the path of the GT JSON file.
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
    pairs = []
    for index, sample in enumerate(samples):
        file_name = f"{index:06d}.png"
        Image.fromarray(sample.image).save(image_dir / file_name, compress_level=1)
        pairs.append(_image_pair(sample, index + 1, file_name, prompt))
    gt_path = out_dir / "gt.json"
    write_image_gt(gt_path, pairs, info={**info, "image_dir": "images"})
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


def _masklet(masks: np.ndarray, boxes: np.ndarray) -> Masklet:
    """One track's per-frame RLEs and pixel xywh boxes (None / no box where it is absent)."""
    present = np.array([bool(mask.any()) for mask in masks])
    return Masklet([encode_mask(mask) if shown else None for mask, shown in zip(masks, present)],
                   np.array([_xywh(box) if shown else [0.0] * 4 for box, shown in zip(boxes, present)]), present)


def write_clip(clip: VideoSample, video_id: int, category_id: int, folder: Path,
               image_format: str = "png") -> VideoPair:
    """Write a clip's frames into `folder` and return its VEval pair (file names relative to the folder's
    parent, the benchmark's frame directory); the caller writes the GT file (`write_video_gt`)."""
    height, width = clip.frames.shape[1:3]
    return VideoPair(video_id, category_id, clip.phrase, len(clip.frames), height, width,
                     masklets=[_masklet(masks, boxes) for masks, boxes in zip(clip.masks, clip.boxes)],
                     file_names=_write_frames(clip.frames, folder, image_format), extra={"kind": clip.kind})


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
    pairs, category_ids = [], {}
    for index in range(num_videos):
        clip = world.video(index, num_frames=num_frames)
        category_id = category_ids.setdefault(clip.phrase, len(category_ids) + 1)
        pairs.append(write_clip(clip, index + 1, category_id, out_dir / "frames" / f"video_{index:05d}",
                                image_format))
    info = {"description": "conceptseg synthetic concept world (video)", "seed": seed, "split": split,
            "size": size, "num_frames": num_frames, "frame_dir": "frames"}
    gt_path = out_dir / "gt.json"
    write_video_gt(gt_path, pairs, info)
    return gt_path
