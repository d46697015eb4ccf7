"""A no-memory video baseline: the concept detector alone on every frame, its masks linked into tracks.

    predictor = NoMemoryPredictor(load_model())
    with predictor.start("clip.mp4") as session:              # same sources and calls as `VideoPredictor`
        session.add_prompt(0, text="red circle")
        for frame in session.propagate():                    # one `FrameResults` per frame
            frame.object_ids, frame.masks, frame.boxes, frame.scores

Each frame's detections (`ImagePredictor.predict`, the detector's joint score threshold) are linked to the
tracks of the frames before by Hungarian matching on mask IoU (`MaskLinker`): a pair links if its IoU is at
least `link_iou`; an unlinked detection starts a new id; a track unseen for more than `max_missing` frames
ends, so an object that comes back after a longer absence gets a new id. No tracker, no memory: what the
memory loop adds over this is the measure of its worth (benchmarks/embedded_video_quality.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from conceptseg.io.images import ImageLimits
from conceptseg.io.video import FrameSource, open_frames
from conceptseg.model.sam3 import SAM3
from conceptseg.predict.image import ImagePredictor
from conceptseg.predict.video_state import FrameResults


@dataclass(frozen=True)
class BaselineSettings:
    """detection_threshold: keep detections whose joint score is >= this (SAM 3's 0.5, as the video loop);
    link_iou: a detection continues a track if their masks' IoU is >= this; max_missing: a track missing from
    more than this many consecutive frames ends (0: it must be seen on every frame)."""

    detection_threshold: float = 0.5
    link_iou: float = 0.3
    max_missing: int = 2

    def __post_init__(self) -> None:
        for name in ("detection_threshold", "link_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"BaselineSettings.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_missing < 0:
            raise ValueError(f"BaselineSettings.max_missing must be >= 0, got {self.max_missing}")


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [A, B] between boolean masks [A, H, W] and [B, H, W] (0 where both are empty)."""
    flat_a, flat_b = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    intersection = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)


class MaskLinker:
    """Gives each frame's masks track ids, linking them to the last mask of each live track."""

    def __init__(self, settings: BaselineSettings, ids: Iterator[int] | None = None) -> None:
        self.settings = settings
        self.ids = ids if ids is not None else itertools.count(1)  # shared by linkers whose ids must differ
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}  # live track id -> (last mask, frame last seen)

    def link(self, frame_index: int, masks: np.ndarray) -> np.ndarray:
        """Ids [N] (int64) of the masks [N, H, W] of frame `frame_index`; frames must come in order."""
        self._end_missing(frame_index - 1)  # also covers frames skipped since the last call
        ids = np.zeros(len(masks), dtype=np.int64)
        linked = np.zeros(len(masks), dtype=bool)
        track_ids = list(self.tracks)
        if len(masks) and track_ids:
            ious = mask_ious(masks, np.stack([self.tracks[i][0] for i in track_ids]))
            for row, col in zip(*linear_sum_assignment(ious, maximize=True)):  # the best total IoU, not greedy
                if ious[row, col] >= self.settings.link_iou:
                    ids[row], linked[row] = track_ids[col], True
        for row in np.flatnonzero(~linked):
            ids[row] = next(self.ids)
        for obj_id, mask in zip(ids.tolist(), masks):
            self.tracks[obj_id] = (mask, frame_index)
        self._end_missing(frame_index)
        return ids

    def _end_missing(self, frame_index: int) -> None:
        """End the tracks missing from more than `max_missing` frames up to `frame_index`."""
        for obj_id, (_, seen) in list(self.tracks.items()):
            if frame_index - seen > self.settings.max_missing:
                del self.tracks[obj_id]


class NoMemoryPredictor:
    """The detector on every frame with IoU linking; the same session interface as `VideoPredictor`."""

    def __init__(self, model: SAM3, settings: BaselineSettings | None = None) -> None:
        self.images = ImagePredictor(model)
        self.settings = settings or BaselineSettings()

    def start(self, source: Any, limits: ImageLimits = ImageLimits()) -> NoMemorySession:
        """A session on a video file, a folder of frames, a list of frames or an iterator of frames."""
        return NoMemorySession(self, open_frames(source, limits))


class NoMemorySession:
    """Text prompts of one video; `propagate` yields one `FrameResults` per frame (forward only)."""

    def __init__(self, predictor: NoMemoryPredictor, frames: FrameSource) -> None:
        self.predictor = predictor
        self.frames = frames
        self.texts: list[str] = []

    def __enter__(self) -> NoMemorySession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_prompt(self, frame: int, text: str | None = None, **unsupported: Any) -> None:
        """A phrase searched on every frame (the frame index is ignored: detection has no start)."""
        if unsupported or not isinstance(text, str) or not text.strip():
            raise ValueError("the no-memory baseline takes text prompts only")
        self.texts.append(text)

    def propagate(self, direction: str = "forward", start: int | None = None,
                  max_frames: int | None = None) -> Iterator[FrameResults]:
        """Detect every phrase on every frame from `start` (default 0) and link each phrase's masks into
        tracks. `direction` is there for `VideoSession.propagate`'s signature: only "forward" is offered."""
        if not self.texts:
            raise ValueError("nothing to track: add a text prompt")
        if direction != "forward":
            raise ValueError("the no-memory baseline propagates forward only")
        new_ids = itertools.count(1)  # one id sequence for every phrase, as in the memory loop
        linkers = [MaskLinker(self.predictor.settings, new_ids) for _ in self.texts]
        images = self.predictor.images
        for count, (index, image) in enumerate(self.frames.iter_from(start or 0)):
            if max_frames is not None and count >= max_frames:
                return
            images.set_image(image)
            found = [images.predict(text=text, threshold=self.predictor.settings.detection_threshold)
                     for text in self.texts]
            ids = [linker.link(index, result.masks) for linker, result in zip(linkers, found)]
            yield FrameResults(
                np.concatenate([r.masks for r in found]), np.concatenate([r.boxes for r in found]),
                np.concatenate([r.scores for r in found]), {"text": list(self.texts)}, image.shape[:2],
                image=image, frame_index=index, object_ids=np.concatenate(ids),
                labels=[text for text, r in zip(self.texts, found) for _ in range(len(r))],
            )

    def close(self) -> None:
        self.frames.close()
