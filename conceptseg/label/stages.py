"""The labelling pipeline's stages, the same functions for every engine: read -> model -> encode.

Records are plain dicts that travel from stage to stage (pickled between processes on Ray):
  read:   item -> + `image` (RGB uint8 [H, W, 3]; a video is only opened, to check it and learn its size),
          `height`, `width`, `num_frames`, or `error` (why it cannot be read);
  model:  -> `found`: per concept, the instances (image masks bit-packed: an eighth of a bool array to ship);
          the image is dropped;
  encode: -> `rows`: one output row per (item, concept, instance), masks as COCO RLE.
A video's masks are RLE-encoded by the model stage as its frames stream by: a whole video's dense masks would
not fit in memory. Every failure of one item becomes its `error` and the item moves on; nothing stops the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from conceptseg.io.images import ImageLimits, load_image
from conceptseg.io.rle import encode_mask


@dataclass(frozen=True)
class LabelSettings:
    """What decides the labels (and so belongs to a run's identity), plus where the model runs.

    model: checkpoint (None: the embedded model); threshold: detection score threshold; max_frames: frames
    labelled per video (None: all); quantize: "int8" or None (`load_model`); threads: torch threads of each
    model worker (None: torch's default).
    """

    model: str | None = None
    threshold: float = 0.5
    max_frames: int | None = None
    limits: ImageLimits = field(default_factory=ImageLimits)
    quantize: str | None = None
    device: str = "cpu"
    threads: int | None = None


def read(records: Sequence[dict], limits: ImageLimits) -> list[dict]:
    """Decode each image (a video is opened and closed: frames are read by the model stage, one at a time)."""
    return [_read_one(record, limits) for record in records]


def _read_one(record: dict, limits: ImageLimits) -> dict:
    record = dict(record)
    try:
        if record["kind"] == "image":
            image = load_image(record["path"], limits)
            record.update(image=image, height=image.shape[0], width=image.shape[1], num_frames=None)
        else:
            from conceptseg.io.video import open_frames

            with open_frames(record["path"], limits) as frames:
                height, width = frames.size
                record.update(height=height, width=width, num_frames=frames.num_frames)
    except Exception as error:  # whatever makes one file unreadable is that file's error
        record["error"] = describe_error(error)
    return record


class Labeller:
    """The model stage: one model per worker, loaded once, applied to batches of read records."""

    def __init__(self, settings: LabelSettings):
        import torch

        from conceptseg.checkpoint import load_model
        from conceptseg.predict.image import ImagePredictor

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings = settings
        self.model = load_model(settings.model, device=settings.device, quantize=settings.quantize)
        self.images = ImagePredictor(self.model)
        self._videos = None

    def __call__(self, records: Sequence[dict]) -> list[dict]:
        return [self._label(record) for record in records]

    def _label(self, record: dict) -> dict:
        record = dict(record)
        image = record.pop("image", None)
        if record.get("error"):
            return record
        try:
            if record["kind"] == "image":
                record["found"] = self._label_image(image, record["concepts"])
            else:
                record["found"] = self._label_video(record["path"], record["concepts"])
        except Exception as error:  # one item's failure (a bad frame, a model error) is logged, not fatal
            record["error"] = describe_error(error)
        return record

    def _label_image(self, image: np.ndarray, concepts: Sequence[str]) -> list[dict]:
        self.images.set_image(image)
        found = []
        for concept, results in zip(concepts, self.images.predict_many(list(concepts), threshold=self.settings.threshold)):
            found.append({"concept": concept, "masks": np.packbits(results.masks, axis=-1),
                          "boxes": results.boxes, "scores": results.scores})
        return found

    def _label_video(self, path: str, concepts: Sequence[str]) -> list[dict]:
        """Every concept prompted on frame 0 and propagated forwards; one masklet per tracked object."""
        masklets: dict[int, dict[str, Any]] = {}
        with self._video_predictor().start(path, self.settings.limits) as session:
            for concept in concepts:
                session.add_prompt(0, text=concept)
            for frame in session.propagate(max_frames=self.settings.max_frames):
                for object_id, label, mask, box, score in zip(frame.object_ids, frame.labels, frame.masks,
                                                              frame.boxes, frame.scores):
                    masklet = masklets.setdefault(int(object_id), {"concept": label, "object_id": int(object_id),
                                                                   "frames": [], "frame_masks": [],
                                                                   "frame_boxes": [], "frame_scores": []})
                    masklet["frames"].append(frame.frame_index)
                    masklet["frame_masks"].append(encode_mask(mask)["counts"])
                    masklet["frame_boxes"].append([float(v) for v in box])
                    masklet["frame_scores"].append(float(score))
        return [masklets[object_id] for object_id in sorted(masklets)]

    def _video_predictor(self):
        if self._videos is None:
            from conceptseg.predict.video import VideoPredictor
            from conceptseg.predict.video_settings import VideoSettings

            self._videos = VideoPredictor(self.model, VideoSettings(detection_threshold=self.settings.threshold))
        return self._videos


def encode(records: Sequence[dict], model_name: str, model_version: str) -> list[dict]:
    """Turn each record's instances into output rows (RLE masks); the record keeps what the shard index needs."""
    encoded = []
    for record in records:
        found = record.pop("found", None) or []
        provenance = {"item": record["path"], "item_index": record["index"], "kind": record["kind"],
                      "height": record.get("height"), "width": record.get("width"),
                      "model": model_name, "model_version": model_version}
        rows = []
        for entry in found:
            if record["kind"] == "image":
                rows.extend(_image_rows(entry, provenance))
            else:
                rows.append(_video_row(entry, provenance))
        encoded.append({**record, "rows": rows})
    return encoded


def _image_rows(entry: dict, provenance: dict) -> list[dict]:
    """Rows of one concept's instances; boxes clipped to the image (the decoder's may overhang it)."""
    height, width = provenance["height"], provenance["width"]
    masks = np.unpackbits(entry["masks"], axis=-1, count=width).astype(bool)
    boxes = np.clip(entry["boxes"], 0, [width, height, width, height])
    return [
        {**provenance, "concept": entry["concept"], "instance": k, "score": float(score),
         "box": [float(v) for v in box], "mask": encode_mask(mask)["counts"],
         "frames": None, "frame_masks": None, "frame_boxes": None, "frame_scores": None}
        for k, (mask, box, score) in enumerate(zip(masks, boxes, entry["scores"]))
    ]


def _video_row(entry: dict, provenance: dict) -> dict:
    """A masklet as one row: its frames' RLE masks, boxes and scores; `score` is their mean."""
    return {**provenance, "concept": entry["concept"], "instance": entry["object_id"],
            "score": float(np.mean(entry["frame_scores"])) if entry["frame_scores"] else 0.0,
            "box": None, "mask": None, **{key: entry[key] for key in ("frames", "frame_masks", "frame_boxes",
                                                                      "frame_scores")}}


def describe_error(error: BaseException) -> str:
    """One line for the errors file: the message of a ValueError (our readers' refusals name the problem),
    with the exception's type for anything else."""
    return str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
