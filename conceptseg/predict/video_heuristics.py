"""The pure pieces of SAM 3's video detect-and-track loop: mask overlaps, NMS, hole filling, association,
overlap suppression and non-overlap constraints.

Masks are batch-first, [N, h, w]: float logits (foreground where > 0) or bool. Nothing here keeps state; where a
rule needs history (when an object was last occluded) the caller keeps it and passes it in. Each function
mirrors the official release (`sam3_video_base.py`, `sam3_tracker_utils.py`, `perflib/`); the docstrings state
the comparisons, tie rules and values written, which are what parity depends on.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from conceptseg.predict.video_settings import VideoSettings

NO_OBJECT_LOGIT = -10.0  # mask logit written for "no object here" (sigmoid(-10) = 4.5e-5)
HOLE_FILL_LOGIT = 0.1  # small positive logit given to filled holes
SPRINKLE_LOGIT = -0.1  # small negative logit given to removed sprinkles
NEVER_OCCLUDED = -1  # last-occluded frame of an object never seen empty or suppressed
ALWAYS_OCCLUDED = 100_000  # last-occluded frame for an object removed by hot-start with no history yet

# 8-connectivity within each mask, none across the batch: the official connected-components kernels (cc_torch
# on GPU, skimage.measure.label's default on CPU) are 8-connected.
_EIGHT_CONNECTED_PER_MASK = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_MASK[1] = True


def binarize(masks: torch.Tensor) -> torch.Tensor:
    """Bool masks as they are; logits (or anything numeric) -> foreground where > 0."""
    return masks if masks.dtype == torch.bool else masks > 0


def mask_iou(masks_a: torch.Tensor, masks_b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of binarised masks [N, h, w] and [M, h, w] -> float [N, M]; two empty masks have IoU 0."""
    if masks_a.shape[-2:] != masks_b.shape[-2:]:
        raise ValueError(f"masks must share one size, got {tuple(masks_a.shape)} and {tuple(masks_b.shape)}")
    flat_a = binarize(masks_a).flatten(1).float()  # [N, hw]
    flat_b = binarize(masks_b).flatten(1).float()
    intersection = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - intersection
    return intersection / union.clamp(min=1)


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy mask NMS -> indices of the kept masks, ascending (the input order; the caller drops the rest).

    Visits masks by descending score and drops every later one whose IoU with the visited mask is
    > `iou_threshold` (IoU exactly at the threshold survives). `iou_threshold <= 0` keeps everything (off).
    Equal scores are visited lowest index first: the official CPU path's order among ties depends on numpy's
    argsort, so ties are not a parity target. Pass only detections above the score threshold.
    """
    count = scores.numel()
    if iou_threshold <= 0 or count == 0:
        return torch.arange(count, device=scores.device)
    ious = mask_iou(masks, masks)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    alive = torch.ones(count, dtype=torch.bool)
    for index in order:
        if alive[index]:
            overlapping = (ious[index] > iou_threshold).cpu()
            overlapping[index] = False
            alive &= ~overlapping
    return torch.nonzero(alive).flatten().to(scores.device)


def component_areas(masks: torch.Tensor) -> torch.Tensor:
    """Bool masks [N, h, w] -> int64 [N, h, w]: the area of the 8-connected component holding each True pixel,
    0 on False pixels."""
    labels, count = ndimage.label(masks.cpu().numpy(), structure=_EIGHT_CONNECTED_PER_MASK)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0  # label 0 is the background
    return torch.from_numpy(sizes[labels]).to(masks.device)


def fill_holes_and_remove_sprinkles(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill small holes, then remove small sprinkles, in float mask logits [N, h, w] (returns a new tensor).

    As the release (`fill_holes_in_mask_scores`), on 8-connected components:
    1. holes: every background component (logit <= 0) of area <= `max_area` gets logit +0.1, including
       background pieces that touch the image border;
    2. sprinkles, on the hole-filled mask: every foreground component (logit > 0) of area <=
       min(`max_area`, floor(foreground area / 2)) gets logit -0.1. The half-area bound protects a piece
       holding more than half of the mask, so a one-piece object is never erased; nothing else guards
       against emptying: a mask of equal small pieces (e.g. two of 5 px) loses them all.
    `max_area <= 0` returns the logits unchanged.
    """
    if max_area <= 0 or mask_logits.numel() == 0:
        return mask_logits
    background = mask_logits <= 0
    holes = background & (component_areas(background) <= max_area)
    filled = torch.where(holes, torch.full_like(mask_logits, HOLE_FILL_LOGIT), mask_logits)
    foreground = filled > 0
    sprinkle_limit = (foreground.sum(dim=(1, 2), keepdim=True) // 2).clamp(max=max_area)
    sprinkles = foreground & (component_areas(foreground) <= sprinkle_limit)
    return torch.where(sprinkles, torch.full_like(filled, SPRINKLE_LOGIT), filled)


def remove_small_components(masks: torch.Tensor, min_area: int) -> torch.Tensor:
    """Output clean-up (not in the release): drop the 8-connected pieces of area < `min_area` from bool masks
    [N, H, W], always keeping each mask's largest piece (all of them if several tie). `min_area <= 0`: as is.

    Floating fragments far from an object otherwise stretch the box derived from its mask; take boxes from
    the cleaned masks (`conceptseg.model.box_ops.masks_to_boxes`).
    """
    masks = binarize(masks)
    if min_area <= 0 or masks.numel() == 0:
        return masks
    areas = component_areas(masks)
    largest = areas.flatten(1).amax(dim=1)[:, None, None]
    return masks & ((areas >= min_area) | (areas == largest))


Groups = Sequence[Hashable | None]  # one concept-prompt id per mask; None for objects a user added by hand


@dataclass
class Association:
    """How one frame's detections relate to the tracked objects (indices into the inputs).

    ious: [N, M] mask IoU (0 across concept prompts). new_detections: detections that start objects.
    unmatched_tracks / empty_tracks: non-empty objects no detection matches at `track_unmatched_iou`, and
    objects whose mask is empty (neither matched nor unmatched: hot-start does not count them).
    detection_to_tracks: per detection, the objects it matches at `association_iou` (several objects may match
    one detection: the duplicate rule counts those pairs). best_detection_per_track: [M], each object's
    highest-IoU detection among those it matches at `association_iou` (lowest index on ties), -1 if none; not
    used by the release's rules. confident_detection_per_track: object -> the detection that may re-condition
    it.
    """

    ious: torch.Tensor
    new_detections: list[int]
    unmatched_tracks: list[int]
    empty_tracks: list[int]
    detection_to_tracks: list[list[int]]
    best_detection_per_track: torch.Tensor
    confident_detection_per_track: dict[int, int]

    def unmatched_track_ids(self, track_ids: Sequence[int]) -> list[int]:
        """`unmatched_tracks` as object ids (`track_ids[i]` is track i's id)."""
        return [track_ids[i] for i in self.unmatched_tracks]

    def tracks_per_detection(self, track_ids: Sequence[int]) -> list[list[int]]:
        """`detection_to_tracks` as object ids."""
        return [[track_ids[i] for i in tracks] for tracks in self.detection_to_tracks]


def associate(
    detection_masks: torch.Tensor, detection_scores: torch.Tensor, track_masks: torch.Tensor,
    settings: VideoSettings, detection_groups: Groups | None = None, track_groups: Groups | None = None,
) -> Association:
    """Match detections [N, h, w] (scores [N]) with tracked objects' masks [M, h, w], as the release does.

    - new: score >= `new_object_score` and IoU < `association_iou` with every object. With no object at all,
      every detection is new whatever its score (the release's early exit; they already passed
      `detection_threshold`).
    - unmatched: non-empty and no detection with IoU >= `track_unmatched_iou` (any detection, not one-to-one).
    - re-conditioning: a detection that is not new, has score >= `recondition_detection_score` and IoU >=
      `recondition_iou` with its best-overlapping object (lowest index on ties) is recorded for that object; a
      later detection replaces an earlier one for the same object. The caller still checks the frame
      (`settings.reconditions_on`) and the tracker logit (> `recondition_tracker_logit`).
    Groups (the concept prompt of each detection and object) keep detections of one concept from matching
    objects of another; an object in group None (added by hand) matches no detection.
    """
    num_detections, num_tracks = detection_masks.shape[0], track_masks.shape[0]
    device = detection_scores.device
    ious = mask_iou(detection_masks, track_masks).to(device)
    if detection_groups is not None and track_groups is not None:
        same_group = torch.tensor([[d == t and t is not None for t in track_groups] for d in detection_groups],
                                  dtype=torch.bool, device=device).reshape(num_detections, num_tracks)
        ious = torch.where(same_group, ious, torch.zeros_like(ious))
    track_nonempty = binarize(track_masks).flatten(1).any(dim=1).to(device)
    track_matched = (ious >= settings.track_unmatched_iou).any(dim=0)
    matches = ious >= settings.association_iou  # [N, M]

    if num_tracks == 0:  # the release's early exit: no score test
        is_new = torch.ones(num_detections, dtype=torch.bool, device=device)
    else:
        is_new = (detection_scores >= settings.new_object_score) & ~matches.any(dim=1)

    confident: dict[int, int] = {}
    best_detection = torch.full((num_tracks,), -1, dtype=torch.long, device=device)
    if num_tracks and num_detections:
        best_iou, best_track = ious.max(dim=1)  # first maximum on ties
        can_recondition = ~is_new & (detection_scores >= settings.recondition_detection_score)
        can_recondition &= best_iou >= settings.recondition_iou
        for detection in torch.nonzero(can_recondition).flatten().tolist():  # ascending: later ones win
            confident[int(best_track[detection])] = detection
        best_value, best_index = torch.where(matches, ious, torch.full_like(ious, -1.0)).max(dim=0)
        best_detection = torch.where(best_value >= 0, best_index, best_detection)
    return Association(
        ious=ious,
        new_detections=torch.nonzero(is_new).flatten().tolist(),
        unmatched_tracks=torch.nonzero(track_nonempty & ~track_matched).flatten().tolist(),
        empty_tracks=torch.nonzero(~track_nonempty).flatten().tolist(),
        detection_to_tracks=[torch.nonzero(row).flatten().tolist() for row in matches],
        best_detection_per_track=best_detection,
        confident_detection_per_track=confident,
    )


def _group_members(groups: Groups | None, count: int) -> list[list[int]]:
    """Indices of each group, in order of first appearance (one group of all when `groups` is None)."""
    if groups is None:
        return [list(range(count))]
    members: dict[Hashable | None, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    return list(members.values())


def suppress_overlaps_by_recent_occlusion(
    track_masks: torch.Tensor, last_occluded: torch.Tensor, iou_threshold: float, reverse: bool = False,
    groups: Groups | None = None,
) -> torch.Tensor:
    """Which tracked objects [M, h, w] to blank because they overlap another one -> bool [M].

    For each pair with mask IoU >= `iou_threshold` (0 = off), the object occluded more recently loses,
    computed on all pairs at once from `last_occluded` ([M] frame indices, `NEVER_OCCLUDED` = -1). Forward, i
    loses to j iff last_occluded[i] > last_occluded[j] > -1: an overlap with a never-occluded object
    suppresses nobody, and equal values suppress nobody. Backward (`reverse`) "more recently" means a smaller
    index: i loses iff last_occluded[i] < last_occluded[j] and last_occluded[j] > -1 (so a never-occluded i
    does lose). With `groups`, only objects of the same group (concept prompt) are compared.

    The caller keeps `last_occluded` per object: -1 at birth; `ALWAYS_OCCLUDED` for an object hot-start
    removes on this frame before it has any entry; after this call, `update_last_occluded`. The release sets
    a suppressed object's logits to `NO_OBJECT_LOGIT` (assigned, not clamped) before encoding its memory.
    """
    count = track_masks.shape[0]
    suppress = torch.zeros(count, dtype=torch.bool, device=track_masks.device)
    if iou_threshold <= 0 or count <= 1:
        return suppress
    last = last_occluded.to(track_masks.device)
    for members in _group_members(groups, count):
        if len(members) <= 1:
            continue
        overlapping = torch.triu(mask_iou(track_masks[members], track_masks[members]) >= iou_threshold, 1)
        last_i, last_j = last[members][:, None], last[members][None, :]
        i_more_recent = last_i < last_j if reverse else last_i > last_j
        j_more_recent = last_j < last_i if reverse else last_j > last_i
        i_loses = overlapping & i_more_recent & (last_j > NEVER_OCCLUDED)
        j_loses = overlapping & j_more_recent & (last_i > NEVER_OCCLUDED)
        suppress[members] = i_loses.any(dim=1) | j_loses.any(dim=0)
    return suppress


def update_last_occluded(
    track_masks: torch.Tensor, last_occluded: torch.Tensor, suppressed: torch.Tensor, frame_index: int
) -> torch.Tensor:
    """New last-occluded frames [M]: `frame_index` for objects whose mask is empty or that were suppressed on
    this frame, the old value otherwise (masks as they were before suppression blanked them)."""
    occluded = ~binarize(track_masks).flatten(1).any(dim=1) | suppressed
    return torch.where(occluded, torch.full_like(last_occluded, frame_index), last_occluded)


def non_overlapping(mask_scores: torch.Tensor, clamp_value: float = NO_OBJECT_LOGIT) -> torch.Tensor:
    """Pixel-wise non-overlap of mask logits or probabilities [N, h, w] (new tensor): each pixel stays with the
    object of highest value there (lowest index on ties); every other object's value there is clamped to
    <= `clamp_value`. A single mask is returned unchanged."""
    if mask_scores.shape[0] <= 1:
        return mask_scores
    owner = mask_scores.argmax(dim=0, keepdim=True)  # [1, h, w]; argmax returns the first maximum
    objects = torch.arange(mask_scores.shape[0], device=mask_scores.device)[:, None, None]
    return torch.where(owner == objects, mask_scores, mask_scores.clamp(max=clamp_value))


def non_overlapping_by_object_score(masks: torch.Tensor, object_scores: torch.Tensor) -> torch.Tensor:
    """Object-wise non-overlap for outputs: bool masks [N, H, W] with object scores [N] (probabilities, the
    tracker's; the detection score for an object born on this frame) -> bool [N, H, W] where each pixel
    covered by several objects goes to the one with the highest score (lowest index on ties). As in the
    release, an object scored exactly 0 loses its whole mask. The release derives output boxes BEFORE this
    step, from the overlapping masks."""
    masks = binarize(masks)
    if masks.shape[0] <= 1:
        return masks
    flat_scores = torch.where(masks, object_scores.to(masks.device)[:, None, None].float(), 0.0)
    return non_overlapping(flat_scores, clamp_value=0.0) > 0


def shrinks_under_non_overlap(
    mask_logits: torch.Tensor, keep_fraction: float, groups: Groups | None = None
) -> torch.Tensor:
    """Memory-encoding test -> bool [N]: which masks [N, h, w] would keep < `keep_fraction` of their area under
    `non_overlapping` (computed within each group when `groups` is given).

    An empty mask counts as shrunk (0 / max(0, 1)), which changes nothing since it stays empty. A lone mask
    (in its group) is never flagged.
    """
    shrunk = torch.zeros(mask_logits.shape[0], dtype=torch.bool, device=mask_logits.device)
    for members in _group_members(groups, mask_logits.shape[0]):
        if len(members) <= 1:
            continue
        logits = mask_logits[members]
        area_before = (logits > 0).sum(dim=(1, 2)).clamp(min=1)
        area_after = (non_overlapping(logits) > 0).sum(dim=(1, 2))
        shrunk[members] = area_after / area_before < keep_fraction
    return shrunk


def suppress_shrunk_masks(mask_logits: torch.Tensor, keep_fraction: float, groups: Groups | None = None
                          ) -> torch.Tensor:
    """The release's step before memory encoding: masks flagged by `shrinks_under_non_overlap` get their logits
    clamped to <= `NO_OBJECT_LOGIT`; every other mask is returned unchanged, overlaps included (new tensor)."""
    shrunk = shrinks_under_non_overlap(mask_logits, keep_fraction, groups)[:, None, None]
    return torch.where(shrunk, mask_logits.clamp(max=NO_OBJECT_LOGIT), mask_logits)
