"""Score video predictions against VEval GT: video cgF1 on volume IoU, and phrase HOTA (pHOTA, pDetA, pAssA).

Video cgF1 treats each (video, phrase) pair of `video_np_pairs` as a datapoint and matches masklets by
volume IoU: intersection summed over frames divided by union summed over frames. Phrase HOTA runs HOTA on
every pair that has GT masklets or predictions, each as its own single-class sequence, keeping predictions
with score > 0.5 (strictly, as the official evaluator does) and dropping predicted frames with an empty
mask or box.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from conceptseg.eval.cgf1 import SCORE_THRESHOLD, DatapointCounts, count_true_positives, summarize
from conceptseg.eval.hota import HotaSequence, hota, identity_switches
from conceptseg.eval.image_eval import IOU_TYPES
from conceptseg.io.records import PathLike
from conceptseg.io.saco_video import Masklet, PairKey, VideoPair, read_video_gt, read_video_predictions

_TINY = np.finfo(float).eps  # TrackEval's threshold for an empty box union


def evaluate_videos(gt_file: PathLike, predictions: PathLike | list[dict]) -> dict[str, float]:
    """Video cgF1, IL_MCC, pmF1, ... and pHOTA, pDetA, pAssA; masks under plain keys, boxes under `box_`."""
    pairs = read_video_gt(gt_file)
    predicted = read_video_predictions(predictions, pairs)
    results: dict[str, float] = {}
    for iou_type, prefix in IOU_TYPES:
        rows = [_pair_counts(pair, predicted.get(key, []), iou_type) for key, pair in pairs.items()]
        results.update({prefix + key: value for key, value in summarize(DatapointCounts.from_rows(rows)).items()})
        phrase_hota = hota(_hota_sequences(pairs, predicted, iou_type))
        results.update({f"{prefix}p{name}": value for name, value in phrase_hota.items()})
    return results


def evaluate_identity_switches(gt_file: PathLike, predictions: PathLike | list[dict],
                               threshold: float = 0.5) -> dict[str, float]:
    """Identity switches of mask tracks (`hota.identity_switches`, IoU >= `threshold`) over every pair, on the
    predictions pHOTA keeps. IDSW_per_100_frames divides by the frames of the positive pairs (the only ones
    where a switch can happen)."""
    pairs = read_video_gt(gt_file)
    predicted = read_video_predictions(predictions, pairs)
    switches = sum(identity_switches(sequence, threshold) for sequence in _hota_sequences(pairs, predicted, "mask"))
    frames = sum(pair.num_frames for pair in pairs.values() if pair.masklets)
    return {"IDSW": float(switches), "IDSW_frames": float(frames),
            "IDSW_per_100_frames": 100.0 * switches / frames if frames else 0.0}


def volume_ious(predicted: list[Masklet], targets: list[Masklet], iou_type: str) -> np.ndarray:
    """Spatio-temporal IoU [P, G]: intersections summed over frames / unions summed over frames.

    A frame where only one masklet is present adds its area to the union. Two masklets that are empty in
    every frame have IoU 1, as in the official evaluator.
    """
    if not predicted or not targets:
        return np.zeros((len(predicted), len(targets)))
    if iou_type == "mask":
        intersection = _mask_intersections(predicted, targets)
        predicted_area = np.array([m.mask_areas.sum() for m in predicted])
        target_area = np.array([m.mask_areas.sum() for m in targets])
        union = predicted_area[:, None] + target_area[None, :] - intersection
    else:
        boxes_p = np.stack([m.boxes for m in predicted])[:, None]  # [P, 1, T, 4]
        boxes_g = np.stack([m.boxes for m in targets])[None, :]  # [1, G, T, 4]
        intersection, union = (value.sum(axis=-1) for value in _box_intersection_union(boxes_p, boxes_g))
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 1.0)


def _pair_counts(pair: VideoPair, predicted: list[Masklet], iou_type: str) -> tuple[np.ndarray, int, int]:
    targets = [masklet for masklet in pair.masklets if not masklet.iscrowd]
    # canonical order, so that exact ties between matchings cannot depend on the prediction file's order
    gated = sorted(
        (masklet for masklet in predicted if masklet.score >= SCORE_THRESHOLD),
        key=lambda m: (-m.score, [mask["counts"] if mask else "" for mask in m.masks], m.boxes.tolist()),
    )
    ious = volume_ious(gated, targets, iou_type)
    return count_true_positives(ious), len(gated), len(targets)


def _mask_intersections(predicted: list[Masklet], targets: list[Masklet]) -> np.ndarray:
    """Intersection areas [P, G] summed over frames, computed frame by frame with pycocotools."""
    intersection = np.zeros((len(predicted), len(targets)))
    for t in range(len(predicted[0].masks)):
        p = [i for i, m in enumerate(predicted) if m.masks[t] is not None]
        g = [j for j, m in enumerate(targets) if m.masks[t] is not None]
        if not p or not g:
            continue
        masks_p = [predicted[i].masks[t] for i in p]
        masks_g = [targets[j].masks[t] for j in g]
        iou = np.asarray(mask_utils.iou(masks_p, masks_g, [0] * len(g)))
        area_sum = np.array([predicted[i].mask_areas[t] for i in p])[:, None] + [targets[j].mask_areas[t] for j in g]
        # IoU = I / (a + b - I)  =>  I = IoU (a + b) / (1 + IoU); areas are pixel counts, so round back to one
        intersection[np.ix_(p, g)] += np.rint(iou * area_sum / (1 + iou))
    return intersection


def _box_intersection_union(boxes_a: np.ndarray, boxes_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise intersection and union areas of broadcastable xywh boxes [..., 4]."""
    left = np.maximum(boxes_a[..., 0], boxes_b[..., 0])
    top = np.maximum(boxes_a[..., 1], boxes_b[..., 1])
    right = np.minimum(boxes_a[..., 0] + boxes_a[..., 2], boxes_b[..., 0] + boxes_b[..., 2])
    bottom = np.minimum(boxes_a[..., 1] + boxes_a[..., 3], boxes_b[..., 1] + boxes_b[..., 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = boxes_a[..., 2] * boxes_a[..., 3] + boxes_b[..., 2] * boxes_b[..., 3] - intersection
    return intersection, union


def _hota_sequences(
    pairs: dict[PairKey, VideoPair], predicted: dict[PairKey, list[Masklet]], iou_type: str
) -> list[HotaSequence]:
    sequences = []
    for key, pair in pairs.items():
        kept = [masklet for masklet in predicted.get(key, []) if masklet.score > SCORE_THRESHOLD]
        if pair.masklets or kept:
            sequences.append(_hota_sequence(pair.masklets, kept, pair.num_frames, iou_type))
    return sequences


def _hota_sequence(targets: list[Masklet], predicted: list[Masklet], num_frames: int, iou_type: str) -> HotaSequence:
    """One pair as a HOTA sequence; tracks never present are left out so that track ids stay contiguous."""
    if iou_type == "mask":
        target_present = [np.array([mask is not None for mask in m.masks]) for m in targets]
    else:
        target_present = [m.has_box for m in targets]
    # an empty predicted mask or box would count as a false positive, so the official evaluator drops it
    predicted_present = [m.has_box & (m.mask_areas > 0) & m.boxes.any(axis=1) for m in predicted]
    targets, target_present = _present_tracks(targets, target_present)
    predicted, predicted_present = _present_tracks(predicted, predicted_present)
    gt_ids, pred_ids, similarity = [], [], []
    for t in range(num_frames):
        g = np.flatnonzero(target_present[:, t]) if len(targets) else np.zeros(0, dtype=np.int64)
        p = np.flatnonzero(predicted_present[:, t]) if len(predicted) else np.zeros(0, dtype=np.int64)
        gt_ids.append(g)
        pred_ids.append(p)
        similarity.append(_frame_similarity([targets[j] for j in g], [predicted[i] for i in p], t, iou_type))
    return HotaSequence(gt_ids, pred_ids, similarity, len(targets), len(predicted))


def _present_tracks(tracks: list[Masklet], present: list[np.ndarray]) -> tuple[list[Masklet], np.ndarray]:
    keep = [index for index, frames in enumerate(present) if frames.any()]
    return [tracks[index] for index in keep], np.array([present[index] for index in keep], dtype=bool)


def _frame_similarity(targets: list[Masklet], predicted: list[Masklet], t: int, iou_type: str) -> np.ndarray:
    """IoU [G_t, P_t] between the GT and predicted detections of frame t."""
    if not targets or not predicted:
        return np.zeros((len(targets), len(predicted)))
    if iou_type == "mask":
        ious = mask_utils.iou([m.masks[t] for m in targets], [m.masks[t] for m in predicted], [0] * len(predicted))
        return np.asarray(ious)
    intersection, union = _box_intersection_union(
        np.stack([m.boxes[t] for m in targets])[:, None], np.stack([m.boxes[t] for m in predicted])[None, :]
    )
    return np.where(union > _TINY, intersection / np.maximum(union, _TINY), 0.0)

