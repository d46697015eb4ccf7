"""Request bodies (validated by pydantic, so a malformed one is one clear 422) and response encoding: masks
as compressed COCO RLE, boxes XYXY in pixels of the original image."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import HTTPException, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from conceptseg.io.rle import encode_mask
from conceptseg.predict.results import Results
from conceptseg.predict.video_state import FrameResults
from conceptseg.serve.limits import ServeLimits

Box = tuple[float, float, float, float]
Point = tuple[float, float]
Label = Literal[0, 1]


class Prompts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="a noun phrase, e.g. 'yellow school bus'")
    boxes: list[Box] | None = Field(None, description="exemplar boxes, XYXY pixels")
    box_labels: list[Label] | None = Field(None, description="1 positive, 0 negative (default all 1)")
    points: list[Point] | None = Field(None, description="(x, y) pixels")
    point_labels: list[Label] | None = Field(None, description="1 positive, 0 negative (default all 1)")

    def check(self, limits: ServeLimits) -> None:
        count = len(self.boxes or ()) + len(self.points or ())
        if count > limits.max_prompts:
            raise HTTPException(422, f"{count} boxes and points in one request, over the limit of "
                                     f"{limits.max_prompts} (max_prompts)")
        if self.text is not None and len(self.text) > limits.max_text_length:
            raise HTTPException(422, f"the phrase has {len(self.text)} characters, over the limit of "
                                     f"{limits.max_text_length} (max_text_length)")


class SegmentRequest(Prompts):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="lowest kept score")
    format: Literal["instances", "coco"] = Field("instances", description="'coco': a COCO results dataset")


class InstanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[Point] | None = None
    point_labels: list[Label] | None = None
    box: Box | None = None
    multimask: bool = True

    def check(self, limits: ServeLimits) -> None:
        if len(self.points or ()) > limits.max_prompts:
            raise HTTPException(422, f"{len(self.points)} points, over the limit of {limits.max_prompts} "
                                     "(max_prompts)")


class VideoPromptRequest(Prompts):
    frame_index: int = Field(0, ge=0)
    obj_id: int | None = Field(None, ge=0, description="refine or create this object (clicks, one box)")


def encoded(mask: np.ndarray, box: np.ndarray, score: float) -> dict[str, Any]:
    """One instance as JSON: score, box (XYXY pixels) and RLE mask."""
    return {"score": round(float(score), 4), "box": [round(float(v), 2) for v in box], "mask": encode_mask(mask)}


def instances(results: Results) -> list[dict[str, Any]]:
    """One JSON object per instance, highest score first."""
    return [{"index": index, "area": int(mask.sum()), **encoded(mask, box, score)}
            for index, (mask, box, score) in enumerate(zip(results.masks, results.boxes, results.scores))]


def coco_dataset(results: Results, file_name: str, phrase: str) -> dict[str, Any]:
    """A COCO results dataset of one image and one category (the phrase)."""
    height, width = results.image_size
    return {"images": [{"id": 1, "file_name": file_name, "height": height, "width": width}],
            "categories": [{"id": 1, "name": phrase}],
            "annotations": [record | {"id": n + 1} for n, record in enumerate(results.to_coco(image_id=1))]}


def frame_objects(frame: FrameResults) -> dict[str, Any]:
    """One frame of a video: its objects with ids, prompt labels, scores, boxes and RLE masks."""
    objects = [{"id": int(obj_id), "label": label, **encoded(mask, box, score)}
               for obj_id, label, mask, box, score in zip(frame.object_ids, frame.labels, frame.masks,
                                                          frame.boxes, frame.scores)]
    return {"frame_index": int(frame.frame_index), "objects": objects}


async def read_upload(file: UploadFile, limits: ServeLimits) -> bytes:
    """The bytes of an uploaded file; over `max_upload_bytes` is 413 (whole bodies over it are refused before
    they are read, by the app's middleware)."""
    data = await file.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(413, f"the upload is over the limit of {limits.max_upload_bytes:,} bytes "
                                 "(max_upload_bytes)")
    return data
