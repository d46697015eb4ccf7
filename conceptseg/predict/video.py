"""Video concept segmentation: find every instance of a concept in a video and track each with a stable id.

    predictor = VideoPredictor(load_model("sam3.pt"))
    with predictor.start("clip.mp4") as session:           # a file, a folder of frames, or an iterator of frames
        session.add_prompt(0, text="yellow school bus")    # a concept: searched on every frame
        session.add_prompt(5, points=[[120, 80]], obj_id=7)  # clicks: create or refine one object
        for frame in session.propagate():                  # one FrameResults per frame, streamed
            frame.object_ids, frame.masks, frame.boxes, frame.scores, frame.labels

The session is owned by the caller (SAM 2's habit) and its memory is bounded by design: frames are decoded
one at a time and dropped after use, each object keeps only the memories the tracker can reach, results are
streamed (never accumulated) and the only buffer is the hot-start delay's. Per frame, as in SAM 3 (the
heuristics are `VideoSettings`): detect every concept prompt, propagate every tracked object one frame,
associate detections with objects, start objects for new detections, apply the hot-start rules, periodically
re-condition objects on confident detections, suppress recently occluded overlaps, encode the memories.
Public coordinates are pixels of the original frame.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from conceptseg.io.images import ImageLimits
from conceptseg.io.video import FrameSource, open_frames
from conceptseg.model.sam3 import SAM3
from conceptseg.predict.prompts import TEXT_CACHE_SIZE, TextCache
from conceptseg.predict.video_settings import VideoSettings
from conceptseg.predict.video_state import ConceptPrompt
from conceptseg.predict.video_step import FrameResults, FrameStep

DIRECTIONS = ("forward", "backward", "both")


class VideoPredictor:
    """Promptable concept segmentation and tracking on videos; sessions hold the per-video state."""

    def __init__(self, model: SAM3, settings: VideoSettings | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, text_cache_size: int = TEXT_CACHE_SIZE) -> None:
        if "tracker" in model.missing_components:
            raise ValueError("this checkpoint carries no tracker weights; video tracking needs them")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.settings = settings or VideoSettings()
        self.text_cache = TextCache(text_cache_size)

    def start(self, source: Any, limits: ImageLimits = ImageLimits()) -> VideoSession:
        """A new session on a video file, a folder of frames or an iterator of RGB frames (a live stream)."""
        return VideoSession(self, open_frames(source, limits))


class VideoSession:
    """The state of one video: its prompts and tracked objects. Use as a context manager, or call `close()`."""

    def __init__(self, predictor: VideoPredictor, frames: FrameSource) -> None:
        self.predictor = predictor
        self.frames = frames
        self.step = FrameStep(predictor.model, predictor.settings, predictor.text_cache, frames.num_frames)
        self._closed = False

    def __enter__(self) -> VideoSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def object_ids(self) -> list[int]:
        """Ids of the objects tracked now."""
        return list(self.step.objects)

    @torch.inference_mode()
    def add_prompt(
        self, frame: int, text: str | None = None, boxes: Any = None, box_labels: Any = None, points: Any = None,
        point_labels: Any = None, obj_id: int | None = None,
    ) -> FrameResults | None:
        """Add a prompt on frame `frame` (its index in the video).

        Without `obj_id`, text and/or exemplar boxes (XYXY pixels, labels 1/0) add a concept: it is searched
        on every frame that `propagate` visits, and each object it finds is tagged with it. With `obj_id`,
        points ((x, y) pixels, labels 1/0) and/or one box refine that object on this frame, or create it:
        the frame's result for the object is returned.
        """
        self._check_open()
        image = self._frame(frame)
        if obj_id is None:
            if points is not None:
                raise ValueError("points prompt one object: give an obj_id (text and boxes without one add a concept)")
            self.step.add_concept(frame, image, text, boxes, box_labels)
            return None
        if text is not None:
            raise ValueError("a text prompt is a concept for every object it finds: give it without obj_id")
        return self.step.prompt_object(frame, image, obj_id, points, point_labels, boxes)

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking `obj_id` (from every later frame propagated)."""
        self._check_open()
        self.step.remove_object(obj_id)

    @property
    def prompts(self) -> list[ConceptPrompt]:
        return list(self.step.prompts.values())

    @torch.inference_mode()
    def propagate(self, direction: str = "forward", start: int | None = None,
                  max_frames: int | None = None) -> Iterator[FrameResults]:
        """Yield the results of every frame from `start` (default: the first prompted frame, or 0) in
        `direction`: "forward", "backward" (needs a file or folder, not a stream) or "both" (forward, then
        backward from `start`, with the same ids). At most `max_frames` frames per direction.

        With a hot-start delay (`VideoSettings.hotstart_delay`, 15 by default) each frame's result comes out
        when `hotstart_delay - 1` later frames have been processed (as in SAM 3), so that objects the rules remove never appear: on a live stream the delay is
        latency. The last frames are flushed when the source or `max_frames` ends.
        """
        self._check_open()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if start is None:
            start = self.step.first_prompted_frame()
        if start < 0 or (self.frames.num_frames is not None and start >= self.frames.num_frames):
            raise ValueError(f"start frame {start} is outside the video ({self._length()})")
        if direction in ("forward", "both"):
            yield from self._run(self._forward_frames(start, max_frames), reverse=False)
        if direction in ("backward", "both"):
            first = start - 1 if direction == "both" else start
            if first >= 0:
                self.step.prepare_reverse(start)
                yield from self._run(self._backward_frames(first, max_frames), reverse=True)

    def reset(self) -> None:
        """Forget every prompt and object; the video stays open."""
        self._check_open()
        self.step.reset()

    def close(self) -> None:
        """Release the video and the session's state."""
        if not self._closed:
            self.step.reset()
            self.frames.close()
            self._closed = True

    def _run(self, frames: Iterator[tuple[int, np.ndarray]], reverse: bool) -> Iterator[FrameResults]:
        """Per-frame steps, each result held back for the hot-start delay and filtered of the objects removed
        meanwhile."""
        if not self.step.prompts and not self.step.objects:
            raise ValueError("nothing to track: add a text/exemplar prompt or an object (points/box with obj_id)")
        delay = self.predictor.settings.hotstart_delay
        pending: deque[FrameResults] = deque()
        for index, image in frames:
            results = self.step.run(index, image, reverse)
            results.image = image  # for plot() and overlays; held only while the result is pending
            pending.append(results)
            while pending and len(pending) >= max(delay, 1):  # a frame waits for the next delay - 1 frames
                yield self._released(pending.popleft())
        while pending:
            yield self._released(pending.popleft())

    def _released(self, results: FrameResults) -> FrameResults:
        return results.without(self.step.removed_ids)

    def _forward_frames(self, start: int, max_frames: int | None) -> Iterator[tuple[int, np.ndarray]]:
        for count, (index, image) in enumerate(self.frames.iter_from(start)):
            if max_frames is not None and count >= max_frames:
                return
            yield index, image

    def _backward_frames(self, first: int, max_frames: int | None) -> Iterator[tuple[int, np.ndarray]]:
        if not self.frames.seekable:
            raise ValueError("backward propagation needs a video file or a folder of frames: a stream cannot go "
                             "back (keep the frames you need, or propagate forward only)")
        last = -1 if max_frames is None else max(first - max_frames, -1)
        for index in range(first, last, -1):
            image = self._try_frame(index)
            if image is not None:
                yield index, image

    def _frame(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"frame must be a non-negative frame index, got {index!r}")
        if self.frames.num_frames is not None and index >= self.frames.num_frames:
            raise ValueError(f"frame {index} is outside the video ({self._length()})")
        return self.frames.frame(int(index))

    def _try_frame(self, index: int) -> np.ndarray | None:
        try:
            return self.frames.frame(index)
        except ValueError as error:  # a corrupt frame: skipped, as when propagating forward
            warnings.warn(f"frame {index} skipped: {error}", stacklevel=3)
            return None

    def _length(self) -> str:
        count = self.frames.num_frames
        return f"{count} frames, 0 to {count - 1}" if count is not None else "a stream of unknown length"

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this video session is closed")
