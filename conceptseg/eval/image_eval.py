"""Score image predictions against SA-Co image GT: mask and box cgF1, with the Gold oracle over GT sets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from conceptseg.eval.cgf1 import (
    SCORE_THRESHOLD,
    DatapointCounts,
    count_true_positives,
    select_oracle,
    summarize,
)
from conceptseg.io.records import PathLike
from conceptseg.io.saco_image import Detection, ImagePair, Instance, read_image_gt, read_image_predictions

IOU_TYPES = (("mask", ""), ("box", "box_"))  # (what is matched, prefix of its result keys)


def evaluate_images(gt_files: Sequence[PathLike], predictions: PathLike | list[dict]) -> dict[str, float]:
    """cgF1, IL_MCC, pmF1, ... for masks (plain keys) and boxes (`box_` keys).

    With several GT files (Gold: one per annotator) each datapoint is scored against the set that suits the
    predictions best, and only pairs exhaustively annotated in every set are evaluated.
    """
    if not gt_files:
        raise ValueError("give at least one ground-truth file")
    gt_sets = [read_image_gt(path) for path in gt_files]
    pair_ids = evaluated_pair_ids(gt_sets, gt_files)
    detections = read_image_predictions(predictions, gt_sets[0])
    gated = {pair_id: gate_detections(detections.get(pair_id, [])) for pair_id in pair_ids}
    results: dict[str, float] = {}
    for iou_type, prefix in IOU_TYPES:
        per_set = [count_matches(gt, pair_ids, gated, iou_type) for gt in gt_sets]
        results.update({prefix + key: value for key, value in summarize(select_oracle(per_set)).items()})
    return results


def evaluated_pair_ids(gt_sets: list[dict[int, ImagePair]], gt_files: Sequence[PathLike]) -> list[int]:
    """Pairs `is_instance_exhaustive` in the first set and in every other set (the official rule)."""
    first = gt_sets[0]
    pair_ids = [pair_id for pair_id, pair in first.items() if pair.is_instance_exhaustive]
    for gt, path in zip(gt_sets[1:], gt_files[1:]):
        missing = [pair_id for pair_id in pair_ids if pair_id not in gt]
        if missing:
            raise ValueError(
                f"{path}: has no image-NP pair with id {missing[0]} ({len(missing)} missing); all GT files "
                "must describe the same pairs"
            )
        for pair_id in pair_ids:
            if (gt[pair_id].height, gt[pair_id].width) != (first[pair_id].height, first[pair_id].width):
                raise ValueError(f"{path}: image-NP pair {pair_id} has another image size than in {gt_files[0]}")
        pair_ids = [pair_id for pair_id in pair_ids if gt[pair_id].is_instance_exhaustive]
    return pair_ids


def gate_detections(detections: list[Detection]) -> list[Detection]:
    """Keep detections with score >= 0.5, in a canonical order.

    The order only matters when two matchings tie exactly on total IoU; fixing it makes the result
    independent of the order of the prediction file.
    """
    kept = [detection for detection in detections if detection.score >= SCORE_THRESHOLD]
    return sorted(kept, key=lambda d: (-d.score, d.mask["counts"], d.box))


def count_matches(
    gt: dict[int, ImagePair], pair_ids: list[int], gated: dict[int, list[Detection]], iou_type: str
) -> DatapointCounts:
    """Match gated detections to the non-crowd GT instances of every pair."""
    rows = []
    for pair_id in pair_ids:
        instances = [instance for instance in gt[pair_id].instances if not instance.iscrowd]
        detections = gated[pair_id]
        ious = pairwise_ious(detections, instances, iou_type)
        rows.append((count_true_positives(ious), len(detections), len(instances)))
    return DatapointCounts.from_rows(rows)


def pairwise_ious(detections: list[Detection], instances: list[Instance], iou_type: str) -> np.ndarray:
    """IoU matrix [P, G] between detections and GT instances, on masks or on boxes."""
    if not detections or not instances:
        return np.zeros((len(detections), len(instances)))
    if iou_type == "mask":
        predicted, target = [d.mask for d in detections], [i.mask for i in instances]
    else:
        predicted = np.array([d.box for d in detections], dtype=np.float64)
        target = np.array([i.box for i in instances], dtype=np.float64)
    return np.asarray(mask_utils.iou(predicted, target, [0] * len(instances)))
