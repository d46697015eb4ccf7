"""The per-session state of video concept segmentation: concept prompts, tracked objects and their bookkeeping,
and the per-frame results.

Everything here is bounded by the number of prompts and objects, never by the video's length: an object keeps
its memory bank (bounded by the tracker's window) and hot-start counters that are dropped once the object is
older than the hot-start delay (after that they can no longer remove it). A frame's results are held only for
the hot-start delay.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch

from conceptseg.model.box_ops import masks_to_boxes
from conceptseg.model.detector import GeometryEncoding
from conceptseg.model.tracker.memory_bank import MemoryBank
from conceptseg.model.tracker.tracker import TrackerOutput
from conceptseg.predict import video_heuristics as heuristics
from conceptseg.predict.results import Results

USER_OBJECT_LABEL = "object"  # label of objects created by clicks or boxes with an obj_id


@dataclass
class ConceptPrompt:
    """A concept searched on every frame: a phrase, exemplars encoded on the frame they were drawn on, or both.

    text: the phrase ("visual" for exemplar-only prompts); label: what outputs call the objects it finds.
    """

    prompt_id: int
    text: str
    label: str
    exemplars: GeometryEncoding | None = None
    frame_index: int | None = None  # the frame the exemplars were drawn on


@dataclass
class TrackedObject:
    """One object with a stable id: who found it, its memory and what the hot-start rules need to know.

    prompt_id: the concept prompt that found it, None for an object created by clicks or boxes (those are never
    associated with detections nor removed by hot-start: the user asked for them). score: the detection score
    at birth (1.0 for user objects), reported on every frame as in SAM 3.
    """

    obj_id: int
    prompt_id: int | None
    label: str
    score: float
    first_frame: int
    bank: MemoryBank
    # hot-start bookkeeping, kept only while the object is younger than the delay
    unmatched_frames: int = 0
    duplicate_frames: Counter = field(default_factory=Counter)  # older object id -> frames sharing a detection
    last_occluded: int | None = None  # frame index of the last occlusion, -1 never; None before its first step
    # the tracker's outputs on the frames where the object was prompted or born (low-res masks only): revisiting
    # such a frame reuses them instead of tracking, as SAM 2/3 do; as many as the user's prompts
    prompted_outputs: dict[int, TrackerOutput] = field(default_factory=dict)
    # frames re-conditioned on a detection, oldest first: only the most recent few are kept in memory
    reconditioned_frames: list[int] = field(default_factory=list)

    def keep_prompted(self, frame_index: int, output: TrackerOutput) -> None:
        self.prompted_outputs[frame_index] = dataclasses.replace(output, high_res_mask_logits=output.mask_logits)

    @property
    def from_user(self) -> bool:
        return self.prompt_id is None

    def reaches(self, frame_index: int, reverse: bool) -> bool:
        """Whether the object exists on `frame_index` for a pass in this direction: it has a memory on the side
        already tracked (an object prompted on frame 5 is tracked forward from frame 5, backward up to it)."""
        return any(m.frame_idx >= frame_index if reverse else m.frame_idx <= frame_index
                   for m in self.bank.memories())

    def in_hotstart(self, frame_index: int, delay: int, reverse: bool) -> bool:
        """Whether the object is young enough for the hot-start rules to remove it at `frame_index`."""
        age = self.first_frame - frame_index if reverse else frame_index - self.first_frame
        return not self.from_user and age < delay


@dataclass
class FrameResults(Results):
    """The objects visible on one frame: `Results` (masks [N, H, W] bool, boxes XYXY pixels, scores) plus the
    frame's index, each object's id and the label of the prompt that found it ("object" for clicked ones)."""

    frame_index: int = 0
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    labels: list[str] = field(default_factory=list)
    # the objects before the output's non-overlap, kept while some of one prompt overlap (see `without`); held
    # only as long as the results (the hot-start delay)
    shown: ShownObjects | None = field(default=None, repr=False, compare=False)

    def without(self, removed: set[int]) -> FrameResults:
        """These results without the objects `removed` (hot-start removals decided on later frames). As in the
        release, removed objects take no part in the non-overlap: pixels they won go back to the others."""
        if self.shown is not None and not removed.isdisjoint(self.shown.object_ids):
            results = self.shown.without(removed).results()
            results.image = self.image
            return results
        keep = np.array([int(i) not in removed for i in self.object_ids], dtype=bool)
        if keep.all():
            return self
        return FrameResults(self.masks[keep], self.boxes[keep], self.scores[keep], self.prompt, self.image_size,
                            image=self.image, frame_index=self.frame_index, object_ids=self.object_ids[keep],
                            labels=[label for label, kept in zip(self.labels, keep) if kept])


@dataclass
class ShownObjects:
    """One frame's objects with a non-empty mask, before the output's object-wise non-overlap.

    masks: [N, H, W] bool at the frame's size (low-res logits upsampled, > 0); object_scores: [N] the
    tracker's probabilities (the detection score for an object born on this frame), which decide who keeps a
    pixel several objects cover; scores: [N] reported scores (detection score at birth); groups: the concept
    prompt of each object (None for objects added by hand): objects compete for pixels only within a group.
    """

    frame_index: int
    size: tuple[int, int]
    object_ids: list[int]
    labels: list[str]
    scores: list[float]
    groups: list[Hashable | None]
    masks: torch.Tensor
    object_scores: torch.Tensor
    min_component_area: int = 0

    def without(self, removed: set[int]) -> ShownObjects:
        keep = [i for i, obj_id in enumerate(self.object_ids) if obj_id not in removed]
        return ShownObjects(self.frame_index, self.size, [self.object_ids[i] for i in keep],
                            [self.labels[i] for i in keep], [self.scores[i] for i in keep],
                            [self.groups[i] for i in keep], self.masks[keep], self.object_scores[keep],
                            self.min_component_area)

    def results(self) -> FrameResults:
        """Each pixel to the object of its group the tracker is surest of, small fragments removed (if asked),
        objects left without pixels hidden, boxes from the final masks."""
        masks, overlapping = self.masks.clone(), False
        members: dict[Hashable | None, list[int]] = {}
        for index, group in enumerate(self.groups):
            members.setdefault(group, []).append(index)
        for indices in members.values():
            if len(indices) > 1:
                overlapping |= bool((self.masks[indices].sum(0) > 1).any())
                masks[indices] = heuristics.non_overlapping_by_object_score(masks[indices],
                                                                            self.object_scores[indices])
        masks = heuristics.remove_small_components(masks, self.min_component_area)
        kept = [i for i, shown in enumerate(masks.flatten(1).any(1).tolist()) if shown]
        masks = masks[kept]
        return FrameResults(
            masks=masks.numpy(), boxes=masks_to_boxes(masks).numpy().astype(np.float32),
            scores=np.array([self.scores[i] for i in kept], dtype=np.float32), prompt={}, image_size=self.size,
            frame_index=self.frame_index, object_ids=np.array([self.object_ids[i] for i in kept], dtype=np.int64),
            labels=[self.labels[i] for i in kept], shown=self if overlapping else None,
        )
