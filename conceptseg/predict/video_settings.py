"""VideoSettings: every heuristic of SAM 3's video detect-and-track loop, with the released model's values.

The defaults are those of the official `build_sam3_video_model()` (and of Hugging Face's `Sam3VideoConfig`),
except `max_objects`, which is a CPU budget (see its docstring). The functions that apply these settings are in
`conceptseg.predict.video_heuristics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class VideoSettings:
    """Thresholds and switches of the per-frame loop: detect, propagate, associate, hot-start, re-condition,
    suppress overlaps, encode memories, output.

    Hot-start delay is output LATENCY: every frame's result is held back `hotstart_delay` frames so that
    objects the hot-start rules remove (unmatched or duplicate young objects) never appear. On a live stream
    that is a delay of 15 frames (0.5 s at 30 fps). Setting it to 0 turns the rules off: results come out at
    once, at the cost of more false positives and duplicate objects (Hugging Face's streaming mode behaves so).

    Not offered, because the release disables them: keep-alive (lifetime) suppression of unmatched objects,
    masklet confirmation and detection-guided re-prompting on low box IoU.

    Comparisons follow the reference exactly: ">" or ">=" is stated in each field's docstring.
    """

    # --- detection -------------------------------------------------------------------------------------------
    detection_threshold: float = 0.5
    """A detection is kept if its score (sigmoid(class) * sigmoid(presence)) is > this."""

    nms_iou_threshold: float = 0.1
    """Greedy mask NMS among kept detections: a detection whose mask IoU with a higher-scoring kept one is
    > this is dropped. 0 turns NMS off."""

    # --- association of detections with tracked objects ------------------------------------------------------
    new_object_score: float = 0.7
    """A detection starts a new object if its score is >= this and its mask IoU with every tracked object is
    < `association_iou` (with no tracked object at all, every kept detection starts one, as in the release)."""

    association_iou: float = 0.1
    """A detection matches a tracked object if their mask IoU is >= this (many objects may match one
    detection; matches feed the duplicate rule)."""

    track_unmatched_iou: float = 0.5
    """A non-empty tracked object is unmatched on a frame if no detection has mask IoU >= this with it."""

    # --- hot-start ----------------------------------------------------------------------------------------------
    hotstart_delay: int = 15
    """Frames of output delay, and the age (frames since birth) below which an object can still be removed
    by the two rules below. 0 = rules off, no delay."""

    hotstart_unmatched_frames: int = 8
    """An object younger than the delay is removed once it has been unmatched on >= this many frames."""

    hotstart_duplicate_frames: int = 8
    """An object younger than the delay is removed once it has matched the same detection as an older object
    (earlier first frame) on >= this many frames."""

    # --- periodic re-conditioning -------------------------------------------------------------------------------
    recondition_every: int = 16
    """Re-condition on frames whose index is a multiple of this (frame 0 included). 0 = off."""

    recondition_detection_score: float = 0.8
    """Only a detection with score >= this (and not a new object) can re-condition an object."""

    recondition_iou: float = 0.8
    """... and only if its mask IoU with that object, its best-overlapping one, is >= this."""

    recondition_tracker_logit: float = 0.8
    """... and only if the tracker's object-score LOGIT for the object on this frame is > this."""

    recondition_with_detection_mask: bool = True
    """Re-condition on the detection's mask (official). False: on the tracker's own mask, as Hugging Face's
    default `recondition_on_trk_masks=True` does (strengthens memory instead of correcting drift)."""

    # --- overlaps and memory encoding ---------------------------------------------------------------------------
    overlap_iou_threshold: float = 0.7
    """Among tracked objects whose masks overlap with IoU >= this, the one occluded most recently is blanked
    (logits set to -10) before memory encoding. 0 = off."""

    memory_keep_fraction: float = 0.3
    """Before memory encoding, a mask that would keep < this fraction of its area if every pixel went to the
    highest-logit object is suppressed (logits clamped to <= -10); all others are encoded unchanged."""

    fill_hole_area: int = 16
    """Holes (background components) and sprinkles (foreground components) of area <= this, in pixels of the
    low-resolution mask (288 x 288 for SAM 3), are filled / removed in tracker and new-detection masks.
    Sprinkles must also be <= half the mask's area. 0 = off."""

    # --- outputs and budget -------------------------------------------------------------------------------------
    min_component_area: int = 0
    """Output masks lose their disconnected pieces of area < this (pixels at the output resolution), the
    largest piece always kept; boxes are then taken from the cleaned masks, so a stray fragment far from the
    object cannot inflate its box. 0 = off (the release keeps every piece)."""

    max_objects: int = 64
    """Most objects tracked at once. New detections beyond it are not tracked, the least confident first (as
    the release does at its own cap), and adding an object by hand beyond it is an error. Each object costs a
    memory-attention and mask-decoder pass per frame plus its own memory bank, so on a CPU a vague prompt that
    finds hundreds of objects would make every frame take minutes: 64 is well above a crowded scene yet
    bounds that. The release uses 10000 (no limit)."""

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("detection_threshold", "nms_iou_threshold", "new_object_score", "association_iou",
                     "track_unmatched_iou", "recondition_detection_score", "recondition_iou",
                     "overlap_iou_threshold", "memory_keep_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"VideoSettings.{name} must be in [0, 1], got {value}")
        if not math.isfinite(self.recondition_tracker_logit):
            raise ValueError(f"VideoSettings.recondition_tracker_logit must be finite, got "
                             f"{self.recondition_tracker_logit}")
        for name in ("hotstart_delay", "hotstart_unmatched_frames", "hotstart_duplicate_frames",
                     "recondition_every", "fill_hole_area", "min_component_area"):
            if getattr(self, name) < 0:
                raise ValueError(f"VideoSettings.{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if self.max_objects < 1:
            raise ValueError(f"VideoSettings.max_objects must be >= 1, got {self.max_objects}")
        if self.hotstart_delay > 0:  # with no delay the rules never fire and their thresholds do not matter
            for name in ("hotstart_unmatched_frames", "hotstart_duplicate_frames"):
                value = getattr(self, name)
                if not 1 <= value <= self.hotstart_delay:
                    raise ValueError(
                        f"VideoSettings.{name} must be between 1 and hotstart_delay ({self.hotstart_delay}), got "
                        f"{value}: an object is only young enough to be removed for hotstart_delay frames")

    def _check_types(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            expected = {"int": int, "float": (int, float), "bool": bool}[spec.type]
            if isinstance(value, bool) != (spec.type == "bool") or not isinstance(value, expected):
                raise TypeError(f"VideoSettings.{spec.name} must be {spec.type}, got {value!r}")

    def reconditions_on(self, frame_index: int) -> bool:
        """Whether `frame_index` is a periodic re-conditioning frame (the same rule forward and backward)."""
        return self.recondition_every > 0 and frame_index % self.recondition_every == 0
