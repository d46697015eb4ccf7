"""Score recalibration folded into the weights (Platt scaling without new parameters), and the mask threshold.

A detection is kept when sigmoid(query logit) x sigmoid(presence logit) >= 0.5, and cgF1 gates at that same
0.5. A small model trained from scratch with focal losses ranks well but stays under-confident: both factors sit
near 0.5, so their product rarely passes. `calibrate` grid-searches a scale of the query logits and a shift of
the presence logit for the best cgF1 on a given benchmark (use training-distribution data, never the test set),
then the sigmoid level at which masks are binarised (the embedded model's masks come out slightly too small at
0.5). `recalibrated` folds the first two into the scorer's query projection and the presence head's last bias,
and stores the third as `model.mask_threshold`, the predictors' default. The model runs once: between grid
points only the post-processing changes, so each point re-scores the stored outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from conceptseg.eval import evaluate
from conceptseg.eval.dataset import SacoDataset
from conceptseg.eval.model_eval import batches_to_coco, detect_batches, evaluating
from conceptseg.model.sam3 import SAM3

QUERY_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
PRESENCE_SHIFTS = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
MASK_THRESHOLDS = (0.5, 0.4, 0.3, 0.2)
SCORING_KEYS = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The best grid point of `calibrate` and its cgF1."""

    query_scale: float
    presence_shift: float
    mask_threshold: float
    cgf1: float


def recalibrated(
    model: SAM3, query_scale: float, presence_shift: float, mask_threshold: float | None = None
) -> SAM3:
    """A copy of `model` whose query logits are multiplied by `query_scale` (before the scorer's clamp), whose
    presence logits are shifted by `presence_shift` and, if given, whose `mask_threshold` is
    `mask_threshold`. A positive scale keeps the two-stage ranking."""
    if query_scale <= 0:
        raise ValueError(f"query_scale must be positive, got {query_scale}")
    if mask_threshold is not None and not 0 < mask_threshold < 1:
        raise ValueError(f"mask_threshold must lie in (0, 1), got {mask_threshold}")
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.detector.scorer.hs_proj.weight.mul_(query_scale)
        model.detector.scorer.hs_proj.bias.mul_(query_scale)
        model.detector.decoder.presence_token_head.layers[-1].bias.add_(presence_shift)
    if mask_threshold is not None:
        model.mask_threshold = mask_threshold
    return model


def rescored(
    outputs: dict[str, torch.Tensor], query_scale: float, presence_shift: float, clamp: float
) -> dict[str, torch.Tensor]:
    """`outputs` as `recalibrated` would have produced them; exact for query_scale >= 1 (the clamp commutes)."""
    return outputs | {
        "pred_logits": (outputs["pred_logits"] * query_scale).clamp(-clamp, clamp),
        "presence_logits": outputs["presence_logits"] + presence_shift,
    }


def calibrate(
    model: SAM3,
    gt_path: str | Path,
    image_dir: str | Path,
    query_scales: Sequence[float] = QUERY_SCALES,
    presence_shifts: Sequence[float] = PRESENCE_SHIFTS,
    mask_thresholds: Sequence[float] = MASK_THRESHOLDS,
    report: Callable[[float, float, float, dict[str, float]], None] | None = None,
) -> Calibration:
    """The grid point with the best cgF1 on the benchmark; `report(scale, shift, mask threshold, metrics)` hears
    of each one evaluated.

    Scales (>= 1) x shifts are searched at the model's mask threshold, then the mask thresholds at the best of
    them: the scores decide which instances are kept, the mask threshold how well their masks fit, so searching
    one after the other (not jointly) keeps the grid small. Ties go to the earlier point in grid order (the
    model's own mask threshold first). Every pair's mask logits are held in memory between grid points: meant
    for a few hundred pairs of a small model.
    """
    if min(query_scales) < 1:
        raise ValueError(f"query scales must be >= 1, got {min(query_scales)}")
    dataset = SacoDataset(gt_path, image_dir, "text")
    with evaluating(model):
        batches = [(indices, {key: outputs[key] for key in SCORING_KEYS})
                   for indices, outputs in detect_batches(model, dataset)]
    clamp = model.config.scorer_clamp

    def score(scale: float, shift: float, mask_threshold: float) -> float:
        points = [(indices, rescored(outputs, scale, shift, clamp)) for indices, outputs in batches]
        metrics = evaluate(gt_path, batches_to_coco(points, dataset, mask_threshold))
        if report is not None:
            report(scale, shift, mask_threshold, metrics)
        return metrics["cgF1"]

    own_threshold = model.mask_threshold
    by_scores = {(scale, shift): score(scale, shift, own_threshold)
                 for scale, shift in itertools.product(query_scales, presence_shifts)}
    scale, shift = max(by_scores, key=by_scores.get)  # the first of equals, in grid order
    by_threshold = {own_threshold: by_scores[scale, shift]}
    by_threshold |= {threshold: score(scale, shift, threshold) for threshold in mask_thresholds
                     if threshold not in by_threshold}
    threshold = max(by_threshold, key=by_threshold.get)
    return Calibration(scale, shift, threshold, by_threshold[threshold])
