"""One frame of SAM 3's detect-and-track loop (its results are `video_state.FrameResults`).

`FrameStep.run` does, for one frame (SAM 3's order; thresholds from `VideoSettings`):
  1. encode the frame once (the detector's neck and the tracker's neck share the ViT pass; the tracker neck
     runs after detection, and only when an object is tracked or detected);
  2. detect every concept prompt (joint score threshold, mask NMS);
  3. propagate every tracked object one frame with its memory (holes and sprinkles filled);
  4. associate detections with objects by mask IoU, within each prompt;
  5. give new ids to confident detections that match no object (every detection of a prompt that tracks
     nothing), capped at `max_objects`;
  6. hot-start: remove young objects that stay unmatched, or duplicate an older object, for too long;
  7. every n-th frame, re-condition objects on a confident detection that agrees with them;
  8. suppress the most recently occluded of two strongly overlapping objects, then encode every object's
     memory (a mask that the pixel-wise non-overlap would shrink below a fraction is encoded as absent);
  9. start the new objects from their detection masks (logits upsampled to the input size, > 0; objects born
     together share no pixel in memory);
 10. output every visible object's mask at the frame's size (each pixel to the object of its prompt the tracker
     is surest of, small disconnected fragments removed, boxes from the final masks); objects that hot-start
     removes on a later frame are hidden from the frames still held back, and give their pixels back.

Each concept prompt behaves as it would alone: detections, association, hot-start, overlap rules and the
outputs' non-overlap all stay within a prompt; only object ids (distinct) and `max_objects` are shared.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from conceptseg.model.detector import ImageEncoding
from conceptseg.model.sam3 import SAM3
from conceptseg.model.tokenizer import EXEMPLAR_TEXT
from conceptseg.predict import video_heuristics as heuristics
from conceptseg.predict.prompts import TextCache, as_boxes, as_points, detector_geometry, upsample_logits
from conceptseg.predict.transforms import preprocess
from conceptseg.predict.video_settings import VideoSettings
from conceptseg.predict.video_state import (
    USER_OBJECT_LABEL,
    ConceptPrompt,
    FrameResults,
    ShownObjects,
    TrackedObject,
)

PRESENT_LOGIT = 10.0  # memory encoding: the object-score logit is +-10 from whether the mask is empty


@dataclass
class Detections:
    """Detections of every concept prompt on one frame: low-res mask logits [D, m, m], scores [D], prompt ids."""

    masks: torch.Tensor
    scores: torch.Tensor
    prompt_ids: list[int]


class FrameStep:
    """The loop's state (prompts, tracked objects, hot-start bookkeeping) and its per-frame step."""

    def __init__(self, model: SAM3, settings: VideoSettings, text_cache: TextCache,
                 num_frames: int | None = None) -> None:
        self.model = model
        self.settings = settings
        self.text_cache = text_cache
        self.num_frames = num_frames  # the video's length when known: the tracker's pointer window depends on it
        self.reset()

    def reset(self) -> None:
        self.prompts: dict[int, ConceptPrompt] = {}
        self.objects: dict[int, TrackedObject] = {}
        self.removed_ids: set[int] = set()  # removed by hot-start or by the user: hidden from every output
        self.prompted_frames: list[int] = []
        self._next_obj_id = 1
        self._warned_cap = False

    def first_prompted_frame(self) -> int:
        return min(self.prompted_frames, default=0)

    # prompts ------------------------------------------------------------------------------------------------

    def add_concept(self, frame_index: int, image: np.ndarray | None, text: str | None, boxes, box_labels) -> None:
        """A concept prompt: a phrase, exemplar boxes drawn on frame `frame_index`, or both."""
        if text is None and boxes is None:
            raise ValueError("a concept prompt needs a text or exemplar boxes")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"text prompts must be non-empty strings, got {text!r}")
        exemplars = None
        if boxes is not None:
            geometry = detector_geometry(boxes, box_labels, None, None, image.shape[:2])
            exemplars = self.model.encode_exemplars(self.model.detector_features(self._trunk(image)), **geometry)
        prompt_id = len(self.prompts) + 1
        label = text if text is not None else f"exemplar {prompt_id}"
        self.prompts[prompt_id] = ConceptPrompt(prompt_id, text or EXEMPLAR_TEXT, label, exemplars, frame_index)
        self.prompted_frames.append(frame_index)

    def prompt_object(self, frame_index: int, image: np.ndarray, obj_id: int, points, point_labels,
                      boxes) -> FrameResults:
        """Clicks and/or one box on one object: refine it on this frame, or create it."""
        if not isinstance(obj_id, (int, np.integer)) or obj_id < 1:
            raise ValueError(f"obj_id must be a positive int, got {obj_id!r}")
        if points is None and boxes is None:
            raise ValueError("an object prompt needs points or a box")
        height, width = image.shape[:2]
        scale = self.model.config.vit.image_size / torch.tensor([width, height], dtype=torch.float32)
        coords, labels = as_points(points, point_labels, (height, width))
        box = None
        if boxes is not None:
            xyxy = as_boxes(boxes, (height, width))
            if len(xyxy) != 1:
                raise ValueError(f"one box per object prompt, got {len(xyxy)}")
            box = (xyxy * scale.repeat(2)).to(self.model.device, self.model.dtype)
        model_points = None if coords is None else (coords * scale)[None].to(self.model.device, self.model.dtype)
        model_labels = None if labels is None else labels[None].to(self.model.device)
        obj_id = int(obj_id)
        if obj_id not in self.objects:
            if obj_id in self.removed_ids:
                raise ValueError(f"object {obj_id} was removed; use a new obj_id")
            self._check_capacity(1)
            self.objects[obj_id] = TrackedObject(obj_id, None, USER_OBJECT_LABEL, 1.0, frame_index, self._new_bank())
            self._next_obj_id = max(self._next_obj_id, obj_id + 1)
        track = self.objects[obj_id]
        levels = self.model.tracker_features(self._trunk(image))
        output = self.model.tracker.track_step(levels, track.bank, frame_index, points=model_points,
                                               point_labels=model_labels, box=box)
        self.model.tracker.remember(levels, track.bank, frame_index, output)
        track.keep_prompted(frame_index, output)
        self.prompted_frames.append(frame_index)
        return self._results(frame_index, (height, width), [track], output.mask_logits[:, 0],
                             output.object_score_logits.reshape(1).sigmoid())

    def remove_object(self, obj_id: int) -> None:
        if obj_id not in self.objects:
            known = ", ".join(map(str, self.objects)) or "none"
            raise ValueError(f"unknown obj_id {obj_id!r} (tracked now: {known})")
        del self.objects[obj_id]
        self.removed_ids.add(obj_id)

    def prepare_reverse(self, start: int) -> None:
        """Before going backward from `start` after a forward pass: keep each object's conditioning memories and
        drop the recent ones, which lie after `start` and the backward pass must not read as its past."""
        for track in self.objects.values():
            track.bank.drop_recent()

    # the per-frame step -------------------------------------------------------------------------------------

    def run(self, frame_index: int, image: np.ndarray, reverse: bool) -> FrameResults:
        """Detect, track and update every object on one frame (see the module docstring)."""
        settings, tracker = self.settings, self.model.tracker
        trunk = self._trunk(image)
        # the detector's maps are freed before the tracker neck runs, so that their peaks do not add up
        detections = self._detect(self.model.detector_features(trunk))
        tracks = [t for t in self.objects.values() if t.reaches(frame_index, reverse)]
        levels = self.model.tracker_features(trunk) if tracks or len(detections.scores) else []
        outputs = [t.prompted_outputs.get(frame_index) or tracker.track_step(levels, t.bank, frame_index, reverse=reverse)
                   for t in tracks]
        track_masks = self._stack([o.mask_logits[0, 0] for o in outputs])
        track_masks = heuristics.fill_holes_and_remove_sprinkles(track_masks, settings.fill_hole_area)
        track_scores = torch.stack([o.object_score_logits.reshape(()).float() for o in outputs]) if outputs \
            else torch.zeros(0)
        groups = [t.prompt_id for t in tracks]
        association = heuristics.associate(detections.masks, detections.scores, track_masks, settings,
                                           detection_groups=detections.prompt_ids, track_groups=groups)
        new = self._capped(self._new_detections(association, detections, tracks), detections.scores)
        removed = self._hotstart(frame_index, reverse, tracks, association)
        reconditioned = self._reconditioned(frame_index, association, track_scores)
        track_masks = self._suppress_overlaps(frame_index, reverse, tracks, track_masks, removed)
        self._remember(levels, frame_index, tracks, outputs, track_masks, reconditioned, detections)
        shown_masks = track_masks.clone()
        for index, det in reconditioned.items():
            shown_masks[index] = detections.masks[det]
        born, born_masks = self._start_objects(frame_index, levels, detections, new)
        for obj_id in removed:
            self.objects.pop(obj_id, None)
            self.removed_ids.add(obj_id)
        kept = [i for i, t in enumerate(tracks) if t.obj_id not in removed]
        scores = torch.cat([track_scores[kept].sigmoid(), detections.scores[new]])
        return self._results(frame_index, image.shape[:2], [tracks[i] for i in kept] + born,
                             torch.cat([shown_masks[kept], born_masks]), scores)

    def _trunk(self, image: np.ndarray) -> torch.Tensor:
        """The frame's one ViT pass, which the detector's and the tracker's necks share."""
        pixels = preprocess(image, self.model.config.vit.image_size).to(self.model.device, self.model.dtype)
        return self.model.encode_trunk(pixels)

    def _detect(self, encoding: ImageEncoding) -> Detections:
        settings, masks, scores, prompt_ids = self.settings, [], [], []
        for prompt in self.prompts.values():
            text = self.text_cache.encode(self.model, [prompt.text])
            out = self.model.detect(encoding, text, exemplars=prompt.exemplars)
            probs = (out["pred_logits"][0].sigmoid() * out["presence_logits"][0].sigmoid()).float()
            keep = torch.nonzero(probs > settings.detection_threshold).flatten()
            if settings.nms_iou_threshold > 0 and len(keep) > 1:
                keep = keep[heuristics.mask_nms(out["pred_masks"][0, keep], probs[keep], settings.nms_iou_threshold)]
            masks.append(out["pred_masks"][0, keep].float())
            scores.append(probs[keep])
            prompt_ids += [prompt.prompt_id] * len(keep)
        side = self.model.config.mask_size
        if not masks:
            return Detections(torch.zeros(0, side, side), torch.zeros(0), [])
        return Detections(torch.cat(masks), torch.cat(scores), prompt_ids)

    @staticmethod
    def _new_detections(association: heuristics.Association, detections: Detections,
                        tracks: list[TrackedObject]) -> list[int]:
        """Detections that start objects. The release takes every detection when it tracks nothing (whatever its
        score); with several prompts that rule applies per prompt, so that each prompt behaves as it would alone."""
        tracked = {t.prompt_id for t in tracks}
        untracked = {d for d, prompt_id in enumerate(detections.prompt_ids) if prompt_id not in tracked}
        return sorted(set(association.new_detections) | untracked)

    def _capped(self, new_detections: list[int], scores: torch.Tensor) -> list[int]:
        """New detections within the object cap (the most confident first), with one warning when it bites."""
        room = self.settings.max_objects - len(self.objects)
        if len(new_detections) <= room:
            return new_detections
        if not self._warned_cap:
            warnings.warn(f"more than max_objects={self.settings.max_objects} objects: the least confident new "
                          "detections are not tracked (raise VideoSettings.max_objects)", stacklevel=4)
            self._warned_cap = True
        ranked = sorted(new_detections, key=lambda d: -float(scores[d]))
        return sorted(ranked[: max(room, 0)])

    def _check_capacity(self, extra: int) -> None:
        if len(self.objects) + extra > self.settings.max_objects:
            raise ValueError(f"at most {self.settings.max_objects} objects are tracked at once "
                             "(VideoSettings.max_objects); remove one first or raise the cap")

    def _stack(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if not tensors:
            side = self.model.config.mask_size
            return torch.zeros(0, side, side)
        return torch.stack([t.float() for t in tensors])

    def _hotstart(self, frame_index: int, reverse: bool, tracks: list[TrackedObject],
                  association: heuristics.Association) -> set[int]:
        """Hot-start rules: the ids of young objects to remove on this frame (see `VideoSettings`)."""
        settings, removed = self.settings, set()
        by_id = {t.obj_id: t for t in tracks}
        for obj_id in association.unmatched_track_ids([t.obj_id for t in tracks]):
            by_id[obj_id].unmatched_frames += 1
        for matched in association.tracks_per_detection([t.obj_id for t in tracks]):
            if len(matched) < 2:
                continue
            older = (max if reverse else min)(matched, key=lambda i: by_id[i].first_frame)
            for obj_id in matched:
                if obj_id != older:
                    by_id[obj_id].duplicate_frames[older] += 1
        for track in tracks:
            if not track.in_hotstart(frame_index, settings.hotstart_delay, reverse):
                track.duplicate_frames.clear()  # too old to be removed: the counters are no longer needed
                continue
            if track.unmatched_frames >= settings.hotstart_unmatched_frames or any(
                    count >= settings.hotstart_duplicate_frames for count in track.duplicate_frames.values()):
                removed.add(track.obj_id)
        return removed

    def _reconditioned(self, frame_index: int, association: heuristics.Association,
                       track_scores: torch.Tensor) -> dict[int, int]:
        """{track index: detection index} of the objects whose memory this frame re-conditions on a confident
        detection that agrees with them (and that the tracker is sure of too)."""
        if not self.settings.reconditions_on(frame_index):
            return {}
        return {index: det for index, det in association.confident_detection_per_track.items()
                if track_scores[index] > self.settings.recondition_tracker_logit}

    def _suppress_overlaps(self, frame_index: int, reverse: bool, tracks: list[TrackedObject], masks: torch.Tensor,
                           removed: set[int]) -> torch.Tensor:
        """Tracker masks with the most recently occluded of two strongly overlapping objects (same prompt) set to
        NO_OBJECT_LOGIT; records each object's last occlusion."""
        if not tracks:
            return masks
        # an object without history that hot-start removes now counts as occluded forever, so that it loses
        last = torch.tensor([heuristics.ALWAYS_OCCLUDED if t.last_occluded is None and t.obj_id in removed
                             else heuristics.NEVER_OCCLUDED if t.last_occluded is None else t.last_occluded
                             for t in tracks])
        suppressed = heuristics.suppress_overlaps_by_recent_occlusion(
            masks, last, self.settings.overlap_iou_threshold, reverse, groups=[t.prompt_id for t in tracks])
        last = heuristics.update_last_occluded(masks, last, suppressed, frame_index)
        for track, value in zip(tracks, last.tolist()):
            track.last_occluded = value
        masks = masks.clone()
        masks[suppressed] = heuristics.NO_OBJECT_LOGIT
        return masks

    def _remember(self, levels: list[torch.Tensor], frame_index: int, tracks: list[TrackedObject], outputs: list,
                  masks: torch.Tensor, reconditioned: dict[int, int], detections: Detections) -> None:
        """Encode every tracked object's memory of this frame: masks that the pixel-wise non-overlap (within a
        prompt) would shrink too much are encoded as absent (tested, as in the release, on the logits upsampled to
        the memory encoder's resolution); re-conditioned objects remember the detection (`_recondition`)."""
        if not tracks:
            return
        side = 16 * self.model.config.vit.grid_size  # the memory encoder's mask resolution (1152 at full size)
        masks = F.interpolate(masks[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
        memory_masks = heuristics.suppress_shrunk_masks(masks, self.settings.memory_keep_fraction,
                                                        groups=[t.prompt_id for t in tracks])
        for index, (track, output) in enumerate(zip(tracks, outputs)):
            if index in reconditioned and self.settings.recondition_with_detection_mask:
                self._recondition(levels, frame_index, track, detections.masks[reconditioned[index]])
                continue
            mask = memory_masks[index][None, None]
            conditioning = index in reconditioned or frame_index in track.prompted_outputs
            present = PRESENT_LOGIT if (mask > 0).any() else -PRESENT_LOGIT
            self.model.tracker.remember(levels, track.bank, frame_index, output, mask_logits=mask,
                                        object_score_logits=torch.tensor([[present]]), conditioning=conditioning,
                                        binarize_mask=conditioning)

    def _recondition(self, levels: list[torch.Tensor], frame_index: int, track: TrackedObject,
                     detection: torch.Tensor) -> None:
        """Re-add a confident detection's mask as a conditioning prompt of the object (SAM 3's periodic
        re-conditioning: upsampled, thresholded at 0, used as the output of the frame; memory and pointer come
        from it). Only the `max_cond_frames_in_attn` most recent re-conditioned frames stay in memory: tracking
        reads the closest conditioning frames, so older ones could never be read again."""
        side = self.model.config.vit.image_size
        mask = (upsample_logits(detection[None], (side, side)) > 0).float()[None]
        output = self.model.tracker.track_step(levels, track.bank, frame_index, mask=mask)
        self.model.tracker.remember(levels, track.bank, frame_index, output)
        track.reconditioned_frames.append(frame_index)
        while len(track.reconditioned_frames) > self.model.config.tracker.max_cond_frames_in_attn:
            oldest = track.reconditioned_frames.pop(0)
            if oldest not in track.prompted_outputs:
                track.bank.remove_frame(oldest)

    def _start_objects(self, frame_index: int, levels: list[torch.Tensor], detections: Detections,
                       new: list[int]) -> tuple[list[TrackedObject], torch.Tensor]:
        """New objects from detections `new`, added as the release adds them: each detection's logits, upsampled
        to the model input size and thresholded at 0, are the object's mask prompt (used as its output); in
        memory, objects born on one frame from one prompt share no pixel (the first born keeps an overlap). Their
        outputs on this frame are the detection logits, holes and sprinkles filled."""
        born, outputs = [], []
        side = self.model.config.vit.image_size
        for det, mask in zip(new, upsample_logits(detections.masks[new], (side, side)) > 0):
            prompt = self.prompts[detections.prompt_ids[det]]
            track = TrackedObject(self._next_obj_id, prompt.prompt_id, prompt.label, float(detections.scores[det]),
                                  frame_index, self._new_bank())
            self._next_obj_id += 1
            output = self.model.tracker.track_step(levels, track.bank, frame_index, mask=mask[None, None].float())
            track.keep_prompted(frame_index, output)
            self.objects[track.obj_id] = track
            born.append(track)
            outputs.append(output)
        memory_masks = torch.cat([o.high_res_mask_logits[:, 0] for o in outputs]) if outputs else None
        for members in _by_prompt(born):
            memory_masks[members] = heuristics.non_overlapping(memory_masks[members])
        for index, (track, output) in enumerate(zip(born, outputs)):
            self.model.tracker.remember(levels, track.bank, frame_index, output,
                                        mask_logits=memory_masks[index][None, None])
        masks = heuristics.fill_holes_and_remove_sprinkles(detections.masks[new], self.settings.fill_hole_area)
        return born, masks

    def _new_bank(self):
        return self.model.tracker.new_memory_bank(num_frames=self.num_frames)

    def _results(self, frame_index: int, size: tuple[int, int], tracks: list[TrackedObject],
                 low_res: torch.Tensor, object_scores: torch.Tensor) -> FrameResults:
        """The visible objects at the frame's size: logits upsampled and thresholded at 0, each pixel given to
        the object of its prompt the tracker is surest of, small fragments removed, boxes from the final masks."""
        masks = upsample_logits(low_res, size) > 0
        nonempty = masks.flatten(1).any(1)
        shown = [t for t, keep in zip(tracks, nonempty.tolist()) if keep]
        return ShownObjects(frame_index, size, [t.obj_id for t in shown], [t.label for t in shown],
                            [t.score for t in shown], [t.prompt_id for t in shown], masks[nonempty].cpu(),
                            object_scores.float()[nonempty].cpu(), self.settings.min_component_area).results()


def _by_prompt(tracks: list[TrackedObject]) -> list[list[int]]:
    """Indices of `tracks` grouped by concept prompt (objects added by hand form one group), in order."""
    groups: dict[int | None, list[int]] = {}
    for index, track in enumerate(tracks):
        groups.setdefault(track.prompt_id, []).append(index)
    return list(groups.values())
